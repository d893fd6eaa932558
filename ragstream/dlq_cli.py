"""``ragstream dlq``: look at the dead-letter topic, and send fixed events back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from schemas import Settings

dlq_app = typer.Typer(help="The dead-letter topic: events that could not be indexed, with the reason.")


def _console() -> Console:
    # Made per command, so the terminal width (COLUMNS) is read when the command runs.
    return Console()


WhereOption = Annotated[
    list[str] | None,
    typer.Option(
        "--where", help="FIELD=VALUE or FIELD~TEXT on reason, error_class, key, topic, partition, offset"
    ),
]


def _selected(settings: Settings, where: list[str] | None):
    from streams.dlq import matches, read_dead_letters

    stored = asyncio.run(read_dead_letters(settings.kafka, settings.dlq_topic))
    try:
        return [s for s in stored if matches(s.letter, where or [])]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@dlq_app.command("list")
def list_letters(where: WhereOption = None) -> None:
    """Dead letters, oldest first: when, where from, why."""
    settings = Settings()
    selected = _selected(settings, where)
    table = Table(title=f"{settings.dlq_topic}: {len(selected)} dead letters")
    for column in ("failed at", "from", "key", "error class", "reason", "bytes"):
        table.add_column(column)
    for s in selected:
        letter = s.letter
        when = datetime.fromtimestamp(s.timestamp_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        key = (letter.key or b"").decode(errors="replace")
        origin = f"{letter.topic}[{letter.partition}]@{letter.offset}"
        size = str(len(letter.value or b""))
        table.add_row(when, origin, key, letter.error_class, letter.reason, size)
    _console().print(table)


@dlq_app.command()
def replay(
    where: WhereOption = None, yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False
) -> None:
    """Send the selected dead letters' original bytes back to the events topic (after a fix)."""
    from streams.publisher import EventPublisher

    settings = Settings()
    selected = _selected(settings, where)
    if not selected:
        _console().print("no dead letter matches")
        return
    if not yes:
        typer.confirm(f"send {len(selected)} events back to {settings.events_topic}?", abort=True)

    async def send() -> None:
        async with EventPublisher(settings.kafka, settings.events_topic) as publisher:
            items = [
                ((s.letter.key or b"").decode(errors="replace"), s.letter.value or b"") for s in selected
            ]
            await publisher.publish_raw(items)

    asyncio.run(send())
    _console().print(f"replayed {len(selected)} events to {settings.events_topic}")
