"""``ragstream tune`` against a real broker: it tunes from a candidates file as `ragstream eval`
writes them, publishes versions to the control topic, rolls them back, and refuses what it should."""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ragstream.cli import app
from schemas import Settings
from schemas.search_tuning import TunedFusion
from streams.control import read_control_state

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_broker, chroma_server) -> Settings:
    """A control topic of this test's own."""
    return Settings(
        bootstrap_servers=kafka_broker.bootstrap_servers, chroma_port=chroma_server.port
    ).namespaced(f"tune-{uuid.uuid4().hex[:8]}")


def ragstream(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=settings.to_env() | {"COLUMNS": "300"})


def candidates_file(path: Path, queries: int) -> Path:
    """A candidates file where the vector retriever ranks the relevant document first and BM25
    ranks it last: a deployment whose documents favour vectors."""
    rows = []
    for q in range(queries):
        docs = [f"q{q}-right", *(f"q{q}-other-{i}" for i in range(9))]
        rows.append(
            {
                "id": f"q{q}",
                "query": f"question {q}",
                "relevance": {docs[0]: 1},
                "vector": [[f"c-{doc}", doc, 0.9 - 0.05 * i] for i, doc in enumerate(docs)],
                "lexical": [[f"c-{doc}", doc, 12.0 - i] for i, doc in enumerate([*docs[1:], docs[0]])],
            }
        )
    payload = {"set": "made-up", "run_id": "test", "settings": {}, "depth": 10, "queries": rows}
    with gzip.open(path, "wt", encoding="utf-8") as out:
        json.dump(payload, out)
    return path


def published(settings: Settings, tenant: str = "*") -> TunedFusion | None:
    return asyncio.run(read_control_state(settings)).tuned.get(tenant)


def test_tune_publishes_versions_that_roll_back_in_order(settings, tmp_path):
    dump = candidates_file(tmp_path / "eval-candidates.json.gz", queries=40)

    shown = ragstream(settings, "tune", "--candidates", str(dump))
    assert shown.exit_code == 0, shown.output
    assert "held out (40 queries" in shown.output and "not published" in shown.output
    assert published(settings) is None

    first = ragstream(settings, "tune", "--candidates", str(dump), "--publish")
    assert first.exit_code == 0, first.output
    one = published(settings)
    assert one is not None and one.version == 1 and one.vector_prior > settings.hybrid_vector_prior
    assert one.tuned_ndcg > one.default_ndcg and one.held_out_queries == 40

    for_acme = ragstream(settings, "tune", "--candidates", str(dump), "--publish", "--tenant", "acme")
    assert for_acme.exit_code == 0, for_acme.output
    again = ragstream(settings, "tune", "--candidates", str(dump), "--publish")
    assert published(settings).version == 2 and published(settings, "acme").version == 1
    listing = ragstream(settings, "tune", "--show")
    assert "every tenant" in listing.output and "acme" in listing.output, listing.output

    back = ragstream(settings, "tune", "--rollback")
    assert back.exit_code == 0 and "uses version 1" in back.output, back.output
    assert published(settings).version == 1
    assert ragstream(settings, "tune", "--rollback").exit_code == 0
    assert published(settings) is None and published(settings, "acme").version == 1
    nothing = ragstream(settings, "tune", "--rollback")
    assert nothing.exit_code == 1 and "nothing is published" in nothing.output
    assert again.exit_code == 0


def test_tune_refuses_too_few_judged_queries_and_publishes_nothing(settings, tmp_path):
    dump = candidates_file(tmp_path / "eval-candidates.json.gz", queries=5)
    result = ragstream(settings, "tune", "--candidates", str(dump), "--publish")
    assert result.exit_code == 1
    assert "needs at least 20" in " ".join(result.output.split())
    assert published(settings) is None
