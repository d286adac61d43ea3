"""What became of every alert a chaos run sent, and the verdict against the stream.

An alert is *expected* in the JetStream stream when Falco would consider it
delivered: an HTTP POST answered 2xx (`accepted`, or `duplicate` for a retry of
one already accepted), or a gRPC response the Falco stand-in handed over (popped
from its queue onto the stream). Refusals (4xx, 503) are deliberate and leave
the alert out; so does a POST that got no answer at all (Falco drops it too).

One loss is no fault of the gateway: Falco's gRPC API has no acknowledgement,
so a response already written onto the stream when the gateway is SIGKILLed
(or when Falco itself dies) is gone with the connection. The gateway reads and
spools the stream in order, so what such a kill takes is exactly the tail of
the connection: the alerts handed over after the last one of that connection
that reached the stream, up to the restart of the killed process (until the
stand-in notices the peer is gone it still writes onto the dead connection, as
Falco does; only the gateway pops the queue, so nothing handed over before the
restart went anywhere else). A lost gRPC alert in such a tail is counted in its
own column, `in_transit`, not as `lost`; one followed by a stored alert of the
same connection was skipped by the gateway, and is lost.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field

# Outcomes of an HTTP alert, set from its last attempt (a timeout is retried).
ACCEPTED = "accepted"  # 2xx: accepted or duplicate (a retry of an accepted alert)
REFUSED = "refused"  # 4xx or 503: the gateway said no, with a reason
ERROR = "error"  # any other status (500...): never a deliberate answer
DROPPED = "dropped"  # no answer: connection refused or reset (Falco drops it)
# Outcomes of a gRPC alert.
QUEUED = "queued"  # still in the Falco stand-in's queue
HANDED = "handed"  # popped onto the gateway's stream: the gateway has it, as far as Falco knows


@dataclass
class AlertRecord:
    path: str  # "http" or "grpc"
    kind: str  # "normal" or "oversize:<bytes>"
    outcome: str = ""
    status: int = 0  # last HTTP status
    handed_at: float | None = None  # monotonic time the stand-in popped it (gRPC)


@dataclass
class Kill:
    """A process whose death takes gRPC alerts in transit with it."""

    what: str  # "gateway" or "falco"
    started: float  # when that incarnation started (monotonic)
    at: float  # when it was killed (monotonic)
    restarted: float = float("inf")  # when the next incarnation started


@dataclass
class Ledger:
    alerts: dict[str, AlertRecord] = field(default_factory=dict)
    kills: list[Kill] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)

    def sent(self, alert_id: str, path: str, kind: str = "normal") -> None:
        self.alerts[alert_id] = AlertRecord(path, kind, QUEUED if path == "grpc" else "")

    def answered(self, alert_id: str, status: int) -> None:
        record = self.alerts[alert_id]
        record.status = status
        self.statuses[status] += 1
        if 200 <= status < 300:
            record.outcome = ACCEPTED
        elif 400 <= status < 500 or status == 503:
            record.outcome = REFUSED
        else:
            record.outcome = ERROR

    def dropped(self, alert_id: str) -> None:
        self.alerts[alert_id].outcome = DROPPED

    def handed(self, alert_id: str, at: float) -> None:
        record = self.alerts[alert_id]
        record.outcome = HANDED
        record.handed_at = at

    def killed(self, what: str, started: float, at: float) -> None:
        self.kills.append(Kill(what, started, at))

    def restarted(self, what: str, at: float) -> None:
        for kill in reversed(self.kills):
            if kill.what == what:
                kill.restarted = min(kill.restarted, at)
                return

    def tally(self, stored: Counter[str]) -> Tally:
        """The verdict, from the Nats-Msg-Id of every message in the stream."""
        t = Tally()
        handed_stored = sorted(
            r.handed_at
            for alert_id, r in self.alerts.items()
            if r.handed_at is not None and stored.get(alert_id)
        )
        for alert_id, record in self.alerts.items():
            t.sent[record.path] = t.sent.get(record.path, 0) + 1
            if record.outcome == REFUSED:
                t.refused += 1
            elif record.outcome == ERROR:
                t.errors += 1
            elif record.outcome == DROPPED:
                t.dropped += 1
            elif record.outcome == QUEUED:
                t.not_handed += 1
            if record.outcome not in (ACCEPTED, HANDED):
                continue
            t.accepted += 1
            copies = stored.get(alert_id, 0)
            if copies:
                t.stored += 1
                if copies > 1:
                    t.duplicated += 1
                    t.examples.append(f"duplicated x{copies}: {alert_id} {record}")
            elif (offset := self._in_transit(record, handed_stored)) is not None:
                t.in_transit += 1
                t.in_transit_after_kill += offset > 0
                t.transit_span = (min(t.transit_span[0], offset), max(t.transit_span[1], offset))
            else:
                t.lost += 1
                t.lost_by_path[record.path] = t.lost_by_path.get(record.path, 0) + 1
                t.examples.append(f"lost: {alert_id} {record}")
        t.extra = sum(1 for alert_id in stored if alert_id not in self.alerts)
        t.extra += sum(
            1
            for alert_id in stored
            if alert_id in self.alerts and self.alerts[alert_id].outcome not in (ACCEPTED, HANDED)
        )
        return t

    def _in_transit(self, record: AlertRecord, handed_stored: list[float]) -> float | None:
        """Seconds from the kill that took it to the hand-over (negative: before the
        kill), when the alert is in the unread tail of a killed connection; else None."""
        handed = record.handed_at
        if record.path != "grpc" or handed is None:
            return None
        kills = [k for k in self.kills if k.started <= handed < k.restarted]
        if not kills:
            return None
        kill = min(kills, key=lambda k: k.at)
        # A stored alert handed over after this one on the same connection: skipped.
        later = bisect_right(handed_stored, handed)
        if later < len(handed_stored) and handed_stored[later] < kill.restarted:
            return None
        return handed - kill.at


@dataclass
class Tally:
    sent: dict[str, int] = field(default_factory=dict)
    accepted: int = 0  # expected in the stream: answered 2xx, or handed over by gRPC
    refused: int = 0
    errors: int = 0
    dropped: int = 0
    not_handed: int = 0
    stored: int = 0  # expected alerts found in the stream
    lost: int = 0
    lost_by_path: dict[str, int] = field(default_factory=dict)
    in_transit: int = 0
    # Of those, handed over after the kill: written onto a connection whose peer was
    # already dead (the stand-in, grpc.aio, goes on popping until it notices; Falco's
    # C++ server stops at the first failed write).
    in_transit_after_kill: int = 0
    # Earliest and latest hand-over of an in-transit alert, in seconds from its kill.
    transit_span: tuple[float, float] = (float("inf"), float("-inf"))
    duplicated: int = 0
    extra: int = 0  # in the stream without a 2xx or a hand-over (answer lost at a kill)
    examples: list[str] = field(default_factory=list)

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())
