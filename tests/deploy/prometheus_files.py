"""Where the rules and the dashboard live, and Debian's Prometheus tools, for the tests beside this."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

from unavailable import skip_or_fail

__all__ = ["GRAFANA_DIR", "RULES", "RULES_DIR", "RULE_TESTS", "load_dashboard_builder", "prometheus_tool"]

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "deploy" / "prometheus"
RULES = RULES_DIR / "ragstream-rules.yml"
RULE_TESTS = RULES_DIR / "ragstream-rules.test.yml"
GRAFANA_DIR = REPO / "deploy" / "grafana"


def prometheus_tool(name: str) -> Path:
    """The path of ``promtool`` or ``prometheus``; skips without it, or fails under CI=true."""
    found = shutil.which(name)
    if found is not None:
        return Path(found)
    reason = f"{name} is missing: apt-get install prometheus (make test installs it as root)"
    skip_or_fail(reason)


def load_dashboard_builder() -> ModuleType:
    """deploy/grafana/build_dashboard.py, a script rather than part of the installed package."""
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA_DIR / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: its dataclasses look their module up by name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
