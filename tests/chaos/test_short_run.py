"""The short seeded chaos run inside `make test`: the fault kinds the gateway
survives today (SHORT_RUN_FAULTS), each injected at least once, under load on
both paths; nothing accepted may be lost, duplicated or stuck."""

from __future__ import annotations

import os
from pathlib import Path

from tests.chaos.faults import SHORT_RUN_FAULTS
from tests.chaos.report import details, rerun_command, table
from tests.chaos.run import RunOptions, run_once

# CHAOS_SEED=N reruns the short run with another schedule.
SEED = int(os.environ.get("CHAOS_SEED", "20261202"))


async def test_short_seeded_run_loses_nothing(tmp_path: Path) -> None:
    # Long enough for each kind once (the schedule draws each selected kind first).
    options = RunOptions(seed=SEED, duration=60, kinds=SHORT_RUN_FAULTS, workdir=tmp_path, rate=25)
    result = await run_once(options)
    report = f"{details(result)}\n{table([result])}\nrerun: {rerun_command(result)}"
    print(report)
    assert set(result.injected) == set(SHORT_RUN_FAULTS), report
    assert result.tally.accepted > 0, report
    assert result.passed, report
