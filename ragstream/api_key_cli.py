"""``ragstream api-key``: make query API keys, and the hashed entries the server is configured with."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from schemas.api_keys import ApiKeyEntry, new_api_key

api_key_app = typer.Typer(
    help="API keys of the query API. The server holds only their hashes, in RAGSTREAM_API_KEYS.",
    no_args_is_help=True,
)

TenantOption = Annotated[
    str | None,
    typer.Option(help="bind the key to this tenant: it then reads and writes only the tenant's documents"),
]


def _entry(key: str, tenant: str | None) -> str:
    try:
        return str(ApiKeyEntry.for_key(key, tenant))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tenant") from None


@api_key_app.command()
def new(tenant: TenantOption = None) -> None:
    """Make a random key; print it once, and the entry to add to RAGSTREAM_API_KEYS."""
    key = new_api_key()
    entry = _entry(key, tenant)
    typer.echo(f"key (shown only now; give it to its user): {key}")
    typer.echo(f"entry for RAGSTREAM_API_KEYS (comma-separated): {entry}")


@api_key_app.command(name="hash")
def hash_key(tenant: TenantOption = None) -> None:
    """Read a key on stdin (kept out of the shell history) and print its RAGSTREAM_API_KEYS entry."""
    key = sys.stdin.readline().strip()
    if not key:
        raise typer.BadParameter("no key on stdin", param_hint="stdin")
    typer.echo(_entry(key, tenant))
