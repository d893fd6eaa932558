"""The ``ragstream`` command: run the system, feed it, and look inside it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from engines.chroma_client import open_chroma
from ragstream.api_key_cli import api_key_app
from ragstream.dlq_cli import dlq_app
from ragstream.reindex_cli import reindex_app
from ragstream.tune_cli import tune
from schemas import DocumentEvent, Settings
from schemas.logs import configure_logging

app = typer.Typer(
    help="Real-time retrieval for RAG: Kafka → Ray consumers → Chroma → HTTP search.", no_args_is_help=True
)
app.add_typer(dlq_app, name="dlq")
app.add_typer(api_key_app, name="api-key")
app.add_typer(reindex_app, name="reindex")
app.command(name="tune")(tune)
console = Console()

PUBLISH_BATCH = 200
#: How long ``ragstream up --sample-documents`` waits for the sample to be indexed.
SAMPLE_INDEX_TIMEOUT_S = 900.0

#: The component that the log lines of each long-running command name; every other command is
#: the "cli" and logs only warnings, so that its own output stays readable.
_SERVICE_COMPONENTS = {"streams": "stage", "consume": "consumers", "serve": "api", "watch": "watcher"}
#: The commands that talk to a Kafka the user runs (``up`` starts its own).
_KAFKA_COMMANDS = {
    "publish",
    "watch",
    "consume",
    "streams",
    "serve",
    "status",
    "trace",
    "reindex",
    "dlq",
    "tune",
}


@app.callback()
def _configure_logs(context: typer.Context) -> None:
    """Logging is configured once here, for every command, from RAGSTREAM_LOG_FORMAT."""
    component = _SERVICE_COMPONENTS.get(context.invoked_subcommand or "", "cli")
    level = logging.WARNING if component == "cli" else logging.INFO
    settings = _settings()
    configure_logging(component, settings.log_format, level)
    kafka = settings.kafka
    if context.invoked_subcommand in _KAFKA_COMMANDS and (kafka.uses_sasl or kafka.uses_tls):
        _check_kafka_login(settings)


def _check_kafka_login(settings: Settings) -> None:
    """End the command at once, saying what to fix, when a secured Kafka refuses us: its clients
    would otherwise retry a wrong password like a broker that is down."""
    from streams.kafka_clients import KafkaRefused, check_kafka_connection

    try:
        asyncio.run(check_kafka_connection(settings.kafka))
    except KafkaRefused as exc:
        console.print(f"[red]Kafka refused the connection[/]: {exc}")
        raise typer.Exit(2) from exc


def _settings() -> Settings:
    return Settings()


async def _publish(settings: Settings, events: list[DocumentEvent], label: str) -> int:
    from streams.publisher import EventPublisher
    from streams.topics import ensure_topics

    await ensure_topics(settings)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    async with EventPublisher(settings.kafka, settings.events_topic) as publisher:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(label, total=len(events))
            await publisher.publish_in_batches(
                events, PUBLISH_BATCH, on_batch=lambda batch: progress.advance(task, len(batch))
            )
    return len(events)


async def _wait_until_indexed(settings: Settings) -> None:
    """Show the lag of every hop to the index until it reaches zero, for at most
    SAMPLE_INDEX_TIMEOUT_S (then `DrainTimeout` says which hop was still behind)."""
    from deploy.drain import wait_drained
    from streams.hops import HopLag

    first: int | None = None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("indexing", total=None)

        def show(hops: list[HopLag]) -> None:
            nonlocal first
            remaining = sum(hop.lag for hop in hops)
            first = remaining if first is None else max(first, remaining)
            progress.update(task, total=first, completed=first - remaining)

        await wait_drained(settings, timeout=SAMPLE_INDEX_TIMEOUT_S, on_lag=show)


@app.command()
def up(
    sample_documents: Annotated[
        int, typer.Option(help="Wikipedia articles to ingest from the sample corpus")
    ] = 300,
    consumers: Annotated[
        int | None,
        typer.Option(
            help="a fixed number of consumer actors; default: scaled by lag between "
            "RAGSTREAM_CONSUMERS_MIN and RAGSTREAM_CONSUMERS_MAX",
            min=1,
        ),
    ] = None,
) -> None:
    """Start Kafka, Chroma, a Ray cluster, the changes stage, the consumers and the API replicas,
    ingest the sample corpus, say where to query."""
    from ragstream.stack import LocalStack
    from streams.corpus import wiki_events
    from streams.topics import ensure_topics

    settings = _settings()
    stack = LocalStack(settings, consumers)
    with console.status("starting Kafka, Chroma and Ray (the first run fetches Kafka from Maven Central)"):
        stack.start_services()
    asyncio.run(ensure_topics(settings))
    with console.status("starting the changes stage, the consumers and the API (loading the models)"):
        stack.start_workers()
    replicas = f" ({settings.api_replicas} replicas on Ray Serve)" if settings.api_replicas else ""
    console.print(
        f"[green]up[/]: Kafka {settings.bootstrap_servers}, Chroma {settings.chroma_url}, "
        f"Ray {stack.ray().address}, API {stack.api_url}{replicas}"
    )
    if sample_documents:
        events = list(wiki_events(sample_documents))
        asyncio.run(_publish(settings, events, f"publishing {len(events)} Wikipedia articles"))
        asyncio.run(_wait_until_indexed(settings))
    console.print(
        f"\nSearch it in a browser, with live lag and freshness: {stack.api_url}/\n"
        f"or:\n  curl -s {stack.api_url}/v1/search -H 'content-type: application/json' "
        """-d '{"query": "painting about the bombing of a Basque town", "k": 3}'\n"""
        f"API docs: {stack.api_url}/docs    Index status: ragstream status    Stop: make down"
    )


@app.command()
def down() -> None:
    """Stop everything `up` started (data stays under the state folder)."""
    from ragstream.stack import LocalStack

    stopped = LocalStack(_settings()).stop_all()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def publish(
    paths: Annotated[list[Path], typer.Argument(help="files or folders (.txt .md .rst .html .pdf)")],
) -> None:
    """Publish files as upsert events; doc_id = path relative to the folder given."""
    from streams.files import SkippedFile, find_documents, read_document

    settings = _settings()
    events: list[DocumentEvent] = []
    for root, path in find_documents(paths):
        read = read_document(root, path, settings.max_document_bytes)
        if isinstance(read, SkippedFile):
            console.print(f"[yellow]skipped[/] {read.path}: {read.reason}")
        else:
            events.append(read)
    if not events:
        console.print(
            "[red]nothing to publish[/]: no readable .txt, .md, .rst, .html or .pdf file in the paths given"
        )
        raise typer.Exit(code=1)
    count = asyncio.run(_publish(settings, events, "publishing"))
    console.print(f"published {count} documents to {settings.events_topic}")


@app.command()
def watch(
    folder: Annotated[
        Path,
        typer.Argument(
            help="folder to watch (.txt .md .rst .html .pdf)", metavar="DIR", file_okay=False, exists=True
        ),
    ],
    namespace: Annotated[
        str | None, typer.Option(help="doc_id prefix: NAMESPACE/relative/path (default: none)")
    ] = None,
) -> None:
    """Publish a folder's documents, then every change to them, until interrupted.

    doc_id = path relative to DIR, as with `publish`.

    Left out: hidden files, .git, editor temp files, and what DIR/.ragstreamignore (gitignore syntax) says.
    """
    from aiokafka.errors import KafkaError

    from streams.watch_state import WatchStateError
    from streams.watcher import watch_folder

    # The watcher logs what each change led to; watchfiles' own "N changes detected" is noise.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    settings = _settings()
    try:
        stats = asyncio.run(watch_folder(settings, folder, namespace))
    except (WatchStateError, ValueError, KafkaError) as exc:
        console.print(f"[red]cannot watch {folder}[/]: {exc}")
        raise typer.Exit(code=1) from None
    console.print(
        f"stopped: {stats.upserts} upserts and {stats.deletes} deletes published to "
        f"{settings.events_topic}, {stats.skipped} files skipped"
    )


@app.command()
def consume(
    consumers: Annotated[
        int | None,
        typer.Option(
            help="a fixed group of this many consumer actors; default: scaled by lag between "
            "RAGSTREAM_CONSUMERS_MIN and RAGSTREAM_CONSUMERS_MAX",
            min=1,
        ),
    ] = None,
) -> None:
    """Run the indexing consumers as Ray actors, as many as the lag calls for, until interrupted:
    one group per index generation the control topic names (a reindex builds one beside the active one)."""
    from consumers.generations import GenerationSupervisor

    settings = _settings()
    if consumers is not None:
        settings = settings.model_copy(update={"consumers_min": consumers, "consumers_max": consumers})
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sizes = f"{settings.consumers_min}" if consumers else f"{settings.consumers_min}-{settings.consumers_max}"
    console.print(
        f"{sizes} consumer(s) per index generation indexing {settings.input_topic}; "
        f"generations from {settings.control_topic}"
    )
    # Also with a fixed group: each generation's controller reports the actors that answer and
    # retires none. Stopping finishes the batches in flight.
    asyncio.run(GenerationSupervisor(settings).run(stop))


@app.command()
def streams(
    worker: Annotated[
        int | None,
        typer.Option("--worker", hidden=True, help="run faust worker number WORKER itself, unsupervised"),
    ] = None,
) -> None:
    """Run the changes stage (faust): validate, normalise and deduplicate events into the changes topic.

    RAGSTREAM_STAGE_WORKERS workers share its partitions; each is started again when it exits."""
    from streams.changes import run_stage
    from streams.changes.supervisor import supervise_stage

    settings = _settings()
    if worker is not None:
        run_stage(settings, worker)
        return
    console.print(
        f"changes stage: {settings.events_topic} → {settings.changes_topic}, {settings.stage_workers} workers"
    )
    raise typer.Exit(supervise_stage(settings))


@app.command()
def serve(
    replicas: Annotated[
        int | None,
        typer.Option(
            help="API replicas on Ray Serve, on the API's port (RAY_ADDRESS, or a local Ray); "
            "0 = one plain uvicorn process; default RAGSTREAM_API_REPLICAS"
        ),
    ] = None,
) -> None:
    """Run the query API: replicas on Ray Serve, or one uvicorn process with --replicas 0."""
    settings = _settings()
    count = settings.api_replicas if replicas is None else replicas
    if count < 0:
        raise typer.BadParameter("--replicas must be 0 (uvicorn) or more")
    if count > 0:
        _serve_replicas(settings, count)
        return
    import uvicorn

    from query_api import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level="info",
        access_log=settings.api_access_log,
        # uvicorn's loggers then propagate to the one configuration of this process.
        log_config=None,
    )


def _serve_replicas(settings: Settings, count: int) -> None:
    from ragstream.api_replicas import run_api_replicas

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    address = f"http://{settings.api_host}:{settings.api_port}"
    console.print(f"starting {count} API replicas on Ray Serve at {address}")
    run_api_replicas(settings, count, stop)


async def _status(settings: Settings) -> tuple[list, int, int]:

    from engines.chroma import open_collection
    from streams.hops import read_pipeline_lag
    from streams.lag import LagReader

    async with LagReader(settings.kafka) as lag:
        hops = await read_pipeline_lag(lag, settings)
    client = await open_chroma(settings)
    collection = await open_collection(client, settings.collection)
    chunks = await collection.count()
    # Every indexed document has exactly one chunk with index 0.
    documents = len((await collection.get(where={"chunk_index": 0}, include=[]))["ids"])
    return hops, documents, chunks


@app.command()
def status() -> None:
    """Topics, partitions, committed offsets, lag, and what the index holds."""
    settings = _settings()
    hops, documents, chunks = asyncio.run(_status(settings))
    for hop in hops:
        table = Table(title=f"{hop.hop.name}: {hop.hop.topic} → group {hop.hop.group}")
        for column in ("partition", "committed", "end", "lag"):
            table.add_column(column, justify="right")
        for p in hop.partitions:
            committed = "-" if p.committed is None else str(p.committed)
            table.add_row(str(p.partition), committed, str(p.end_offset), str(p.lag))
        console.print(table)
    console.print(f"lag in total: {sum(hop.lag for hop in hops)}")
    console.print(f"index {settings.collection!r}: {documents} documents, {chunks} chunks")


async def _trace(settings: Settings, doc_id: str, versions: int, api_url: str, api_key: str | None) -> Any:
    import httpx

    from engines.chroma import open_collection
    from streams.trace import VersionTrace, read_trace

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def visible(
        version: VersionTrace, _chunk_records: list[tuple[int, int]]
    ) -> tuple[bool | None, str]:
        # A search restricted to the document: the vector half is answered from Chroma filtered by
        # the doc_id, so any live version comes back; it is visible once that version does.
        body = {"query": doc_id, "k": 5, "filter": {"doc_id": doc_id}}
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.post(f"{api_url}/v1/search", json=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"in Chroma; the API at {api_url} did not answer a search: {exc}"
        if response.status_code != 200:
            return None, f"in Chroma; the API's search answered {response.status_code}: {response.text[:200]}"
        found = {hit["metadata"].get("version") for hit in response.json()["hits"]}
        if version.op == "delete":
            return (not found), "no search hit" if not found else f"search still returns versions {found}"
        if version.version in found:
            return True, f"a search through {api_url} returns it"
        return False, f"in Chroma, but a search through {api_url} returns versions {sorted(found) or 'none'}"

    client = await open_chroma(settings)
    collection = await open_collection(client, settings.collection)
    return await read_trace(settings, doc_id, collection, versions=versions, visible=visible)


@app.command()
def trace(
    doc_id: Annotated[str, typer.Argument(help="the document's id, as published")],
    versions: Annotated[int, typer.Option(help="how many of its last versions to show", min=1)] = 3,
    api_url: Annotated[
        str | None, typer.Option(help="the API asked whether it is searchable; default from the settings")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="RAGSTREAM_API_KEY", help="a key, when the API needs one")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the trace as JSON")] = False,
) -> None:
    """A document's path through every hop with its times, and where its newest version waits:
    docs.events → changes stage → docs.changes → consumer batch → docs.chunks → Chroma → search."""
    import dataclasses
    import datetime as dt

    import orjson

    settings = _settings()
    url = api_url or f"http://{settings.api_host}:{settings.api_port}"
    found = asyncio.run(_trace(settings, doc_id, versions, url, api_key))
    if as_json:
        print(orjson.dumps(dataclasses.asdict(found), option=orjson.OPT_INDENT_2).decode())
        return
    if not found.versions:
        console.print(
            f"[yellow]{doc_id!r} was not found[/] in {settings.events_topic}"
            f"[{found.partitions.get(settings.events_topic)}]"
        )
    for version in found.versions:
        table = Table(title=f"{doc_id} version {version.version} ({version.op}, event {version.event_id})")
        for column in ("hop", "at (UTC)", "after publishing", "where / what"):
            table.add_column(column)
        start = version.steps[0].at if version.steps else None
        for step in version.steps:
            at = (
                ""
                if step.at is None
                else dt.datetime.fromtimestamp(step.at, dt.UTC).strftime("%H:%M:%S.%f")[:-3]
            )
            since = "" if step.at is None or start is None else f"+{step.at - start:.3f} s"
            table.add_row(step.hop, at, since, step.detail)
        console.print(table)
        if version.waiting:
            console.print(f"[yellow]waiting[/]: {version.waiting}")
    for note in found.notes:
        console.print(f"[dim]{note}[/]")


@app.command(name="eval")
def evaluate(
    articles: Annotated[
        int | None, typer.Option(help="Wikipedia articles to index (default: all, about 10k)")
    ] = None,
    queries: Annotated[
        int | None, typer.Option(help="cases to sample, with a fixed seed (default: all)")
    ] = None,
    sweep: Annotated[
        bool, typer.Option(help="also sweep chunk size (300/600/1000) and the hybrid fusion settings")
    ] = False,
    chunk_size: Annotated[
        list[int] | None,
        typer.Option(help="with --sweep: a chunk size to index and compare (repeat; default 300, 600, 1000)"),
    ] = None,
    lexical_weight: Annotated[
        list[float] | None,
        typer.Option(help="with --sweep: a BM25 fusion weight to try (repeat; default 0.5, 1, 2)"),
    ] = None,
    candidates: Annotated[
        list[int] | None,
        typer.Option(help="with --sweep: a candidate depth to try (repeat; default 50, 100)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the case sample")] = 0,
    results_dir: Annotated[Path, typer.Option(help="where the JSON report goes")] = Path("bench/results"),
    from_feedback: Annotated[
        bool,
        typer.Option(
            "--from-feedback",
            help="evaluate the live index on the cases confirmed in the feedback topic instead",
        ),
    ] = False,
    beir: Annotated[
        list[Path] | None,
        typer.Option(
            "--beir",
            help="a data set in the BEIR layout (corpus.jsonl, queries.jsonl, qrels/test.tsv) to "
            "evaluate too, each indexed on its own (repeat, or separate folders with commas)",
        ),
    ] = None,
    wikipedia: Annotated[
        bool, typer.Option(help="with --beir: evaluate the built-in Wikipedia set beside them")
    ] = True,
    markdown: Annotated[
        Path | None,
        typer.Option(help="with --beir: also write the per-set tables as a Markdown page (for the docs)"),
    ] = None,
) -> None:
    """Retrieval evaluation: Wikipedia short descriptions as queries, their article the relevant
    document, indexed through the pipeline on a private broker and Chroma, searched through the API.

    With --beir: each BEIR-layout set (graded judgements) and the Wikipedia set are indexed on their
    own and every mode is reported per set; --queries then samples each set's queries, and every
    query's vector and lexical candidates are saved for fusion studies.

    With --from-feedback: the (query, document) pairs that feedback confirmed (a correct_doc_id, or
    a rating of 1 on a result), searched on the running stack's index."""
    if from_feedback:
        if (
            articles is not None
            or queries is not None
            or sweep
            or chunk_size
            or lexical_weight
            or candidates
            or beir
        ):
            raise typer.BadParameter(
                "--articles, --queries, --sweep and its grid, and --beir belong to the evaluation on "
                "data sets, not --from-feedback"
            )
        _evaluate_feedback(results_dir)
        return
    if markdown is not None and not beir:
        raise typer.BadParameter("--markdown writes the per-set tables of --beir", param_hint="--markdown")
    if beir:
        if sweep or chunk_size or lexical_weight or candidates:
            raise typer.BadParameter("--sweep and its grid belong to the Wikipedia evaluation, not --beir")
        folders = [Path(part) for value in beir for part in str(value).split(",") if part]
        _evaluate_sets(folders, wikipedia, articles, queries, seed, results_dir, markdown)
        return

    from evaluation import EvaluationOptions, print_report, run_evaluation

    defaults = EvaluationOptions()
    options = EvaluationOptions(
        articles=articles,
        queries=queries,
        seed=seed,
        sweep=sweep,
        chunk_sizes=tuple(chunk_size) if chunk_size else defaults.chunk_sizes,
        lexical_weights=tuple(lexical_weight) if lexical_weight else defaults.lexical_weights,
        candidate_depths=tuple(candidates) if candidates else defaults.candidate_depths,
        results_dir=results_dir,
    )
    with _own_ray():
        report = run_evaluation(options, _settings(), say=lambda line: console.print(f"[dim]{line}[/]"))
    print_report(report, console)


@contextlib.contextmanager
def _own_ray() -> Iterator[None]:
    """Shut down on the way out the Ray session the block started, never one that was running
    before it (a caller's, whose actors would die with it)."""
    import ray

    already_running = ray.is_initialized()
    try:
        yield
    finally:
        if not already_running:
            ray.shutdown()


def _evaluate_sets(
    folders: list[Path],
    wikipedia: bool,
    articles: int | None,
    queries: int | None,
    seed: int,
    results_dir: Path,
    markdown: Path | None = None,
) -> None:
    import shlex
    import sys

    from evaluation import (
        InvalidBeirSet,
        beir_eval_set,
        load_beir,
        print_sets_report,
        run_sets_evaluation,
        sets_markdown,
        wikipedia_eval_set,
    )

    try:
        sets = [beir_eval_set(load_beir(folder), queries, seed) for folder in folders]
    except InvalidBeirSet as exc:
        raise typer.BadParameter(str(exc), param_hint="--beir") from None
    if wikipedia:
        sets.insert(0, wikipedia_eval_set(articles, queries, seed))
    with _own_ray():
        report = run_sets_evaluation(
            sets, _settings(), results_dir, say=lambda line: console.print(f"[dim]{line}[/]")
        )
    print_sets_report(report, console)
    if markdown is not None:
        command = shlex.join(["ragstream", *sys.argv[1:]])
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(sets_markdown(report, command), encoding="utf-8")
        console.print(f"wrote {markdown}")


def _evaluate_feedback(results_dir: Path) -> None:
    from evaluation import NoFeedbackCases, print_feedback_report, run_feedback_evaluation

    try:
        report = run_feedback_evaluation(
            _settings(), results_dir, say=lambda line: console.print(f"[dim]{line}[/]")
        )
    except NoFeedbackCases as exc:
        console.print(f"[yellow]nothing to evaluate[/]: {exc}")
        raise typer.Exit(code=1) from None
    print_feedback_report(report, console)
