"""An event the stage fails to handle must stop the worker, not be acknowledged and skipped."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from schemas import Settings
from streams.changes import stage as stage_module
from streams.changes.stage import FAILED_EXIT_CODE, ChangesStage


class WorkerExited(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class OneEventStream:
    """What the agent iterates: faust acks an event once the agent asks for the next one."""

    def __init__(self) -> None:
        self.message = SimpleNamespace(topic="docs.events", partition=2, offset=41, key=b"k", value=b"{}")

    async def events(self):
        yield SimpleNamespace(message=self.message)


async def test_a_failure_in_handling_exits_the_worker_before_the_event_is_released(tmp_path, monkeypatch):
    stage = ChangesStage(Settings(state_dir=tmp_path, bootstrap_servers="127.0.0.1:1"))

    async def broker_away(message):
        raise ConnectionError("the broker went away")

    def exit_worker(code: int) -> None:
        raise WorkerExited(code)

    monkeypatch.setattr(stage, "handle", broker_away)
    monkeypatch.setattr(stage_module.os, "_exit", exit_worker)
    agent = stage._process(OneEventStream())
    with pytest.raises(WorkerExited) as exited:
        await anext(agent)
    # The agent never moved past the event, so faust never acked it: a restart replays it.
    assert exited.value.code == FAILED_EXIT_CODE
