"""The ingest bench's own parts: the figures it reports from its rounds, the edits it makes, and
the baseline process that must run the library's defaults."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import ingest
from bench._ingest_figures import Spread, ratios_per_round, summarise, without_ragstream_env
from engines.chunking import Chunker
from engines.embedder import EMBEDDING_MEMORY_ENV
from schemas import DocumentEvent, EventOp


def document(paragraphs: int) -> DocumentEvent:
    content = "\n\n".join(f"Paragraph {n}: " + "words of some length " * 30 for n in range(paragraphs))
    return DocumentEvent(doc_id="doc", op=EventOp.UPSERT, content=content, source="test", version=1)


def test_a_spread_is_the_median_and_the_extremes_of_the_rounds() -> None:
    spread = Spread.of([140.0, 90.0, 150.0, 145.0])

    assert (spread.median, spread.low, spread.high) == (142.5, 90.0, 150.0)
    assert str(spread) == "142.50 (90.00–150.00)"


def test_a_spread_of_no_rounds_is_an_error() -> None:
    with pytest.raises(ValueError):
        Spread.of([])


def test_ratios_are_taken_per_round_before_the_median() -> None:
    rounds = [
        {"pipeline": 100.0, "baseline": 100.0},
        {"pipeline": 60.0, "baseline": 50.0},
        {"pipeline": 80.0, "baseline": 200.0},
    ]

    assert ratios_per_round(rounds, "pipeline", "baseline") == [1.0, 1.2, 0.4]
    # The ratio of the medians would be 80 / 100 = 0.8: a figure no round measured.
    assert summarise(rounds, [("pipeline", "baseline")])["ratios"]["pipeline ÷ baseline"] == Spread(
        1.0, 0.4, 1.2
    )


def test_a_round_without_one_of_the_paths_gives_no_ratio() -> None:
    rounds = [{"pipeline": 50.0, "peer": 40.0}, {"pipeline": 60.0}, {"peer": 30.0}]

    summary = summarise(rounds, [("pipeline", "peer"), ("pipeline", "baseline")])

    assert summary["ratios"] == {"pipeline ÷ peer": Spread(1.25, 1.25, 1.25)}
    assert summary["chunks_per_s"]["pipeline"] == Spread(55.0, 50.0, 60.0)
    assert summary["chunks_per_s"]["peer"] == Spread(35.0, 30.0, 40.0)


def test_the_child_environment_drops_the_kernel_cache_caps_and_keeps_the_rest() -> None:
    environ = {**EMBEDDING_MEMORY_ENV, "PATH": "/usr/bin", "OMP_NUM_THREADS": "2"}

    assert without_ragstream_env(environ) == {"PATH": "/usr/bin", "OMP_NUM_THREADS": "2"}


def test_the_bench_process_may_have_the_caps_but_its_children_do_not(monkeypatch) -> None:
    # An Embedder made in the bench's process sets them there (the pipeline's path may load one).
    for name, value in EMBEDDING_MEMORY_ENV.items():
        monkeypatch.setenv(name, value)

    env = ingest.child_env()

    assert not set(EMBEDDING_MEMORY_ENV) & set(env)
    assert env["HF_HUB_OFFLINE"] == "1"


def test_an_edit_changes_one_paragraph_and_so_one_chunk_in_a_newer_version() -> None:
    original = document(paragraphs=5)
    chunker = Chunker(1000, 100)

    edit = ingest.edited(original)

    before = [c.id for c in chunker.split(original.doc_id, original.content)]
    after = [c.id for c in chunker.split(edit.doc_id, edit.content)]
    assert len(before) == len(after) > 1
    assert [a == b for a, b in zip(before, after, strict=True)] == [True] * (len(before) - 1) + [False]
    assert edit.version == original.version + 1


def test_the_edited_documents_are_spread_over_the_corpus() -> None:
    events = [document(1).model_copy(update={"doc_id": f"doc-{n}"}) for n in range(10)]

    assert [e.doc_id for e in ingest.edits_of(events, 4)] == ["doc-0", "doc-2", "doc-5", "doc-7"]
    assert len(ingest.edits_of(events, 20)) == 10


@pytest.mark.integration
def test_the_baseline_runs_without_ragstream_or_its_environment(tmp_path: Path) -> None:
    chunks, result = tmp_path / "chunks.json", tmp_path / "result.json"
    chunks.write_text(json.dumps(["one short text", "and another one"]))

    subprocess.run(
        [
            sys.executable,
            str(ingest.BENCH / "plain_encode.py"),
            str(chunks),
            str(result),
            "--precision",
            "fp32",
        ],
        env=ingest.child_env(),
        check=True,
        capture_output=True,
    )

    figures = json.loads(result.read_text())
    assert figures["chunks"] == 2 and figures["chunks_per_s"] > 0
    assert figures["ragstream_modules"] == []
    assert all(figures["env"][name] is None for name in EMBEDDING_MEMORY_ENV)
