"""What a benchmark run measured: figures (repeated samples), correctness checks,
figures that could not be measured, and the JSON written for comparing commits.

Every figure has a stable key (`gateway.http.c16.rate`), so two JSON files from
two commits can be compared key by key (`python -m bench --compare OLD.json`).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.stats import Summary

SCHEMA = 1


@dataclass
class Figure:
    key: str
    label: str
    unit: str
    samples: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def summary(self) -> Summary:
        return Summary.of(self.samples)

    def as_json(self) -> dict[str, Any]:
        s = self.summary
        return {
            "label": self.label,
            "unit": self.unit,
            "median": s.median,
            "min": s.low,
            "max": s.high,
            "spread_pct": s.spread_pct,
            "samples": self.samples,
            "note": self.note,
        }


@dataclass(frozen=True)
class Check:
    """A correctness check of the benchmark itself: what it sent arrived, once."""

    name: str
    ok: bool
    detail: str


@dataclass
class Results:
    figures: dict[str, Figure] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    series: dict[str, list[list[float]]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, label: str, unit: str, value: float, note: str = "") -> None:
        figure = self.figures.setdefault(key, Figure(key, label, unit))
        figure.samples.append(float(value))
        if note:
            figure.note = note

    def median(self, key: str) -> float | None:
        figure = self.figures.get(key)
        return figure.summary.median if figure is not None and figure.samples else None

    def mark_unavailable(self, keys: list[str], reason: str) -> None:
        for key in keys:
            self.unavailable[key] = reason

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def as_json(self, targets: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "meta": self.meta,
            "figures": {k: f.as_json() for k, f in self.figures.items() if f.samples},
            "unavailable": self.unavailable,
            "series": self.series,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "targets": targets,
        }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def load_json(path: Path) -> dict[str, Any]:
    document = orjson.loads(path.read_bytes())
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a benchmark result of schema {SCHEMA}")
    return document


def default_json_path(directory: Path, commit: str, when: datetime.datetime) -> Path:
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    return directory / f"{stamp}-{commit or 'nocommit'}.json"
