"""One process, one Ray session after another: threads that used the first keep submitting in the
next, as a test session's thread pool does and as any long-lived process that joins Ray again may."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

#: Run in a process of its own: Ray's core ends the process (exit 1, no traceback) when two
#: threads number their tasks alike, which is what this guards against.
TWO_SESSIONS = textwrap.dedent(
    """
    from concurrent.futures import ThreadPoolExecutor

    import ray

    from engines.local_ray import join_or_start_ray

    @ray.remote(num_cpus=0)
    class Echo:
        def ping(self):
            return 1

    first, second = ThreadPoolExecutor(1), ThreadPoolExecutor(1)

    first.submit(join_or_start_ray, "first", num_cpus=1).result()
    echo = Echo.remote()
    answers = first.submit(lambda: ray.get([echo.ping.remote() for _ in range(20)])).result()
    print("first session", sum(answers))
    ray.shutdown()

    second.submit(join_or_start_ray, "second", num_cpus=1).result()
    echo = Echo.remote()
    pending = []
    for _ in range(40):  # every thread submits, and every reference stays alive until the end
        pending.append(first.submit(lambda: echo.ping.remote()).result())
        pending.append(second.submit(lambda: echo.ping.remote()).result())
        pending.append(echo.ping.remote())
    print("second session", sum(ray.get(pending)))
    ray.shutdown()
    """
)


def test_threads_that_joined_an_earlier_session_submit_tasks_in_the_next_one_without_a_crash(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", TWO_SESSIONS], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    assert "first session 20" in done.stdout
    assert "second session 120" in done.stdout
