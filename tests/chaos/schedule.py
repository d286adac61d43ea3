"""The fault schedule: which fault, when, for how long, drawn from one seed.

Everything random in a chaos run comes from the seed through here (the
schedule) or through `load_rng` (which alert template each sender picks), so
a failing seed reruns with the same faults at the same offsets.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

# Every fault kind the suite knows, in the order the table prints them.
FAULT_KINDS = (
    "nats-kill",  # nats-server SIGKILLed, restarted on the same port and store
    "nats-pause",  # nats-server SIGSTOPped, then SIGCONT
    "gateway-kill",  # the gateway SIGKILLed, restarted on the same spool_dir
    "disk-full",  # the spool's filesystem (a small tmpfs) filled up, then freed
    "grpc-bad",  # malformed messages on Falco's gRPC stream (FalcoServer.emit_raw)
    "oversize",  # alerts near NATS max_payload and bodies above max_body_bytes
    "falco-restart",  # the Falco stand-in stopped hard, started again on its socket
)

# Seconds a fault lasts (down time, pause, full disk); instant faults do their
# deed and hold nothing.
HOLD_RANGE: dict[str, tuple[float, float]] = {
    "nats-kill": (1.0, 8.0),
    "nats-pause": (1.0, 6.0),
    "gateway-kill": (0.2, 3.0),
    "disk-full": (2.0, 8.0),
    "grpc-bad": (0.0, 0.0),
    "oversize": (0.0, 0.0),
    "falco-restart": (0.5, 5.0),
}

# Quiet seconds between two faults, and before the first (the load settles).
GAP_RANGE = (1.5, 5.0)
WARM_UP = 3.0


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the load started
    kind: str
    hold: float  # seconds the fault lasts before it is repaired
    variant: int  # the fault's own choices (which bad message, which size) come from this

    def describe(self) -> str:
        hold = f" for {self.hold:.1f}s" if self.hold else ""
        return f"{self.at:7.1f}s {self.kind}{hold}"


def parse_kinds(text: str) -> tuple[str, ...]:
    """A comma-separated list of fault kinds; `all` names every one."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return FAULT_KINDS
    unknown = [n for n in names if n not in FAULT_KINDS]
    if unknown:
        raise ValueError(
            f"unknown fault kind(s) {', '.join(unknown)}; known: {', '.join(FAULT_KINDS)}"
        )
    if not names:
        raise ValueError("no fault kinds given")
    return tuple(dict.fromkeys(names))


def make_schedule(seed: int, duration: float, kinds: tuple[str, ...]) -> list[Fault]:
    """Faults one after another (each repaired before the next), none past `duration`.

    The first ones are every kind once, in a seeded order, so even a short run
    injects each kind it was given; after that each kind is drawn at random."""
    rng = random.Random(f"chaos-schedule-{seed}")  # noqa: S311 - a schedule, not a secret
    first = rng.sample(kinds, len(kinds))
    faults: list[Fault] = []
    at = WARM_UP
    while kinds:
        kind = first[len(faults)] if len(faults) < len(first) else rng.choice(kinds)
        low, high = HOLD_RANGE[kind]
        hold = round(rng.uniform(low, high), 2)
        if at + hold > duration:
            break
        faults.append(Fault(round(at, 2), kind, hold, rng.randrange(1 << 30)))
        at += hold + rng.uniform(*GAP_RANGE)
    return faults


def fingerprint(faults: list[Fault]) -> str:
    """A short digest of a schedule: equal digests, equal schedules."""
    text = "\n".join(f"{f.at}|{f.kind}|{f.hold}|{f.variant}" for f in faults)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_rng(seed: int, path: str) -> random.Random:
    return random.Random(f"chaos-load-{seed}-{path}")  # noqa: S311 - a schedule, not a secret
