"""BEIR-layout sets: read from their files, and evaluated by `ragstream eval --beir` through the
pipeline (publish → Ray consumers → Chroma and the chunk log → the search API)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evaluation import InvalidBeirSet, load_beir
from evaluation.beir import beir_id

CORPUS = [
    {
        "_id": "guernica",
        "title": "Guernica",
        "text": "A mural by Pablo Picasso of the bombing of a Basque town.",
    },
    {
        "_id": "volcano",
        "title": "Volcano",
        "text": "A rupture in the crust through which lava and ash erupt.",
    },
    {
        "_id": "tides",
        "title": "Tide",
        "text": "The rise and fall of sea levels caused by the Moon's gravity.",
    },
    {
        "_id": "glucose",
        "title": "Photosynthesis",
        "text": "Plants turn sunlight, water and carbon dioxide into glucose.",
    },
    {
        "_id": "violin",
        "title": "Violin",
        "text": "A bowed string instrument with four strings tuned in fifths.",
    },
]
QUERIES = [
    {"_id": "q-mural", "text": "Picasso mural Basque bombing"},
    {"_id": "q-lava", "text": "lava and ash erupt"},
    {"_id": "q-sea", "text": "sea levels rise and fall with the Moon"},
    {"_id": "q-unjudged", "text": "a query nobody judged"},
]
# "q-mural" also judges a document not relevant (grade 0): it must count for nothing.
QRELS = [
    ("q-mural", "guernica", 2),
    ("q-mural", "violin", 0),
    ("q-lava", "volcano", 1),
    ("q-sea", "tides", 1),
]


def write_beir(folder: Path, qrels: list[tuple[str, str, int]] = QRELS) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in CORPUS))
    (folder / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in QUERIES))
    lines = ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t{s}" for q, d, s in qrels)]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_documents_keep_their_beir_id_title_and_set_as_source(tmp_path):
    beir = load_beir(write_beir(tmp_path / "tiny"))
    events = {event.doc_id: event for event in beir.events()}
    event = events["tiny/guernica"]
    assert beir_id(event.doc_id) == "guernica"
    assert event.content.startswith("Guernica\n\nA mural by Pablo Picasso")
    assert event.metadata == {"title": "Guernica"}
    assert event.source == "tiny"
    assert len(events) == len(CORPUS)


def test_only_judged_queries_become_cases_with_their_graded_relevance(tmp_path):
    beir = load_beir(write_beir(tmp_path / "tiny"))
    cases = {case.query_id: case for case in beir.cases}
    assert set(cases) == {"q-mural", "q-lava", "q-sea"}
    assert cases["q-mural"].relevance == {"tiny/guernica": 2, "tiny/violin": 0}
    assert cases["q-mural"].relevant_doc_ids == {"tiny/guernica"}


def test_judged_documents_missing_from_the_corpus_are_counted(tmp_path):
    beir = load_beir(write_beir(tmp_path / "tiny", [*QRELS, ("q-sea", "gone", 1)]))
    assert beir.judged_missing == 1


def test_a_malformed_qrels_line_is_refused_with_its_place(tmp_path):
    folder = write_beir(tmp_path / "tiny")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq-lava\tvolcano\thigh\n")
    with pytest.raises(InvalidBeirSet, match=r"test.tsv:2: the score 'high' is not a number"):
        load_beir(folder)


def test_the_eval_command_refuses_a_folder_that_is_no_beir_set(tmp_path):
    from ragstream.cli import app

    result = CliRunner().invoke(app, ["eval", "--beir", str(tmp_path), "--no-wikipedia"])
    assert result.exit_code != 0
    assert "corpus.jsonl" in result.output


@pytest.mark.integration
def test_eval_on_a_beir_set_reports_what_each_mode_finds(tmp_path, monkeypatch):
    from ragstream.cli import app

    # Other tests' consumer actors may hold the local Ray cluster's CPUs.
    monkeypatch.setenv("RAGSTREAM_CONSUMER_NUM_CPUS", "0")
    folder = write_beir(tmp_path / "tiny")
    results = tmp_path / "results"

    page = tmp_path / "docs" / "quality.md"
    command = ["eval", "--beir", str(folder), "--no-wikipedia", "--results-dir", str(results)]
    result = CliRunner().invoke(app, [*command, "--markdown", str(page)])

    assert result.exit_code == 0, result.output
    assert "hybrid (default)" in result.output
    assert "| hybrid (default) |" in page.read_text() and "## tiny: 3 queries" in page.read_text()
    (report_path,) = results.glob("eval-sets-*.json")
    report = json.loads(report_path.read_text())["sets"]["tiny"]
    assert report["documents"] == len(CORPUS) and report["cases"] == 3
    # Every query shares its words with its one relevant document only.
    lexical = report["modes"]["lexical"]["metrics"]
    assert lexical["recall@1"] == 1.0
    assert lexical["ndcg@10"] == 1.0
    assert set(report["default_checks"]) == {"ndcg@10", "recall@5"}
    assert report["significance"]["hybrid vs lexical"]["ndcg@10"]["p_value"] <= 1.0
    assert report["modes"]["lexical"]["latency_ms"]["p50"] > 0

    with gzip.open(report["candidates"], "rt") as dump:
        queries = {row["id"]: row for row in json.load(dump)["queries"]}
    lava = queries["q-lava"]
    assert beir_id(lava["lexical"][0][1]) == "volcano"
    assert [hit[2] for hit in lava["lexical"]] == sorted((hit[2] for hit in lava["lexical"]), reverse=True)
    assert all(-1.0 <= hit[2] <= 1.0 for hit in lava["vector"])
    # Every document is a candidate of the vector retriever in so small a set.
    assert {hit[1] for hit in lava["vector"]} == {f"tiny/{row['_id']}" for row in CORPUS}
