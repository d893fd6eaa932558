"""A Kafka broker and a Chroma server of one run's own, on free ports, gone when the run ends.

What the integration tests, the benchmarks and ``ragstream eval`` run against, so that nothing
they do meets a running ``make up`` stack or another run.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deploy._process import DeployError, free_port
from deploy.chroma import ChromaServer
from deploy.kafka import KafkaBroker
from schemas import Settings

__all__ = ["PrivateStack", "private_stack"]


@dataclass(frozen=True)
class PrivateStack:
    """The running services, their folder, and settings that point at them."""

    #: Each service's data and logs are in a folder of its own below this one.
    state: Path
    #: The base settings with ``bootstrap_servers``, ``chroma_port`` and ``state_dir`` set to this
    #: stack's (``bootstrap_servers`` only with a broker, ``chroma_port`` only with Chroma).
    settings: Settings
    _broker: KafkaBroker | None
    _chroma: ChromaServer | None

    @property
    def broker(self) -> KafkaBroker:
        if self._broker is None:
            raise DeployError("this private stack was started without a Kafka broker")
        return self._broker

    @property
    def chroma(self) -> ChromaServer:
        if self._chroma is None:
            raise DeployError("this private stack was started without a Chroma server")
        return self._chroma


@contextlib.contextmanager
def private_stack(
    name: str = "stack",
    base: Settings | None = None,
    *,
    state_dir: Path | None = None,
    kafka: bool = True,
    chroma: bool = True,
) -> Iterator[PrivateStack]:
    """Start a broker (`kafka_version()`) and a Chroma server on free ports, and stop them (Chroma
    first) when the block ends.

    Their data lives under ``state_dir``, or under a temporary folder named after ``name`` that
    is removed afterwards. A service that fails to start is stopped too (it may have started and
    never answered), and the error (a `DeployError` or an `OSError`) is raised.
    """
    settings = base if base is not None else Settings()
    with contextlib.ExitStack() as on_exit:
        if state_dir is None:
            state_dir = Path(on_exit.enter_context(tempfile.TemporaryDirectory(prefix=f"ragstream-{name}-")))
        update: dict[str, object] = {"state_dir": state_dir}
        broker = server = None
        if kafka:
            broker = KafkaBroker(state_dir, free_port())
            on_exit.callback(broker.stop)
            broker.start()
            update["bootstrap_servers"] = broker.bootstrap_servers
        if chroma:
            server = ChromaServer(state_dir, free_port())
            on_exit.callback(server.stop)
            server.start()
            update["chroma_port"] = server.port
        yield PrivateStack(state_dir, settings.model_copy(update=update), broker, server)
