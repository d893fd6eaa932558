"""A private stack answers where its settings point, and leaves nothing behind."""

from __future__ import annotations

import httpx
import pytest

from deploy import DeployError
from deploy.private_stack import private_stack
from schemas import Settings

pytestmark = pytest.mark.integration


def test_a_private_stack_answers_at_its_settings_and_is_gone_after_the_block() -> None:
    base = Settings(collection="private-stack")
    with private_stack("test", base, kafka=False) as stack:
        heartbeat = f"http://127.0.0.1:{stack.settings.chroma_port}/api/v2/heartbeat"
        assert httpx.get(heartbeat, timeout=10, trust_env=False).status_code == 200
        assert stack.settings.state_dir == stack.state and stack.state.is_dir()
        assert stack.settings.collection == "private-stack"
        with pytest.raises(DeployError, match="without a Kafka broker"):
            stack.broker  # noqa: B018

    assert stack.chroma.pid is None
    assert not stack.state.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(heartbeat, timeout=10, trust_env=False)
