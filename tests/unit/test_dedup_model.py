"""DedupWindow's hash table against a plain-Python reference of the same semantics.

The reference keeps the epochs that gateway/dedup.py documents as a list of sets of ids:
an id is remembered while `bucket(now) - bucket(first seen) <= buckets_per_window`
(buckets of window / buckets_per_window seconds, time held at the last bucket seen); an
epoch takes ids of one bucket, at most `chunk` of them; past max_entries (or past
max_epochs epochs alive) the oldest epoch goes, counted in evicted_early. Any difference in
an answer, in len() or in evicted_early is a bug of the table (probing, backward-shift
deletion, the sweep, wrap-around of epoch stamps), not of the semantics. After every step
the table must also hold at most max_entries + capacity / sweep_step occupied slots (the
documented bound that keeps it from filling up) in the buffers allocated at construction.

The default run takes a few seconds; FUZZ_EXAMPLES=5000 (for example) runs longer.
"""

from __future__ import annotations

import gc
import hashlib
import os
import random
import struct
import tracemalloc
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.dedup import DedupWindow

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Tiny(DedupWindow):
    """Every limit small, so that a few hundred steps reach what production reaches in days:
    4 buckets a window, eviction by halves, a 4-slot sweep, epoch stamps modulo 61 (they wrap
    around every 61 epochs) and a ring of 10 epochs (forgetting in bulk fills it)."""

    _buckets_per_window = 4
    _eviction_steps = 2
    _sweep_step = 4
    _min_capacity = 8
    _epoch_mod = 61


TINY_MAX_ENTRIES = 64  # the most that Tiny's 61 stamp values allow (the constructor checks)


def _home(alert_id: str) -> int:
    """The id's home slot in any table of at most 128 slots (the table's hash, as in dedup)."""
    digest = hashlib.blake2b(alert_id.encode(), digest_size=16).digest()
    high: int = struct.unpack("<QQ", digest)[0]
    return high & 127


# Ids that all start probing at slot 0 of any table of <= 128 slots: one long cluster that
# wraps around the end of the table, the worst case for probing and backward shift.
COLLIDING = [a for a in (f"c-{i}" for i in range(40_000)) if _home(a) == 0]
POOL = [f"id-{i}" for i in range(24)] + COLLIDING[:24]


@dataclass
class _Epoch:
    bucket: int
    ids: set[str] = field(default_factory=set)


@dataclass
class Reference:
    """The documented semantics, with no concern for memory or speed."""

    window: float
    max_entries: int
    buckets_per_window: int
    eviction_steps: int
    epochs: list[_Epoch] = field(default_factory=list)
    bucket: int | None = None
    room: int = 0
    evicted_early: int = 0

    @property
    def width(self) -> float:
        return self.window / self.buckets_per_window

    @property
    def chunk(self) -> int:
        return -(-self.max_entries // self.eviction_steps)

    @property
    def max_epochs(self) -> int:
        return self.buckets_per_window + self.eviction_steps + 4

    @classmethod
    def like(cls, window: DedupWindow) -> Reference:
        return cls(
            window.window,
            window.max_entries,
            type(window)._buckets_per_window,
            type(window)._eviction_steps,
        )

    def __len__(self) -> int:
        return sum(len(e.ids) for e in self.epochs)

    def is_duplicate(self, alert_id: str, now: float) -> bool:
        bucket = int(now // self.width)
        if self.bucket is None or bucket > self.bucket:
            self.bucket = bucket
            self.room = 0
            while self.epochs and self.epochs[0].bucket < bucket - self.buckets_per_window:
                del self.epochs[0]
        if any(alert_id in e.ids for e in self.epochs):
            return True
        if not self.room or not self.epochs:
            if len(self.epochs) == self.max_epochs:
                self.evicted_early += len(self.epochs.pop(0).ids)
            self.epochs.append(_Epoch(self.bucket))
            self.room = self.chunk
        self.epochs[-1].ids.add(alert_id)
        self.room -= 1
        while len(self) > self.max_entries:
            self.evicted_early += len(self.epochs.pop(0).ids)
        return False

    def forget(self, alert_id: str) -> None:
        for epoch in self.epochs:
            epoch.ids.discard(alert_id)


def _occupied(window: DedupWindow) -> int:
    return len(window._stamps) - window._stamps.count(0)


def _buffers(window: DedupWindow) -> tuple[object, ...]:
    return (
        window._keys.buffer_info(),
        window._stamps.buffer_info(),
        id(window._ep_bucket),
        len(window._ep_bucket),
        id(window._ep_live),
        len(window._ep_live),
    )


class Run:
    """Drives a DedupWindow and its Reference in step, checking them after every step."""

    def __init__(self, window: DedupWindow) -> None:
        self.window = window
        self.ref = Reference.like(window)
        self.buffers = _buffers(window)
        self.bound = window.max_entries + len(window._stamps) // type(window)._sweep_step
        assert (window._chunk, window._max_epochs) == (self.ref.chunk, self.ref.max_epochs)
        assert window._width == self.ref.width

    def is_duplicate(self, alert_id: str, now: float) -> bool:
        answer = self.window.is_duplicate(alert_id, now=now)
        assert answer == self.ref.is_duplicate(alert_id, now), (alert_id, now)
        if not answer:  # eviction never drops the id just remembered
            assert alert_id in self.ref.epochs[-1].ids
        self.check()
        return answer

    def remember(self, alert_id: str, now: float) -> None:
        self.window.remember(alert_id, now=now)
        self.ref.is_duplicate(alert_id, now)
        self.check()

    def forget(self, alert_id: str) -> None:
        self.window.forget(alert_id)
        self.ref.forget(alert_id)
        self.check()

    def check(self) -> None:
        window = self.window
        assert len(window) == len(self.ref)
        assert len(window) <= window.max_entries
        assert window.evicted_early == self.ref.evicted_early
        assert _occupied(window) <= self.bound
        assert _buffers(window) == self.buffers


# Time steps in windows: none, a little, about a bucket, about a window, past it, far past
# it, and a little backwards (time held at the last bucket seen).
time_steps = st.one_of(
    st.sampled_from([0.0, 0.0, 0.0, 0.001, 1 / 128, 1 / 4, 0.5, 1.0, 1 + 1 / 128, 1.25, 3.0]),
    st.floats(min_value=-0.05, max_value=2.5),
)
steps = st.lists(
    st.tuples(
        st.sampled_from(["dup", "dup", "dup", "remember", "forget", "burst", "colliding", "churn"]),
        st.integers(min_value=0, max_value=len(POOL) - 1),
        time_steps,
    ),
    max_size=120,
)


@FUZZ
@given(
    tiny=st.booleans(),
    window_seconds=st.sampled_from([0.5, 1.0, 7.3, 120.0]),
    max_entries=st.sampled_from([1, 2, 3, 8, 20, TINY_MAX_ENTRIES, 1000]),
    start=st.sampled_from([0.0, 1000.25, 1e6]),
    script=steps,
)
def test_table_answers_as_the_reference(
    tiny: bool,
    window_seconds: float,
    max_entries: int,
    start: float,
    script: list[tuple[str, int, float]],
) -> None:
    if tiny:
        max_entries = min(max_entries, TINY_MAX_ENTRIES)
    run = Run((Tiny if tiny else DedupWindow)(window_seconds, max_entries))
    now = start
    fresh = 0
    for op, index, step in script:
        now += step * window_seconds
        alert_id = POOL[index]
        if op == "dup":
            run.is_duplicate(alert_id, now)
        elif op == "remember":
            run.remember(alert_id, now)
        elif op == "forget":
            run.forget(alert_id)
        else:
            # Many new ids at once, to reach eviction; `colliding` ones form a single cluster;
            # `churn` forgets each at once, which opens epochs without filling them up (and
            # so reaches the cap on epochs alive).
            for _ in range(index + max_entries // 4):
                fresh += 1
                burst_id = COLLIDING[fresh % len(COLLIDING)] if op == "colliding" else f"f-{fresh}"
                run.is_duplicate(burst_id, now)
                if op == "churn":
                    run.forget(burst_id)


@FUZZ
@given(
    window_seconds=st.floats(min_value=0.001, max_value=1e4),
    first_seen=st.floats(min_value=0.0, max_value=1e6),
    fraction=st.floats(min_value=0.0, max_value=1.0),
)
def test_remembered_for_the_window_and_at_most_one_bucket_more(
    window_seconds: float, first_seen: float, fraction: float
) -> None:
    # The margins (a millionth) only keep float rounding out of the way.
    window = DedupWindow(window_seconds, 1000)
    bucket = window_seconds / DedupWindow._buckets_per_window
    assert not window.is_duplicate("a", now=first_seen)
    assert window.is_duplicate("a", now=first_seen + fraction * window_seconds * (1 - 1e-6))
    assert not window.is_duplicate("a", now=first_seen + (window_seconds + bucket) * (1 + 1e-6))


@pytest.mark.parametrize(
    ("cls", "max_entries", "window_seconds", "pace"),
    [(Tiny, TINY_MAX_ENTRIES, 1.0, 1.0), (Tiny, 3, 1.0, 1.0), (DedupWindow, 1000, 120.0, 0.005)],
)
def test_long_random_run_against_the_reference(
    cls: type[DedupWindow], max_entries: int, window_seconds: float, pace: float
) -> None:
    """Thousands of steps: with deletion or the sweep broken, the table would fill up (and an
    insert would loop forever) long before the end; with Tiny, stamps wrap around often."""
    rng = random.Random(20240601 + max_entries)  # noqa: S311 - a reproducible script, not secrets
    run = Run(cls(window_seconds, max_entries))
    pool = [f"r-{i}" for i in range(3 * max_entries)] + COLLIDING
    now = 0.0
    for _ in range(30_000):
        roll = rng.random()
        now += rng.choice([0.0, 0.0, 0.0, 0.0, 0.003, 0.02, 0.3, -0.01]) * window_seconds * pace
        alert_id = rng.choice(pool)
        if roll < 0.75:
            run.is_duplicate(alert_id, now)
        elif roll < 0.85:
            run.remember(alert_id, now)
        else:
            run.forget(alert_id)
    if cls is Tiny:
        assert run.window._current > 10 * Tiny._epoch_mod  # stamps wrapped around many times
    assert run.window.evicted_early > 0


def test_epochs_alive_are_capped() -> None:
    """Ids forgotten as fast as they come open epoch after epoch within one bucket: past
    max_epochs of them, the oldest goes, and an id still in it counts as evicted early."""
    run = Run(Tiny(window=1.0, max_entries=4))  # chunk 2, max_epochs 10
    assert not run.is_duplicate("kept", now=0.0)
    assert not run.is_duplicate("gone", now=0.0)
    run.forget("gone")
    for i in range(Tiny._buckets_per_window + Tiny._eviction_steps + 3):
        for pair in ("x", "y"):
            run.is_duplicate(f"{pair}-{i}", now=0.0)
            run.forget(f"{pair}-{i}")
        assert run.window.evicted_early == 0
        assert run.is_duplicate("kept", now=0.0)
    run.is_duplicate("last", now=0.0)
    assert run.window.evicted_early == 1
    assert not run.is_duplicate("kept", now=0.0)


def test_ten_times_max_entries_over_many_windows() -> None:
    """Bursts past max_entries and quiet spells past the window, from the production class."""
    window = DedupWindow(window=10.0, max_entries=1000)
    capacity = len(window._stamps)
    for i in range(10_000):
        # 2,500 ids in the first second of each 25-second period: eviction, then expiry.
        period, rank = divmod(i, 2500)
        now = period * 25.0 + rank / 2500
        assert not window.is_duplicate(f"id-{i}", now=now)
        assert window.is_duplicate(f"id-{i}", now=now)
        assert len(window) <= 1000
        assert _occupied(window) <= 1000 + capacity // 8
    assert len(window) > 1000 - window._chunk
    assert window.evicted_early == 4 * 2500 - 4 * len(window)
    assert not window.is_duplicate("id-0", now=100.0)


def test_memory_is_allocated_once() -> None:
    window = DedupWindow(window=1.0, max_entries=2000)
    before = _buffers(window)
    capacity = len(window._stamps)
    assert capacity == 4096
    assert len(window._keys) == 2 * capacity

    def use(first: int, last: int) -> None:
        for i in range(first, last):
            window.is_duplicate(f"id-{i}", now=i / 1000)
            if i % 7 == 0:
                window.forget(f"id-{i - 3}")

    use(0, 20_000)  # expiry, eviction, forgetting, some 50 passes of the sweep
    assert _buffers(window) == before
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        use(20_000, 24_000)
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert _buffers(window) == before
    # Only small ints in the epoch records may come and go; the table itself does not grow.
    assert grown < 16_384


def test_zero_window_allocates_nothing() -> None:
    for off in (DedupWindow(window=0), DedupWindow(window=-1), DedupWindow(window=float("nan"))):
        off.remember("a", now=0)
        assert not off.is_duplicate("a", now=0)
        off.forget("a")
        assert len(off) == 0
        assert len(off._keys) == len(off._stamps) == len(off._ep_live) == 0
