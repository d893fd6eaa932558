"""``ragstream reindex`` against a real broker and Chroma: what it refuses, what it writes to the
control topic, and what it says. The consumers and the API replicas are not running: the records
they would write (a replica's heartbeat) are written here, as they would write them."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from aiokafka import AIOKafkaProducer
from ragstream_cli import REPO
from typer.testing import CliRunner, Result

from ragstream.cli import app
from schemas import Settings
from schemas.generations import (
    ACTIVE_KEY,
    ActiveGeneration,
    Generation,
    IndexShape,
    ReplicaReport,
    generation_key,
    replica_key,
)
from streams.control import publish_control
from streams.topic_records import read_topic_records
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration

_numbers = itertools.count()


@pytest.fixture
def settings(kafka_broker, chroma_server, module_namespace) -> Settings:
    """Topics, groups and a collection of this test's own (each test its own control topic)."""
    return Settings(
        bootstrap_servers=kafka_broker.bootstrap_servers, chroma_port=chroma_server.port, partitions=2
    ).namespaced(f"{module_namespace}-{next(_numbers)}")


def ragstream(settings: Settings, *args: str) -> Result:
    env = settings.to_env() | {"COLUMNS": "300"}  # one table row per line
    return CliRunner().invoke(app, list(args), env=env)


def control_records(settings: Settings) -> list[tuple[bytes | None, bytes | None]]:
    records = asyncio.run(read_topic_records(settings.kafka, settings.control_topic))
    return [(r.key, r.value) for r in records]


def latest(settings: Settings, key: bytes) -> bytes:
    """The control topic's last value under ``key`` (a tombstone fails the test)."""
    value = dict(control_records(settings)).get(key)
    assert value is not None, f"no record under {key!r}"
    return value


def write(settings: Settings, *records: tuple[bytes, bytes | None]) -> None:
    async def run() -> None:
        await ensure_topics(settings)
        await publish_control(settings, list(records))

    asyncio.run(run())


def building(settings: Settings, chunk_size: int = 500) -> Generation:
    """Generation 0 serving, generation 1 (chunk_size) being built: what `reindex` writes."""
    base = Generation.base(settings)
    new = Generation(1, IndexShape.of(settings.model_copy(update={"chunk_size": chunk_size})))
    write(settings, (generation_key(0), base.to_json()), (generation_key(1), new.to_json()))
    return new


def publish_change(settings: Settings) -> None:
    """A record in the changes topic, for the generations' groups to read."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(settings.changes_topic, b"{}", key=b"doc-1")
        finally:
            await producer.stop()

    asyncio.run(send())


def heartbeat(settings: Settings, replica: str, serving: int, ready: tuple[int, ...]) -> None:
    report = ReplicaReport(replica, serving, ready, time.time())
    write(settings, (replica_key(replica), report.to_json()))


def test_a_reindex_writes_generation_0_and_the_new_one_and_reports_it_caught_up(settings):
    result = ragstream(settings, "reindex", "--chunk-size", "500", "--chunk-overlap", "50", "--no-switch")

    assert result.exit_code == 0, result.output
    assert "384-dimensional" in result.output  # the model was loaded in the command's own process
    assert "generation 1 written" in result.output and "has caught up" in result.output
    assert "not switched (--no-switch)" in result.output
    assert Generation.from_json(latest(settings, generation_key(0))).shape == IndexShape.of(settings)
    new = Generation.from_json(latest(settings, generation_key(1)))
    assert (new.number, new.shape.chunk_size, new.shape.chunk_overlap) == (1, 500, 50)
    assert new.shape.model == settings.model
    assert ACTIVE_KEY not in dict(control_records(settings))  # not switched

    status = ragstream(settings, "reindex", "status")
    assert status.exit_code == 0, status.output
    rows = {line.split("│")[1].strip(): line for line in status.output.splitlines() if line.count("│") > 5}
    assert "active" in rows["0"] and " 1000 " in rows["0"]
    assert "building" in rows["1"] and " 500 " in rows["1"] and "building since" in rows["1"]
    assert "no API replica has sent a heartbeat" in status.output


def test_ctrl_c_while_the_build_runs_leaves_the_generation_building_and_says_so(settings):
    write(settings)  # the topics, so that a change can wait in docs.changes
    publish_change(settings)  # no consumer runs: the new generation stays one change behind
    env = {**os.environ, **settings.to_env(), "COLUMNS": "300"}
    command = [sys.executable, "-m", "ragstream", "reindex", "--chunk-size", "500"]
    with subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as cli:
        deadline = time.monotonic() + 120
        while generation_key(1) not in dict(control_records(settings)) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # into the progress display
        cli.send_signal(signal.SIGINT)
        output, _ = cli.communicate(timeout=60)

    said = " ".join(output.decode().split())
    assert cli.returncode == 130, said
    assert "0/1 changes" in said  # the progress shown: the one change not read yet
    assert "generation 1 is still being built by the consumers" in said
    assert "ragstream reindex --abort" in said
    assert dict(control_records(settings)).get(generation_key(1)) is not None  # still there


def test_a_second_reindex_while_one_builds_is_refused_and_writes_nothing(settings):
    building(settings)
    before = control_records(settings)

    result = ragstream(settings, "reindex", "--chunk-size", "300")

    assert result.exit_code == 2, result.output
    assert "generation 1 is being built since" in result.output
    assert "ragstream reindex --abort" in result.output
    assert control_records(settings) == before


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "already serves this shape"),
        (("--chunk-size", "1000"), "already serves this shape"),
        (("--chunk-size", "40"), "invalid chunking (size 40"),
        (("--chunk-size", "500", "--chunk-overlap", "500"), "invalid chunking (size 500, overlap 500)"),
        (("--model", "/nonexistent"), "model '/nonexistent' cannot be loaded"),
    ],
    ids=["no-change", "same-chunk-size", "chunks-too-small", "overlap-not-below-size", "model-missing"],
)
def test_a_request_that_cannot_be_built_is_refused_and_writes_nothing(settings, args, says):
    write(settings, (generation_key(0), Generation.base(settings).to_json()))
    before = control_records(settings)

    result = ragstream(settings, "reindex", *args)

    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split())
    assert control_records(settings) == before


def test_switch_waits_then_says_that_the_group_is_behind_and_which_replica_is_not_ready(settings):
    building(settings)
    heartbeat(settings, "replica-a", serving=0, ready=(0, 1))
    heartbeat(settings, "replica-b", serving=0, ready=(0,))

    publish_change(settings)
    before = control_records(settings)

    result = ragstream(settings, "reindex", "switch", "--timeout", "2")

    said = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "not switched to generation 1 after 2 s" in said
    assert "its consumer group is 1 changes behind" in said
    assert "replica(s) replica-b do not report generation 1 ready" in said
    assert control_records(settings) == before


def test_switch_writes_the_active_record_once_caught_up_and_every_replica_holds_it_ready(settings):
    building(settings)
    heartbeat(settings, "replica-a", serving=0, ready=(0, 1))
    started = time.time()

    result = ragstream(settings, "reindex", "switch", "--timeout", "2")

    # The switch is written; the replica, simulated, never starts serving generation 1.
    assert "switched: generation 1 is active" in result.output, result.output
    assert "do not serve it yet: replica-a (serves 0)" in " ".join(result.output.split())
    assert result.exit_code == 1
    active = ActiveGeneration.from_json(latest(settings, ACTIVE_KEY))
    assert (active.generation, active.previous) == (1, 0)
    assert started <= active.switched_at <= time.time()


def test_switch_returns_once_every_live_replica_reports_serving_the_new_generation(settings):
    building(settings)
    heartbeat(settings, "replica-a", serving=0, ready=(0, 1))

    def replica() -> None:
        """Switch as a replica does: once the active record names generation 1."""
        deadline = time.monotonic() + 60
        while ACTIVE_KEY not in dict(control_records(settings)) and time.monotonic() < deadline:
            time.sleep(0.2)
        heartbeat(settings, "replica-a", serving=1, ready=(0, 1))

    follower = threading.Thread(target=replica)
    follower.start()
    result = ragstream(settings, "reindex", "switch", "--timeout", "30")
    follower.join()

    assert result.exit_code == 0, result.output
    assert "switched: generation 1 is active" in result.output
    assert "all 1 live replicas serve generation 1" in result.output


def test_abort_tombstones_the_building_generation_and_says_when_it_is_dropped(settings):
    building(settings)

    result = ragstream(settings, "reindex", "--abort", "--timeout", "2")

    assert result.exit_code == 0, result.output
    assert "generation 1 aborted" in result.output
    assert "No consumers are running: they drop" in " ".join(result.output.split())
    assert control_records(settings)[-1] == (generation_key(1), None)
    again = ragstream(settings, "reindex", "--abort")
    assert again.exit_code == 2 and "nothing to abort" in again.output


def test_rollback_with_nothing_to_roll_back_to_is_an_error(settings):
    result = ragstream(settings, "reindex", "rollback")

    assert result.exit_code == 2, result.output
    assert "nothing to roll back to: generation 0 serves and no switch has happened" in result.output


def test_rollback_after_the_previous_generation_was_dropped_says_when(settings):
    building(settings)
    write(
        settings,
        (ACTIVE_KEY, ActiveGeneration(1, 0, time.time() - 7200).to_json()),
        (generation_key(0), None),  # as the consumers' process drops it, after reindex_keep_s
    )
    before = control_records(settings)

    result = ragstream(settings, "reindex", "rollback")

    assert result.exit_code == 2, result.output
    assert "nothing to roll back to: generation 0 was dropped at" in " ".join(result.output.split())
    assert control_records(settings) == before


def test_rollback_switches_back_to_the_kept_generation(settings):
    building(settings)
    write(settings, (ACTIVE_KEY, ActiveGeneration(1, 0, time.time()).to_json()))

    result = ragstream(settings, "reindex", "rollback", "--timeout", "1")

    assert result.exit_code == 0, result.output
    assert "rolled back: generation 0 is active again" in result.output
    assert "no live API replica: each serves generation 0 when it starts" in result.output
    active = ActiveGeneration.from_json(latest(settings, ACTIVE_KEY))
    assert (active.generation, active.previous) == (0, 1)
    status = ragstream(settings, "reindex", "status")
    rows = {line.split("│")[1].strip(): line for line in status.output.splitlines() if line.count("│") > 5}
    assert "active" in rows["0"] and "kept" in rows["1"] and "dropped at" in rows["1"]


@pytest.mark.parametrize("command", [["--abort"], ["status"], ["switch"], ["rollback"]])
def test_a_build_option_with_another_reindex_command_is_an_error_not_ignored(command):
    result = CliRunner().invoke(app, ["reindex", "--chunk-size", "500", *command])

    assert result.exit_code == 2
    assert "start a build" in " ".join(result.output.split())
