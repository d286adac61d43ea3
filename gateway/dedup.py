"""Drop the second copy of an alert that Falco sent both by gRPC and by HTTP.

A Falco with both exits on delivers every alert twice, by paths of different
speed. The first copy to arrive is kept; a copy with the same alert id within
`window` seconds is a duplicate. Memory is bounded by `max_entries`: past it
the oldest ids are forgotten early (and counted), never the alert itself.

Layout. At thousands of alerts a second every id is inside the window, so an
OrderedDict of ids grew the gateway's RSS by ~220 bytes an id (its entry and
the id string it kept alive). Here every byte is allocated once, at
construction, and traffic never allocates more:

- an open-addressing table (linear probing) of `capacity` slots, the next
  power of two >= 2 * max_entries (live ids fill at most half of it). A slot
  is 20 bytes: the id's 128-bit BLAKE2b digest as two 64-bit words in one
  `array('Q')`, and a 32-bit epoch stamp in an `array('I')`, 0 meaning empty.
  The default 250,000 ids take 524,288 slots: 10 MiB (10,485,760 bytes),
  against ~55 MB for a full dict; `window <= 0` allocates none of it;
- a ring of `max_epochs` small per-epoch records (time bucket, live count).

Epochs. Time is cut into buckets of window / 128 seconds (time that goes
backwards is held at the last bucket seen). An id belongs to the epoch that
was current when it was first seen; an epoch takes ids of one bucket only,
and at most `chunk` = ceil(max_entries / 64) of them. An id is remembered
while `current bucket - its bucket <= 128`: never less than `window` seconds,
at most one bucket (window / 128) more. Epochs expire, and are evicted, whole
and oldest first, which only needs their live counts: past `max_entries` the
oldest epoch goes (at most `chunk` ids, counted in `evicted_early`), never the
current one, which holds at most `chunk` <= max_entries ids. The ring also
caps the epochs alive at once (only reachable when ids are forgotten in bulk):
opening one more evicts the oldest.

Reclaiming slots. An epoch dies by moving the horizon, without touching its
slots; `forget` stamps a slot with an epoch already dead. A dead slot still
holds its probe chain together, so lookups step over it (and inserts reuse the
first one they pass). Every insert then sweeps the next `sweep_step` (8) slots
of a rotating cursor, deleting the dead ones by backward shift (Knuth's
Algorithm R), so no full rebuild ever stalls the event loop. Only the sweep
moves entries, and only backward to no earlier than its cursor, so each slot
is examined at least once every capacity / 8 inserts. Hence:

- the table never fills up: an occupied slot holds an id that was either
  inserted within the last capacity / 8 inserts or alive before them, so an
  insert finds at most max_entries + capacity / 8 slots occupied: 5/8 of the
  table at worst (53% measured at 5,000 alerts/s, with eviction);
- a dead slot is gone within capacity / 8 inserts, while an epoch number
  (stamps count modulo 2**32 - 1, and at most one epoch opens per insert)
  comes back only after ~4 billion inserts: a stale stamp never comes to life.

Collisions. Two ids are confused only if their 128-bit digests are equal: with
n = 250,000 remembered, a new id matches one with probability n / 2**128, so
below 1e-21 after 1e12 alerts.
"""

from __future__ import annotations

import hashlib
import struct
import time
from array import array

_digest = hashlib.blake2b
# Both 64-bit halves of the digest in one call, cheaper than int.from_bytes and shifts.
_halves = struct.Struct("<QQ").unpack


class DedupWindow:
    # Class attributes, not arguments, so that tests can shrink them in a subclass to reach
    # wrap-around and ring-cap cases in a few hundred steps; the constructor checks them.
    _buckets_per_window = 128  # expiry granularity: window / 128 (0.94 s of 120 s)
    _eviction_steps = 64  # eviction drops at most max_entries / 64 ids at once
    _sweep_step = 8  # slots examined per insert; bounds dead slots to capacity / 8
    _min_capacity = 16
    _epoch_mod = 2**32 - 1  # stamps 1.._epoch_mod; 0 is the empty slot

    def __init__(self, window: float = 120.0, max_entries: int = 250_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self.evicted_early = 0
        self._len = 0
        # `window > 0` rather than `not window <= 0`: a NaN window turns dedup off too.
        self._on = window > 0
        # Slot i: the digest's high word (whose low bits are its home slot) at 2i, low at 2i+1.
        self._keys = array("Q")
        self._stamps = array("I")
        self._mask = 0
        self._cursor = 0
        self._width = 1.0
        self._bucket = 0
        self._chunk = 1
        self._max_epochs = 1
        self._ep_bucket: list[int] = []
        self._ep_live: list[int] = []
        # Epochs are numbered 1, 2, ... without end; the alive ones are horizon..current
        # (`_alive` of them); a slot holds an epoch's number modulo _epoch_mod, plus 1.
        self._current = 0
        self._alive = 0
        self._first_stamp = 1  # the stamp of the horizon epoch
        self._current_stamp = 1
        self._current_slot = 0
        # Ids the current epoch may still take: 0 once it is full, dead or of an older bucket.
        self._room = 0
        if not self._on:
            return
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        step = self._sweep_step
        if step < 2:
            raise ValueError(f"sweep step {step} cannot keep up with the inserts")
        capacity = self._min_capacity
        # Twice max_entries, and (for tiny tables) room for what the sweep leaves behind.
        while capacity < 2 * max_entries or max_entries + capacity // step >= capacity:
            capacity *= 2
        self._width = window / self._buckets_per_window
        self._chunk = -(-max_entries // self._eviction_steps)
        # Enough for every bucket of a window plus every full epoch that max_entries allows.
        self._max_epochs = self._buckets_per_window + self._eviction_steps + 4
        if not self._width > 0:
            raise ValueError(f"window {window} is too small")
        if capacity % step:
            raise ValueError(f"sweep step {step} does not divide the capacity {capacity}")
        if capacity // step + 2 >= self._epoch_mod - self._max_epochs:
            raise ValueError(f"max_entries {max_entries} is too large for 32-bit epoch stamps")
        # Repeating writes every page now: the RSS is taken at start-up, not as traffic grows.
        self._keys = array("Q", [0]) * (2 * capacity)
        self._stamps = array("I", [0]) * capacity
        self._mask = capacity - 1
        self._ep_bucket = [0] * self._max_epochs
        self._ep_live = [0] * self._max_epochs
        self._bucket = -(2**63)  # before any time: the first call moves to its bucket

    def __len__(self) -> int:
        """Ids remembered now: a counter, as it is exported as a gauge."""
        return self._len

    def is_duplicate(self, alert_id: str, now: float | None = None) -> bool:
        """True if `alert_id` was seen within the window; otherwise remember it."""
        if not self._on:
            return False
        bucket = int((time.monotonic() if now is None else now) // self._width)
        if bucket > self._bucket:
            self._expire(bucket)
        # Inlined (no helper calls): this runs for every alert on the event loop.
        hi, lo = _halves(_digest(alert_id.encode(), digest_size=16).digest())
        keys, stamps, mask = self._keys, self._stamps, self._mask
        first, alive, modulus = self._first_stamp, self._alive, self._epoch_mod
        i = hi & mask
        free = -1  # the first dead slot on the way, to reuse
        while s := stamps[i]:
            if keys[2 * i] == hi and keys[2 * i + 1] == lo:
                if (s - first) % modulus < alive:
                    return True
                free = i  # its own dead slot: the only one with this key
                break
            if free < 0 and (s - first) % modulus >= alive:
                free = i
            i = (i + 1) & mask
        if free < 0:
            free = i
        if not self._room:
            self._open_epoch()
        self._room -= 1
        keys[2 * free] = hi
        keys[2 * free + 1] = lo
        stamps[free] = self._current_stamp
        self._ep_live[self._current_slot] += 1
        self._len += 1
        if self._len > self.max_entries:
            self._evict()
        self._sweep()
        return False

    def remember(self, alert_id: str, now: float | None = None) -> None:
        """Record an id without asking (alerts recovered from the spool at start-up).

        An id already remembered keeps the time it was first seen.
        """
        self.is_duplicate(alert_id, now)

    def forget(self, alert_id: str) -> None:
        """Remove `alert_id`, so that a refused alert's retry is not a duplicate."""
        if not self._on:
            return
        hi, lo = _halves(_digest(alert_id.encode(), digest_size=16).digest())
        keys, stamps, mask = self._keys, self._stamps, self._mask
        modulus = self._epoch_mod
        i = hi & mask
        while s := stamps[i]:
            if keys[2 * i] == hi and keys[2 * i + 1] == lo:
                offset = (s - self._first_stamp) % modulus
                if offset < self._alive:
                    horizon = self._current - self._alive + 1
                    self._ep_live[(horizon + offset) % self._max_epochs] -= 1
                    self._len -= 1
                    # The number of the epoch just before the horizon: dead, and (like any
                    # dead epoch's) not reused before the sweep has deleted this slot.
                    stamps[i] = (horizon - 1) % modulus + 1
                return
            i = (i + 1) & mask

    def _open_epoch(self) -> None:
        if self._alive == self._max_epochs:
            self._drop_oldest(evict=True)
        self._current += 1
        self._alive += 1
        slot = self._current_slot = self._current % self._max_epochs
        self._ep_bucket[slot] = self._bucket
        self._ep_live[slot] = 0
        self._room = self._chunk
        self._current_stamp = self._current % self._epoch_mod + 1
        self._first_stamp = (self._current - self._alive + 1) % self._epoch_mod + 1

    def _drop_oldest(self, *, evict: bool) -> None:
        """Move the horizon past the oldest epoch; the sweep reclaims its slots later."""
        horizon = self._current - self._alive + 1
        live = self._ep_live[horizon % self._max_epochs]
        self._len -= live
        if evict:
            self.evicted_early += live
        self._alive -= 1
        self._first_stamp = (horizon + 1) % self._epoch_mod + 1
        if not self._alive:
            self._room = 0  # the current epoch itself is gone

    def _expire(self, bucket: int) -> None:
        self._bucket = bucket
        self._room = 0  # the current epoch belongs to an older bucket
        oldest_kept = bucket - self._buckets_per_window
        ep_bucket, max_epochs = self._ep_bucket, self._max_epochs
        while self._alive:
            horizon = self._current - self._alive + 1
            if ep_bucket[horizon % max_epochs] >= oldest_kept:
                break
            self._drop_oldest(evict=False)

    def _evict(self) -> None:
        # Stops before the current epoch: it holds at most chunk <= max_entries ids.
        while self._len > self.max_entries:
            self._drop_oldest(evict=True)

    def _sweep(self) -> None:
        """Delete the dead entries of the next `sweep_step` slots, by backward shift.

        Knuth's Algorithm R, inlined (about one deletion per insert in a steady state): the
        entries after the hole, up to the next empty slot, move back into it when that keeps
        them on their probe path, so the table holds no tombstones and chains stay short.
        """
        stamps, step, mask = self._stamps, self._sweep_step, self._mask
        first, alive, modulus = self._first_stamp, self._alive, self._epoch_mod
        p = self._cursor
        self._cursor = (p + step) & mask
        # Iterating a slice (a short-lived copy of `step` stamps) costs half as much as
        # indexing slot by slot, and many blocks hold nothing dead.
        for s in stamps[p : p + step]:
            if s and (s - first) % modulus >= alive:
                break
        else:
            return
        keys = self._keys
        for q in range(p, p + step):  # the cursor is a multiple of step: no wrap-around
            while (s := stamps[q]) and (s - first) % modulus >= alive:
                # Empty q; a dead entry may shift into it, so look at q again.
                hole = q
                j = (q + 1) & mask
                while t := stamps[j]:
                    # The entry at j may fill the hole if the hole is on its probe path.
                    if (j - (keys[2 * j] & mask)) & mask >= (j - hole) & mask:
                        keys[2 * hole] = keys[2 * j]
                        keys[2 * hole + 1] = keys[2 * j + 1]
                        stamps[hole] = t
                        hole = j
                    j = (j + 1) & mask
                stamps[hole] = 0
