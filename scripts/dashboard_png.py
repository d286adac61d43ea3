"""Draws the Grafana dashboard's panels, filled with the data of the real-Prometheus test, to a
PNG: the README's picture of the dashboard, made without a Grafana server.

    make dashboard-png
    # or: OPERATOR_KIT_DATA=data.json pytest tests/operator/test_prometheus.py
    #     python scripts/dashboard_png.py data.json docs/dashboard.png

Each panel is laid out where the dashboard's gridPos puts it, with its title, unit and one line
per series, named by the panel's legend format. Time runs in seconds from the test's start.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: a file
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "charts" / "falco-nats-gateway" / "files" / "grafana-dashboard.json"
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
# Grafana's units: a scale and a suffix for the axis label.
_UNITS: dict[str, tuple[float, str]] = {
    "cps": (1, "per second"),
    "s": (1000, "ms"),
    "bytes": (1 / 1024, "KiB"),
    "percentunit": (100, "%"),
    "short": (1, ""),
}


def legend(template: str, labels: dict[str, str]) -> str:
    return _LEGEND.sub(lambda m: labels.get(m[1], ""), template).strip()


def plot_panel(
    ax: Axes, panel: dict[str, Any], queries: list[dict[str, Any]], t0: float, end: float
) -> None:
    step = 0.2  # the test's query_range step
    scale, suffix = _UNITS.get(panel["fieldConfig"]["defaults"]["unit"], (1, ""))
    for query in queries:
        for series in query["series"]:
            times: list[float] = []
            values: list[float] = []
            for t, v in series["values"]:
                # Where a query returned nothing, Grafana leaves a gap: so does this.
                if times and float(t) - t0 - times[-1] > 1.5 * step:
                    times.append(times[-1] + step)
                    values.append(math.nan)
                times.append(float(t) - t0)
                values.append(float(v) * scale)
            ax.plot(times, values, linewidth=1.2, label=legend(query["legend"], series["metric"]))
    ax.set_xlim(0, end - t0)
    ax.set_title(panel["title"], fontsize=9, loc="left")
    ax.set_ylabel(suffix, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=6, loc="upper left", ncols=2, frameon=False)


def draw(data: dict[str, Any], out: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    figure = plt.figure(figsize=(16, rows * 0.42), layout="constrained")
    grid = figure.add_gridspec(rows, 24)
    t0 = float(data["start"])
    for panel in panels:
        pos = panel["gridPos"]
        ax = figure.add_subplot(
            grid[pos["y"] : pos["y"] + pos["h"], pos["x"] : pos["x"] + pos["w"]]
        )
        plot_panel(ax, panel, data["panels"][panel["title"]], t0, float(data["end"]))
        if pos["y"] + pos["h"] == rows:
            ax.set_xlabel("seconds into the test", fontsize=8)
    figure.suptitle(
        "falco-nats-gateway dashboard, from tests/operator/test_prometheus.py: both paths, "
        "stream deleted, Falco and NATS down, Falco flapping, silence",
        fontsize=10,
    )
    figure.savefig(out, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the test's OPERATOR_KIT_DATA file")
    parser.add_argument("out", type=Path, help="the PNG to write")
    args = parser.parse_args()
    draw(json.loads(args.data.read_text(encoding="utf-8")), args.out)


if __name__ == "__main__":
    main()
