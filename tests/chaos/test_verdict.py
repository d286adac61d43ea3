"""The chaos suite's own logic: schedules rerun exactly, the ledger judges right."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from tests.chaos.ledger import Ledger
from tests.chaos.schedule import FAULT_KINDS, fingerprint, make_schedule, parse_kinds


def test_a_seed_gives_the_same_schedule_every_time() -> None:
    first = make_schedule(42, 300, FAULT_KINDS)
    assert make_schedule(42, 300, FAULT_KINDS) == first
    assert fingerprint(make_schedule(43, 300, FAULT_KINDS)) != fingerprint(first)


def test_a_schedule_injects_every_kind_first_and_stays_in_its_time() -> None:
    faults = make_schedule(7, 300, FAULT_KINDS)
    assert {f.kind for f in faults[: len(FAULT_KINDS)]} == set(FAULT_KINDS)
    assert all(f.at + f.hold <= 300 for f in faults)
    assert all(a.at + a.hold < b.at for a, b in itertools.pairwise(faults))


def test_fault_kinds_are_chosen_by_name() -> None:
    assert parse_kinds("nats-kill, oversize") == ("nats-kill", "oversize")
    assert parse_kinds("all") == FAULT_KINDS
    with pytest.raises(ValueError, match="unknown fault kind\\(s\\) nats-explode"):
        parse_kinds("nats-kill,nats-explode")


def test_ledger_counts_lost_duplicated_refused_and_extra() -> None:
    ledger = Ledger()
    for alert_id, path in [("a", "http"), ("b", "http"), ("c", "http"), ("d", "http")]:
        ledger.sent(alert_id, path)
    ledger.answered("a", 200)
    ledger.answered("b", 200)
    ledger.answered("c", 503)
    ledger.dropped("d")
    ledger.sent("g", "grpc")  # never handed over: left in Falco's queue
    tally = ledger.tally(Counter({"a": 2, "d": 1, "zz": 1}))
    assert (tally.accepted, tally.stored, tally.lost, tally.duplicated) == (2, 1, 1, 1)
    assert tally.lost_by_path == {"http": 1}
    assert (tally.refused, tally.dropped, tally.not_handed) == (1, 1, 1)
    assert tally.extra == 2  # "d" had no answer, "zz" was never sent


def test_only_the_unread_tail_of_a_killed_connection_is_in_transit() -> None:
    ledger = Ledger()
    names = ("skipped", "stored", "tail-1", "tail-2", "dead-peer", "next-gateway", "no-kill")
    for alert_id in names:
        ledger.sent(alert_id, "grpc")
    ledger.handed("skipped", 10.0)  # a later alert of the same connection is stored: skipped
    ledger.handed("stored", 11.0)
    ledger.handed("tail-1", 14.0)  # on the stream, unread, when the gateway was killed
    ledger.handed("tail-2", 14.5)
    ledger.killed("gateway", started=1.0, at=15.0)
    ledger.handed("dead-peer", 15.5)  # written onto the dead connection before Falco noticed
    ledger.restarted("gateway", at=16.0)
    ledger.handed("next-gateway", 17.0)  # handed to the next gateway, which must have it
    ledger.handed("no-kill", 30.0)
    tally = ledger.tally(Counter({"stored": 1}))
    assert (tally.in_transit, tally.lost, tally.stored) == (3, 3, 1)
    assert tally.transit_span == (-1.0, 0.5)
    assert tally.in_transit_after_kill == 1


def test_a_falco_kill_also_takes_its_unread_tail() -> None:
    ledger = Ledger()
    ledger.sent("t", "grpc")
    ledger.handed("t", 5.0)
    ledger.killed("falco", started=0.0, at=5.1)
    assert ledger.tally(Counter()).in_transit == 1


def test_an_http_alert_is_never_in_transit() -> None:
    ledger = Ledger()
    ledger.sent("h", "http")
    ledger.answered("h", 200)
    ledger.killed("gateway", started=0.0, at=1e12)
    assert ledger.tally(Counter()).lost == 1
