"""What the ingest bench's own-process paths (``plain_encode.py``, ``peer_langchain.py``) share:
their command line, and the record of what they ran with.

Imports nothing of ragstream, so that those processes run the libraries as a user gets them;
``ran_with()`` proves it in every result.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

#: What ragstream's embedder sets at import (its kernel-cache caps), and the OpenMP threads Ray
#: sets in its workers: reported back, so that a run that inherited any of them shows it.
WATCHED_ENV = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY", "OMP_NUM_THREADS")
RAGSTREAM_PACKAGES = frozenset(
    {"schemas", "engines", "streams", "consumers", "query_api", "evaluation", "deploy", "ragstream"}
)
#: Chunks encoded before the clock starts: the first calls pay for lazy initialisation, once
#: per process.
WARM_UP_TEXTS = 64


def model_parser(description: str | None, inputs: str) -> argparse.ArgumentParser:
    """The arguments every path takes: its input and result files, and how to run the model."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", type=Path, help=inputs)
    parser.add_argument("result", type=Path, help="where to write the figures as JSON")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    return parser


def offline() -> None:
    """The weights come from a package: never ask the hub (there may be no network)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def ran_with(packages: tuple[str, ...]) -> dict[str, Any]:
    """The interpreter, the packages' versions, the watched variables and any ragstream module
    loaded in this process (there should be none)."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.executable,
        "versions": versions,
        "env": {name: os.environ.get(name) for name in WATCHED_ENV},
        "ragstream_modules": sorted(name for name in sys.modules if name.split(".")[0] in RAGSTREAM_PACKAGES),
    }
