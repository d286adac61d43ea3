"""The dedup window: what counts as seen, for how long, and what it forgets."""

from __future__ import annotations

from gateway.dedup import DedupWindow
from gateway.subject import subject_matches


def test_second_copy_within_the_window_is_a_duplicate() -> None:
    window = DedupWindow(window=120)
    assert not window.is_duplicate("a", now=0)
    assert window.is_duplicate("a", now=60)
    assert not window.is_duplicate("b", now=60)


def test_ids_expire_after_the_window() -> None:
    window = DedupWindow(window=120)
    window.is_duplicate("a", now=0)
    assert not window.is_duplicate("a", now=121)
    assert len(window) == 1


def test_memory_is_bounded() -> None:
    window = DedupWindow(window=120, max_entries=1000)
    for i in range(5000):
        window.is_duplicate(f"id-{i}", now=1)
    assert len(window) == 1000
    assert window.evicted_early == 4000
    assert window.is_duplicate("id-4999", now=2)


def test_eviction_drops_the_oldest_ids_first() -> None:
    # Whole epochs of at most ceil(max_entries / 64) ids go at once, oldest first.
    window = DedupWindow(window=120, max_entries=1000)
    for i in range(5003):
        window.is_duplicate(f"id-{i}", now=1)
    assert 1000 - 16 < len(window) <= 1000
    assert window.evicted_early == 5003 - len(window)
    assert window.is_duplicate("id-5002", now=2)
    assert window.is_duplicate(f"id-{5003 - len(window)}", now=2)
    assert not window.is_duplicate(f"id-{5002 - len(window)}", now=2)


def test_remember_keeps_the_first_sighting() -> None:
    window = DedupWindow(window=120)
    window.remember("a", now=0)
    window.remember("a", now=100)
    assert window.is_duplicate("a", now=120)
    assert not window.is_duplicate("a", now=122)


def test_forget_and_remember() -> None:
    window = DedupWindow(window=120)
    window.is_duplicate("a", now=0)
    window.forget("a")
    assert not window.is_duplicate("a", now=1)
    window.remember("b", now=1)
    assert window.is_duplicate("b", now=2)


def test_zero_window_turns_dedup_off() -> None:
    window = DedupWindow(window=0)
    assert not window.is_duplicate("a")
    assert not window.is_duplicate("a")


def test_subject_matching_as_nats_does() -> None:
    assert subject_matches("falco.>", "falco.notice.terminal_shell_in_container")
    assert not subject_matches("falco.>", "falco")
    assert subject_matches("falco.*.x", "falco.notice.x")
    assert not subject_matches("falco.*", "falco.notice.x")
    assert subject_matches("a.b", "a.b")
    assert not subject_matches("a.b", "a.c")
