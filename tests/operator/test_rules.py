"""The alerting rules: Prometheus loads them (`promtool check rules`), every alert fires on the
series it is meant for and stays quiet on the ones it is not (`promtool test rules`, cases in
rules_test.yaml), says where to look, and has its section in the runbook; the chart's copy and
deploy/'s are the same file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.operator.tools import (
    DEPLOY_RULES,
    RULES,
    RUNBOOK,
    alert_rules,
    expand_annotations,
    prometheus_tool,
)

CASES = Path(__file__).with_name("rules_test.yaml")


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [prometheus_tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def promtool_cases(tmp_path: Path) -> Path:
    """rules_test.yaml with the shipped rules file and, for every expected alert, the
    annotations it must carry."""
    cases: dict[str, Any] = yaml.safe_load(CASES.read_text(encoding="utf-8"))
    annotations = {rule["alert"]: rule["annotations"] for rule in alert_rules()}
    cases["rule_files"] = [str(RULES)]
    for test in cases["tests"]:
        for check in test["alert_rule_test"]:
            for expected in check["exp_alerts"]:
                labels = {"alertname": check["alertname"], **expected["exp_labels"]}
                expected["exp_annotations"] = expand_annotations(
                    annotations[check["alertname"]], labels
                )
    path = tmp_path / "rules_test.yaml"
    path.write_text(yaml.safe_dump(cases, sort_keys=False), encoding="utf-8")
    return path


def test_every_alert_fires_where_meant_and_nowhere_else(tmp_path: Path) -> None:
    result = subprocess.run(
        [prometheus_tool("promtool"), "test", "rules", str(promtool_cases(tmp_path))],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_cases_can_fail(tmp_path: Path) -> None:
    # The same cases against rules that never fire: promtool must say FAILED.
    quiet = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in quiet["groups"]:
        for rule in group["rules"]:
            rule["expr"] = "vector(1) == 2"
    broken = tmp_path / "quiet-rules.yaml"
    broken.write_text(yaml.safe_dump(quiet), encoding="utf-8")
    cases = yaml.safe_load(promtool_cases(tmp_path).read_text(encoding="utf-8"))
    cases["rule_files"] = [str(broken)]
    path = tmp_path / "against-quiet.yaml"
    path.write_text(yaml.safe_dump(cases), encoding="utf-8")
    result = subprocess.run(
        [prometheus_tool("promtool"), "test", "rules", str(path)], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases: dict[str, Any] = yaml.safe_load(CASES.read_text(encoding="utf-8"))
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in cases["tests"]:
        for check in test["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts without a case that fires them"
    # A quiet case is also every series of a firing case that is not in exp_alerts; an
    # explicit empty evaluation per alert makes the "must not fire" case visible.
    assert names - quiet == set(), "alerts without a case where they must stay quiet"


def test_every_alert_is_described_with_where_to_look() -> None:
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook"}, name
        # Only {{ $labels.<name> }}: what expand_annotations renders exactly.
        for text in annotations.values():
            assert re.sub(r"\{\{ \$labels\.[a-z_]+ \}\}", "", text).count("{{") == 0, name
        # A setting, log message or command to look at.
        assert re.search(r"`[^`]+`|msg=\"|[a-z]+_[a-z_]+", annotations["description"]), name
        assert annotations["runbook"] == f"docs/runbook.md#{name.lower()}", name


def test_every_alert_has_a_runbook_section() -> None:
    headings = {
        line.removeprefix("### ").strip().lower()
        for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
        if line.startswith("### ")
    }
    missing = [rule["alert"] for rule in alert_rules() if rule["alert"].lower() not in headings]
    assert missing == []


def test_deploy_has_the_same_rules_as_the_chart() -> None:
    assert DEPLOY_RULES.read_bytes() == RULES.read_bytes(), (
        "deploy/prometheus-rules.yaml differs from the chart's files/prometheus-rules.yaml: "
        "run `python scripts/operator_kit.py`"
    )
