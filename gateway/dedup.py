"""Drop the second copy of an alert that Falco sent both by gRPC and by HTTP.

A Falco with both exits on delivers every alert twice, by paths of different
speed. The first copy to arrive is kept; a copy with the same alert id within
`window` seconds is a duplicate. Memory is bounded by `max_entries`: past it
the oldest ids are forgotten early (and counted), never the alert itself.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class DedupWindow:
    def __init__(self, window: float = 120.0, max_entries: int = 250_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()
        self.evicted_early = 0

    def __len__(self) -> int:
        return len(self._seen)

    def is_duplicate(self, alert_id: str, now: float | None = None) -> bool:
        """True if `alert_id` was seen within the window; otherwise remember it."""
        if self.window <= 0:
            return False
        now = time.monotonic() if now is None else now
        self._expire(now)
        if alert_id in self._seen:
            return True
        self._seen[alert_id] = now
        if len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
            self.evicted_early += 1
        return False

    def remember(self, alert_id: str, now: float | None = None) -> None:
        """Record an id without asking (alerts recovered from the spool at start-up)."""
        if self.window > 0:
            self._seen[alert_id] = time.monotonic() if now is None else now

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        seen = self._seen
        while seen:
            oldest_id, first_seen = next(iter(seen.items()))
            if first_seen > horizon:
                break
            del seen[oldest_id]

    def forget(self, alert_id: str) -> None:
        self._seen.pop(alert_id, None)
