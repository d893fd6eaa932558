"""Session fixtures for the real services: a Kafka broker and a Chroma server on free ports."""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from second_model import save_second_model
from unavailable import skip_or_fail

from deploy import ChromaServer, DeployError, KafkaBroker
from deploy.kafka import VERSION_VARIABLE, kafka_version
from deploy.private_stack import PrivateStack, private_stack

_EXIT_STATUS = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        help="run the bigger versions of the fault, churn and stage scenarios (minutes each)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "long_only: runs only under --long (deselected otherwise)")
    # Read by the test modules when they are imported (tests/scale.py), which is after this.
    if config.getoption("--long"):
        os.environ["RAGSTREAM_LONG_TESTS"] = "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without --long, the tests that exist only as long variants are deselected: a run says how
    many it left out, and none of them shows up as a skip."""
    if config.getoption("--long"):
        return
    left_out = [item for item in items if item.get_closest_marker("long_only")]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not item.get_closest_marker("long_only")]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without the interpreter's finalization once every result is reported.

    The session has loaded torch, Chroma's Rust bindings, grpc and onnxruntime, whose native
    threads outlive the tests; tearing the interpreter down under them has crashed the process
    (SIGSEGV) after a fully green run, turning `make test` red. Every service a test started is
    already stopped by its fixture, so nothing is lost by exiting here with pytest's own status.
    """
    if _EXIT_STATUS not in config.stash:
        return  # pytest stopped before the session ran (a usage error): let it exit its own way
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()  # stops the local Ray a test left running, which its atexit hook would do
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(config.stash[_EXIT_STATUS])


def pytest_report_header() -> str:
    try:
        version = kafka_version()
    except DeployError as exc:
        return f"kafka broker: {exc}"
    return f"kafka broker: {version} (set {VERSION_VARIABLE} for another)"


@contextlib.contextmanager
def _private_stack_or_skip(what: str, state: Path, **services: bool) -> Iterator[PrivateStack]:
    """`private_stack` of the services asked for; if it cannot start, skip the test, or fail it
    under CI=true."""
    with contextlib.ExitStack() as on_exit:
        try:
            stack = on_exit.enter_context(private_stack(state_dir=state, **services))
        except (DeployError, OSError) as exc:
            skip_or_fail(f"{what} could not be started: {exc}")
        yield stack


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A single-node KRaft Kafka broker of `kafka_version()` (Kafka 4 unless RAGSTREAM_KAFKA_VERSION
    names another; `pytest --long` also runs a few modules on 3.9: tests/deploy/test_kafka_versions.py);
    its address is `kafka_broker.bootstrap_servers`."""
    with _private_stack_or_skip("Kafka broker", tmp_path_factory.mktemp("kafka"), chroma=False) as stack:
        yield stack.broker


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """A Chroma server; its address is `chroma_server.url`."""
    with _private_stack_or_skip("Chroma server", tmp_path_factory.mktemp("chroma"), kafka=False) as stack:
        yield stack.chroma


@pytest.fixture(scope="session")
def second_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The path of a second real embedding model, of another dimension (tests/second_model.py)."""
    return save_second_model(tmp_path_factory.mktemp("second-model"))


@pytest.fixture(scope="module")
def module_namespace(request: pytest.FixtureRequest) -> str:
    """A name of the test module's own: its name and a random suffix, e.g. ``bad-input-3f9a1c``.

    The prefix of the module's topics, consumer groups and collection (``Settings.namespaced``):
    modules share the session's broker and Chroma, whose start is slow, and never each other's data.
    """
    stem = request.module.__name__.rpartition(".")[2].removeprefix("test_").replace("_", "-")
    return f"{stem}-{uuid.uuid4().hex[:6]}"
