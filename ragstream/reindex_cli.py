"""``ragstream reindex``: build a new index generation beside the active one, then switch to it.

The checks, writes and waits live in ``ragstream.reindex``; this module only shows them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas import Settings
from schemas.generations import Generation

if TYPE_CHECKING:
    from ragstream import reindex, reindex_progress

reindex_app = typer.Typer(
    help="Rebuild the index with another model, chunking or precision while the active one serves, "
    "then switch every replica to it at once."
)

T = TypeVar("T")


class Precision(StrEnum):
    auto = "auto"
    bf16 = "bf16"
    fp32 = "fp32"


TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0, help="seconds to wait for the conditions and the replicas")
]
#: Seconds of progress that the records/s rate and the ETA are taken over.
RATE_WINDOW_S = 15.0


def _console() -> Console:
    # Made per command, so the terminal width (COLUMNS) is read when the command runs.
    return Console()


def _run(step: Coroutine[Any, Any, T]) -> T:
    """Run one step; a refusal or an unreachable Kafka ends the command with what to do next."""
    # Imported when a command runs: chromadb and the Kafka clients take a second to import, and
    # every other `ragstream` command would pay for it.
    from aiokafka.errors import KafkaError

    from ragstream import reindex

    # Every Kafka failure that matters ends the step as an exception, said below; aiokafka's own
    # error lines (a topic just created has no leader for a moment) would only alarm.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(step)
    except reindex.ReindexError as exc:
        _console().print(f"[red]{exc.label}[/]: {exc}")
        raise typer.Exit(code=exc.exit_code) from None
    except KafkaError as exc:
        settings = Settings()
        _console().print(f"[red]Kafka at {settings.bootstrap_servers} did not answer[/]: {exc!r}")
        raise typer.Exit(code=1) from None


@reindex_app.callback(invoke_without_command=True)
def start(
    context: typer.Context,
    model: Annotated[str | None, typer.Option(help="sentence-transformers model name or path")] = None,
    chunk_size: Annotated[int | None, typer.Option(help="characters per chunk")] = None,
    chunk_overlap: Annotated[int | None, typer.Option(help="characters a chunk repeats")] = None,
    precision: Annotated[Precision | None, typer.Option(help="the embedding's")] = None,
    no_switch: Annotated[
        bool, typer.Option("--no-switch", help="once caught up, leave the switch to `reindex switch`")
    ] = False,
    abort: Annotated[bool, typer.Option("--abort", help="drop the generation being built instead")] = False,
    timeout: TimeoutOption = 300.0,
) -> None:
    """Build a generation with the given model, chunking or precision (the rest as the active
    generation has it), show its progress, and switch to it once it has caught up."""
    asked = [model, chunk_size, chunk_overlap, precision]
    if context.invoked_subcommand is not None or abort:
        if any(value is not None for value in asked) or no_switch:
            what = f"`reindex {context.invoked_subcommand}`" if context.invoked_subcommand else "--abort"
            raise typer.BadParameter(
                f"--model, --chunk-size, --chunk-overlap, --precision and --no-switch start a build; "
                f"{what} takes none of them"
            )
        if context.invoked_subcommand is not None:
            return
    from ragstream import reindex

    settings = Settings()
    if abort:
        _abort(settings, timeout)
        return
    console = _console()
    active = _run(_active(settings))
    shape = reindex.requested_shape(
        active.shape,
        model=model,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        precision=precision.value if precision else None,
    )
    generation = _run(reindex.check_request(settings, shape))
    import transformers

    transformers.logging.disable_progress_bar()  # the status line below says what happens
    with console.status(f"loading {shape.model} as the consumers will"):
        dimension = _run(asyncio.to_thread(reindex.load_model, shape))
    console.print(f"model {shape.model} loads: {dimension}-dimensional vectors")
    generation = _run(reindex.start_generation(settings, generation))
    own = generation.settings(settings)
    console.print(
        f"generation {generation.number} written: {shape.describe()}\n"
        f"  the consumers build collection {own.collection} and chunk log {own.chunks_topic} "
        f"with group {own.consumer_group}, from the start of {own.input_topic}"
    )
    try:
        progress = _show_build(settings, generation, console)
    except KeyboardInterrupt:
        console.print(
            f"\n[yellow]stopped watching[/]: generation {generation.number} is still being built by the "
            "consumers. `ragstream reindex status` shows it, `ragstream reindex switch` switches once it "
            "has caught up, `ragstream reindex --abort` drops it."
        )
        raise typer.Exit(code=130) from None
    console.print(
        f"generation {generation.number} has caught up: every change read, "
        f"{progress.chunks or 0} chunks, every document of generation {active.number} covered"
    )
    if no_switch:
        console.print("not switched (--no-switch): `ragstream reindex switch` when you are ready")
        return
    _switch(settings, timeout)


async def _active(settings: Settings) -> Generation:
    from streams.control import read_control_state

    return (await read_control_state(settings)).active_generation(settings)


def _show_build(
    settings: Settings, generation: Generation, console: Console
) -> reindex_progress.BuildProgress:
    from ragstream import reindex

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("changes · {task.fields[rate]} · {task.fields[chunks]} chunks · ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
    )
    seen: deque[tuple[float, int]] = deque()
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(f"generation {generation.number}", total=None, rate="-", chunks=0, eta="-")

        def show(progress: reindex_progress.BuildProgress) -> None:
            now = time.monotonic()
            seen.append((now, progress.read))
            while now - seen[0][0] > RATE_WINDOW_S:
                seen.popleft()
            (then, read_then) = seen[0]
            rate = (progress.read - read_then) / (now - then) if now > then else 0.0
            eta = f"{progress.lag / rate:.0f} s" if rate > 0 else ("0 s" if not progress.lag else "-")
            bar.update(
                task,
                total=progress.end,
                completed=progress.read,
                rate=f"{rate:.0f} records/s",
                chunks=progress.chunks or 0,
                eta=eta,
            )

        return _run(reindex.follow_build(settings, generation, show))


def _switch(settings: Settings, timeout: float) -> None:
    from ragstream import reindex

    console = _console()
    last: list[str] = []

    def show(check: reindex.SwitchCheck) -> None:
        failures = check.failures()
        if failures and failures != last:
            console.print(f"[dim]waiting: {'; '.join(failures)}[/]")
        last[:] = failures

    with console.status("checking lag, coverage and the replicas"):
        record = _run(reindex.switch(settings, timeout, show))
    console.print(
        f"[green]switched[/]: generation {record.generation} is active (generation {record.previous} "
        f"kept for {settings.reindex_keep_s:g} s for `ragstream reindex rollback`)"
    )
    _wait_serving(settings, record.generation, timeout)


def _wait_serving(settings: Settings, generation: int, timeout: float) -> None:
    from ragstream import reindex

    console = _console()
    with console.status(f"waiting for every live replica to serve generation {generation}"):
        live, behind = _run(reindex.wait_serving(settings, generation, timeout))
    if behind:
        names = ", ".join(f"{r.replica} (serves {r.serving})" for r in behind)
        console.print(f"[yellow]after {timeout:g} s these live replicas do not serve it yet[/]: {names}")
        raise typer.Exit(code=1)
    if live:
        console.print(f"all {len(live)} live replicas serve generation {generation}")
    else:
        console.print(f"no live API replica: each serves generation {generation} when it starts")


def _abort(settings: Settings, timeout: float) -> None:
    from ragstream import reindex

    console = _console()
    with console.status("aborting: waiting for the consumers to drop what the generation made"):
        result = _run(reindex.abort(settings, timeout))
    own = result.generation.settings(settings)
    number = result.generation.number
    made = f"its collection {own.collection} and chunk log {own.chunks_topic}"
    if not result.consumers_running:
        console.print(
            f"generation {number} aborted. No consumers are running: they drop {made} when they next run"
        )
    elif result.dropped:
        console.print(f"generation {number} aborted; the consumers dropped {made}")
    else:
        console.print(
            f"[yellow]generation {number} aborted[/], but after {timeout:g} s the consumers have not "
            f"dropped {made} yet: `ragstream reindex status` and the consumers' logs say more"
        )
        raise typer.Exit(code=1)


@reindex_app.command()
def switch(timeout: TimeoutOption = 300.0) -> None:
    """Switch to the generation being built once its group has lag 0, its collection covers
    every document of the active one, and every live API replica holds it ready."""
    _switch(Settings(), timeout)


@reindex_app.command()
def rollback(timeout: TimeoutOption = 300.0) -> None:
    """Switch back to the previous generation while it is still kept."""
    from ragstream import reindex

    settings = Settings()
    record = _run(reindex.rollback(settings))
    _console().print(
        f"[green]rolled back[/]: generation {record.generation} is active again "
        f"(generation {record.previous} kept for {settings.reindex_keep_s:g} s)"
    )
    _wait_serving(settings, record.generation, timeout)


@reindex_app.command()
def status() -> None:
    """Every generation with its role, shape, chunks and lag; the live API replicas."""
    from ragstream import reindex, reindex_progress

    settings = Settings()
    found = _run(reindex_progress.read_status(settings))
    table = Table(title=f"index generations on {settings.control_topic}")
    for column in (
        "generation",
        "role",
        "model",
        "chunk size",
        "overlap",
        "precision",
        "chunks",
        "lag",
        "note",
    ):
        table.add_column(column, justify="right" if column in ("chunks", "lag", "generation") else "left")
    for g in found.generations:
        shape = g.generation.shape
        note = ""
        if g.drop_at is not None:
            note = f"dropped at {reindex.when(g.drop_at)}"
        elif g.role == "building":
            note = f"building since {reindex.when(g.generation.created_at)}"
        table.add_row(
            str(g.generation.number),
            g.role,
            shape.model,
            str(shape.chunk_size),
            str(shape.chunk_overlap),
            shape.precision,
            "-" if g.chunks is None else str(g.chunks),
            "-" if g.lag is None else str(g.lag),
            note,
        )
    console = _console()
    console.print(table)
    replicas = Table(title="API replicas (heartbeats)")
    for column in ("replica", "serving", "ready", "last heartbeat", "live"):
        replicas.add_column(column)
    for r in found.replicas:
        age = found.read_at - r.at
        live = "yes" if age <= reindex.REPLICA_LIVE_S else "no"
        ready = ", ".join(map(str, r.ready)) or "-"
        replicas.add_row(r.replica, str(r.serving), ready, f"{age:.0f} s ago", live)
    if found.replicas:
        console.print(replicas)
    else:
        console.print("no API replica has sent a heartbeat")
