"""Where the gateway's time goes: py-spy samples of the gateway under load, summed up.

py-spy (an optional tool: `pip install 'py-spy>=0.4,<0.5'`) reads the gateway's
stacks from outside the process, so the gateway runs unchanged; the sampling
still slows it somewhat, which is why the profile is its own phase and none of
its figures are reported as measurements. The raw stacks (collapsed format,
one `frame;frame;... count` per line) and a flame graph are written next to
the JSON results; the report prints the functions that take the most time.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


def py_spy() -> str | None:
    beside_python = Path(sys.executable).parent / "py-spy"
    return str(beside_python) if beside_python.exists() else shutil.which("py-spy")


@dataclass(frozen=True)
class Profile:
    samples: int
    self_time: list[tuple[str, int]]  # function, samples with it on top
    inclusive: list[tuple[str, int]]  # gateway function, samples with it anywhere


# The gateway's start-up frames sit under every sample and say nothing.
_ENTRY = ("(gateway/cli.py)", "(gateway/__main__.py)")


def summarise(lines: Iterable[str], top: int = 15) -> Profile:
    """Sum collapsed stacks by function (line numbers dropped)."""
    on_top: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")]
        total += count
        on_top[frames[-1]] += count
        for frame in set(frames):
            if "(gateway/" in frame and not frame.endswith(_ENTRY):
                anywhere[frame] += count
    return Profile(total, on_top.most_common(top), anywhere.most_common(top))


def _function(frame: str) -> str:
    """`render (gateway/payload.py:31)` -> `render (gateway/payload.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0] if ":" in where else where
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    if "/gateway/" in path:
        path = "gateway/" + path.split("/gateway/", 1)[1]
    return f"{name} ({path})" if path else name


def render(profile: Profile, title: str) -> str:
    from bench.report import table

    if not profile.samples:
        return f"{title}: no samples\n"

    def share(count: int) -> str:
        return f"{count / profile.samples:.1%}"

    self_rows = [[name, share(count)] for name, count in profile.self_time]
    incl_rows = [[name, share(count)] for name, count in profile.inclusive]
    return (
        f"{title} ({profile.samples:,} samples)\n\n"
        + table(["function (on top of the stack)", "share of samples"], self_rows)
        + "\n\n"
        + table(["gateway function (anywhere in the stack)", "share of samples"], incl_rows)
        + "\n"
    )
