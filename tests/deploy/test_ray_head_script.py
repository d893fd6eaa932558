"""deploy/k8s/ray-head.sh, the RayService head's command, against stand-ins for Ray and ragstream:
it starts the consumers' controller once the head answers, and a SIGTERM stops the controller
(which then finishes its batches) before Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "ray-head.sh"

FAKE_RAY = """#!/usr/bin/env bash
echo "ray $*" >> "$LOG"
if [ "$1" = stop ]; then kill "$(cat "$HEAD_PID")"; fi
exit 0
"""
FAKE_RAY_HEAD = """#!/usr/bin/env bash
echo $$ > "$HEAD_PID"
exec sleep 300
"""
FAKE_RAGSTREAM = """#!/usr/bin/env bash
echo "consume started RAY_ADDRESS=$RAY_ADDRESS" >> "$LOG"
trap 'echo "consume stopped by TERM" >> "$LOG"; exit 0' TERM
while true; do sleep 0.1; done
"""


def _wait_for(path: Path, text: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in {path}: {path.read_text() if path.exists() else ''}")


def test_sigterm_stops_the_consumers_controller_then_ray_and_exits_cleanly(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("ray", FAKE_RAY), ("ragstream", FAKE_RAGSTREAM), ("ray-head", FAKE_RAY_HEAD)):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "log"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LOG": str(log),
        "HEAD_PID": str(tmp_path / "head.pid"),
        # What KubeRay hands over: a `ray start --block` that lives as long as the head.
        "KUBERAY_GEN_RAY_START_CMD": "ray-head",
    }
    script = subprocess.Popen(["bash", str(SCRIPT)], env=env)
    try:
        _wait_for(log, "consume started RAY_ADDRESS=127.0.0.1:6379")
        script.send_signal(signal.SIGTERM)
        assert script.wait(timeout=20) == 0
    finally:
        script.kill()
    lines = log.read_text().splitlines()
    assert lines.index("consume stopped by TERM") < lines.index("ray stop")
