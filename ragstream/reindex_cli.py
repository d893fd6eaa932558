"""``ragstream reindex``: build a new index generation beside the active one, then switch to it."""

from __future__ import annotations

import typer

reindex_app = typer.Typer(
    help="Rebuild the index with another model, chunking or precision while the active one serves, "
    "then switch every replica to it at once."
)
