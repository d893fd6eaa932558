"""The Grafana dashboard in deploy/grafana/: committed as its script builds it, every query valid PromQL."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml
from prometheus_files import GRAFANA_DIR, load_dashboard_builder


def test_the_committed_dashboard_is_what_its_script_builds() -> None:
    builder = load_dashboard_builder()

    assert (GRAFANA_DIR / "ragstream.json").read_text() == builder.render(), (
        "run: .venv/bin/python deploy/grafana/build_dashboard.py"
    )


def test_the_dashboard_shows_each_figure_an_operator_watches() -> None:
    board = json.loads((GRAFANA_DIR / "ragstream.json").read_text())

    titles = [panel["title"] for panel in board["panels"]]

    assert titles == [
        "Throughput per hop",
        "Lag",
        "Freshness per event",
        "Oldest waiting event",
        "Search latency per mode",
        "Dead letters",
        "Consumer actors",
        "API replicas",
    ]
    assert all(panel["targets"] for panel in board["panels"])


def test_every_panel_query_is_valid_promql(promtool: Path, tmp_path: Path) -> None:
    # promtool parses bare expressions nowhere, but checks every rule's: one recording rule a query.
    queries = load_dashboard_builder().queries()
    rules = {
        "groups": [
            {
                "name": "dashboard-queries",
                "rules": [{"record": f"dashboard:query_{n}", "expr": expr} for n, expr in enumerate(queries)],
            }
        ]
    }
    rules_file = tmp_path / "dashboard-queries.yml"
    rules_file.write_text(yaml.safe_dump(rules))

    checked = subprocess.run(
        [str(promtool), "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(queries)} rules found" in checked.stdout
