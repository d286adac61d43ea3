"""Capped exponential backoff with full jitter, for every reconnect loop."""

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
        # Half fixed, half random: spreads many gateways apart after a NATS or
        # Falco restart without ever retrying at once.
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not crypto

    def reset(self) -> None:
        self._attempt = 0
