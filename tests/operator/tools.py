"""What the operator-kit tests share: where the rules and the dashboard live, and Prometheus's
binaries (Debian's `prometheus` package brings both)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_FILES = ROOT / "charts" / "falco-nats-gateway" / "files"
RULES = CHART_FILES / "prometheus-rules.yaml"
DASHBOARD = CHART_FILES / "grafana-dashboard.json"
DEPLOY_RULES = ROOT / "deploy" / "prometheus-rules.yaml"
DEPLOY_DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
RUNBOOK = ROOT / "docs" / "runbook.md"

_LABEL_REF = re.compile(r"\{\{ \$labels\.([a-z_]+) \}\}")


def prometheus_tool(name: str) -> str:
    """The path of `name` (prometheus or promtool). Missing, the test is skipped saying how to
    get it; with REQUIRE_PROMETHEUS=1 (set by .ci/run) it fails instead, so CI cannot pass
    without running it."""
    found = shutil.which(name)
    if found:
        return found
    message = (
        f"{name} is not on PATH: install Debian/Ubuntu's `prometheus` package "
        "(apt-get install prometheus, which brings prometheus and promtool) or a release from "
        "https://prometheus.io/download/; .ci/run installs it"
    )
    if os.environ.get("REQUIRE_PROMETHEUS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the shipped file, in order."""
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"] if "alert" in rule]


def expand_annotations(annotations: dict[str, str], labels: dict[str, str]) -> dict[str, str]:
    """The annotations as Prometheus renders them for an alert with `labels`. The rules use no
    template construct but `{{ $labels.<name> }}` (test_rules checks), so this is exact."""
    return {
        key: _LABEL_REF.sub(lambda m: labels[m.group(1)], text) for key, text in annotations.items()
    }
