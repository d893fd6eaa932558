"""The start-up line a replica logs: its process's age, and each part of its start-up in order."""

from __future__ import annotations

import re
import subprocess
import sys
import time

from query_api.startup_timeline import StartupTimeline


def test_the_process_age_counts_from_the_process_start() -> None:
    code = "import time; time.sleep(1.5); import query_api.startup_timeline as t; print(t.process_age_s())"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    age = float(run.stdout)
    assert 1.5 <= age < 15


def test_the_summary_gives_each_part_in_order_and_the_total() -> None:
    timeline = StartupTimeline()
    time.sleep(0.2)
    timeline.mark("query model")
    time.sleep(0.1)
    timeline.mark("views caught up")

    summary = timeline.summary()

    parts = re.findall(r"(query model|views caught up) (\d+\.\d) s", summary)
    assert [part for part, _ in parts] == ["query model", "views caught up"]
    model_s, views_s = (float(seconds) for _, seconds in parts)
    # Sleeps may overrun on a busy machine, never fall short.
    assert 0.2 <= model_s < 1.0 and 0.1 <= views_s < 1.0
    total = re.search(r"start-up took (\d+\.\d) s", summary)
    assert total and abs(float(total[1]) - (model_s + views_s)) <= 0.1
    assert re.match(r"ready \d+\.\d s after the process started", summary)
