"""The Grafana dashboard: the committed JSON is what scripts/operator_kit.py generates, in both
places, and is well-formed for Grafana (unique ids, panels on the grid without overlap, every
query on the dashboard's Prometheus variable). test_prometheus.py runs every query."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.operator.tools import DASHBOARD, DEPLOY_DASHBOARD, ROOT


def load() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def test_committed_files_are_what_the_generator_writes() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "operator_kit.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert DEPLOY_DASHBOARD.read_bytes() == DASHBOARD.read_bytes()


def test_panels_sit_on_the_grid_without_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    panels = load()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_query_uses_the_datasource_and_target_variables() -> None:
    dashboard = load()
    variables = [v["name"] for v in dashboard["templating"]["list"]]
    assert variables == ["datasource", "job", "instance"]
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs, panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert 'job=~"$job", instance=~"$instance"' in target["expr"], target["expr"]
            assert target["legendFormat"], panel["title"]


def test_the_panels_the_operators_asked_for_are_there() -> None:
    titles = " | ".join(p["title"] for p in load()["panels"]).lower()
    for words in (
        "by path and outcome",
        "by priority",
        "latency",
        "spool: bytes waiting and the limit",
        "duplicates",
        "nats link",
        "grpc link",
        "undeliverable",
        "rejected",
    ):
        assert words in titles, words
