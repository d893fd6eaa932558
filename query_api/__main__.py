"""``python -m query_api``: serve the API with settings from ``RAGSTREAM_*`` variables."""

from __future__ import annotations

import logging

import uvicorn

from query_api.app import create_app
from schemas.settings import Settings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        access_log=settings.api_access_log,
    )


if __name__ == "__main__":
    main()
