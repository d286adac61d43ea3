"""Capped exponential backoff with equal jitter, for every reconnect and restart loop."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    _attempt: int = field(default=0, init=False)

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt: random in [ceiling/2, ceiling]."""
        ceiling = min(self.maximum, self.initial * self.factor**self._attempt)
        self._attempt += 1
        # Equal jitter (half fixed, half random), not full jitter (all random):
        # spreads many gateways apart after a NATS or Falco restart, and never
        # retries at once, as full jitter's zero delay would.
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not crypto

    def reset(self) -> None:
        self._attempt = 0
