"""The ``ragstream`` command as a user runs it: in a process of its own, from the repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["REPO", "ragstream"]

REPO = Path(__file__).resolve().parents[2]


def ragstream(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``ragstream ARGS`` with ``env``; its output captured, its exit code not checked."""
    return subprocess.run(
        [sys.executable, "-m", "ragstream", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
