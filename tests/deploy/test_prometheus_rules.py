"""The alert rules in deploy/prometheus/, checked and unit-tested with promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from prometheus_files import RULE_TESTS, RULES, RULES_DIR

#: What the issue asks to be alerted on, each by the alert that says it.
EXPECTED_ALERTS = {
    "RagstreamConsumerLagGrowing",
    "RagstreamFreshnessP99Over1s",
    "RagstreamEventWaitingOverAMinute",
    "RagstreamDeadLettersArriving",
    "RagstreamApiReplicaDownOrBehind",
    "RagstreamChangesStageStalled",
    "RagstreamConsumersAtMaxWithLagGrowing",
}


def _promtool(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_rules_file_is_valid(promtool: Path) -> None:
    checked = _promtool(promtool, "check", "rules", RULES.name)

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_fires_and_stays_quiet_as_its_unit_tests_expect(promtool: Path) -> None:
    tested = _promtool(promtool, "test", "rules", RULE_TESTS.name)

    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])

    assert alerts == EXPECTED_ALERTS
    assert firing == alerts
    assert quiet == alerts
