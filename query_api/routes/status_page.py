"""The status page on ``GET /``: a search box, the pipeline's lag, events/s, freshness and
consumer actors, live, and a form that traces one document through every hop ("why is my edit
not searchable yet?").

The page is one static file that calls the JSON API from the browser (``/v1/search``,
``/v1/freshness``, ``/v1/stats`` and ``/v1/trace/{doc_id}``), so it needs no build step and shows
exactly what any other client of the API would get.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

__all__ = ["router"]

PAGE = Path(__file__).parents[1] / "static" / "index.html"

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def status_page() -> HTMLResponse:
    return HTMLResponse(_page())


@cache
def _page() -> str:
    return PAGE.read_text(encoding="utf-8")
