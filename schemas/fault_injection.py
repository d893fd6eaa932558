"""Faults the chaos tests inject into a running pipeline, switched on by environment variables.

Not settings: no deployment sets these, and :class:`schemas.Settings` does not read them. A test
sets the variable in its own environment; the consumer actors it starts get it in their runtime
environment (``fault_injection_env``), and the code where the fault strikes asks here.

``RAGSTREAM_FAULT_CRASH_BEFORE_COMMIT``
    Probability (0 to 1; unset = 0) that a consumer process dies right after its Chroma write and
    before its offset commit, the worst moment for exactly-once: the batch is replayed by whoever
    takes the partition over, and the index must end up the same.
"""

from __future__ import annotations

import os
import random

__all__ = ["CRASH_BEFORE_COMMIT_ENV", "crash_before_commit", "fault_injection_env"]

CRASH_BEFORE_COMMIT_ENV = "RAGSTREAM_FAULT_CRASH_BEFORE_COMMIT"


def fault_injection_env() -> dict[str, str]:
    """The fault variables set in this process, to hand on to the actors it starts (a Ray worker
    does not see the environment of the driver that created it)."""
    return {name: value for name, value in os.environ.items() if name.startswith("RAGSTREAM_FAULT_")}


def crash_before_commit() -> bool:
    """Whether to die now, between the write and the commit (see ``RAGSTREAM_FAULT_CRASH_BEFORE_COMMIT``)."""
    text = os.environ.get(CRASH_BEFORE_COMMIT_ENV)
    if not text:
        return False
    try:
        probability = float(text)
    except ValueError:
        probability = -1.0
    if not 0 <= probability <= 1:
        raise ValueError(f"{CRASH_BEFORE_COMMIT_ENV}={text!r} is not a probability between 0 and 1")
    return random.random() < probability
