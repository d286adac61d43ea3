"""The benchmark's phases (bench.scenarios.parts holds them for now)."""

from bench.scenarios.parts import EXTRA_PHASES, PHASES, Bench, Sizes, own_delays

__all__ = ["EXTRA_PHASES", "PHASES", "Bench", "Sizes", "own_delays"]
