"""Each fault kind: inject it, hold it, repair it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.falco_pb import outputs_pb2
from gateway.simulator.http_client import HttpClient
from gateway.simulator.wire import to_falco_json, to_grpc_response
from tests.chaos.ledger import Ledger
from tests.chaos.load import AlertMaker, Falco, post_like_falco
from tests.chaos.rig import Gateway, Nats, SpoolDisk
from tests.chaos.schedule import FAULT_KINDS, Fault

# The fault kinds the short seeded run inside `make test` injects: those the
# gateway survives today without losing, duplicating or sticking an alert.
# Extend it as the fixes for the others land.
SHORT_RUN_FAULTS: tuple[str, ...] = (
    "nats-kill",
    "nats-pause",
    "gateway-kill",
    "falco-restart",
    "disk-full",
    "oversize",
    "grpc-bad",
)

NATS_MAX_PAYLOAD = 1024 * 1024  # nats-server's default max_payload
MAX_BODY_BYTES = 1024 * 1024  # the gateway's default max_body_bytes

# HTTP bodies: the 1,048,531 bytes (payload under max_payload, payload +
# headers over it), max_body_bytes exactly and one over, and well above it.
HTTP_OVERSIZE = (1_048_531, 1_040_000, MAX_BODY_BYTES, MAX_BODY_BYTES + 1, 3 * MAX_BODY_BYTES)
# gRPC output texts near and above max_payload (gRPC has no body limit; 4 MiB per message).
GRPC_OVERSIZE = (NATS_MAX_PAYLOAD - 2_000, NATS_MAX_PAYLOAD - 300, NATS_MAX_PAYLOAD + 1_000)


@dataclass
class Rig:
    nats: Nats
    gateway: Gateway
    falco: Falco
    disk: SpoolDisk | None
    ledger: Ledger
    maker: AlertMaker
    notes: list[str] = field(default_factory=list)


async def inject(fault: Fault, rig: Rig) -> None:
    await _ACTIONS[fault.kind](fault, rig, random.Random(fault.variant))  # noqa: S311 - a schedule, not a secret


async def _nats_kill(fault: Fault, rig: Rig, rng: random.Random) -> None:
    await rig.nats.kill()
    await asyncio.sleep(fault.hold)
    await rig.nats.start()


async def _nats_pause(fault: Fault, rig: Rig, rng: random.Random) -> None:
    rig.nats.pause()
    try:
        await asyncio.sleep(fault.hold)
    finally:
        rig.nats.resume()


async def _gateway_kill(fault: Fault, rig: Rig, rng: random.Random) -> None:
    await rig.gateway.kill(rig.ledger)
    await asyncio.sleep(fault.hold)
    await rig.gateway.start()
    rig.ledger.restarted("gateway", rig.gateway.started)


async def _disk_full(fault: Fault, rig: Rig, rng: random.Random) -> None:
    """The spool's disk full; every other time with NATS down as well, so the spool
    must grow (with NATS up, SQLite often reuses its WAL's space and never notices)."""
    disk = rig.disk
    assert disk is not None, "disk-full runs only with the spool on its own tmpfs"
    nats_down = rng.random() < 0.5
    if nats_down:
        await rig.nats.kill()
    await asyncio.to_thread(disk.fill)
    try:
        await asyncio.sleep(fault.hold)
    finally:
        disk.free()
        if nats_down:
            await rig.nats.start()


async def _falco_restart(fault: Fault, rig: Rig, rng: random.Random) -> None:
    await rig.falco.kill()
    await asyncio.sleep(fault.hold)
    await rig.falco.start()
    rig.ledger.restarted("falco", rig.falco.started)


async def _oversize(fault: Fault, rig: Rig, rng: random.Random) -> None:
    """A few oversize alerts from another Falco (one POST at a time) and over gRPC."""
    sizes = rng.sample(HTTP_OVERSIZE, rng.randint(1, 2))
    async with HttpClient(rig.gateway.url, timeout=10) as http:
        for size in sizes:
            event = rig.maker.padded(rng, size)
            rig.ledger.sent(event.alert_id, "http", f"oversize:{size}")
            await post_like_falco(http, to_falco_json(event), event.alert_id, rig.ledger, 10)
    if rng.random() < 0.5:
        size = rng.choice(GRPC_OVERSIZE)
        rig.falco.emit(rig.maker.padded(rng, size), f"oversize:{size}")


# --- bad gRPC messages: bytes Falco's C++ protobuf may send and Python's refuses.


def _placeholder_swap(response: outputs_pb2.response, placeholder: bytes, bad: bytes) -> bytes:
    """Serialize, then swap a placeholder for bytes of the same length that
    protobuf-python would not write (the length prefix stays right)."""
    assert len(placeholder) == len(bad)
    data = response.SerializeToString()
    assert placeholder in data
    return data.replace(placeholder, bad, 1)


def _bad_rule(rig: Rig, rng: random.Random) -> bytes:
    response = to_grpc_response(rig.maker.make(rng))
    response.rule = "CHAOS-RULE-PLACEHOLDER"
    return _placeholder_swap(response, b"CHAOS-RULE-PLACEHOLDER", b"CHAOS-\xff\xfeLE-PLACEHOLDER")


def _bad_field(rig: Rig, rng: random.Random) -> bytes:
    response = to_grpc_response(rig.maker.make(rng))
    response.output_fields["fd.name"] = "/tmp/CHAOS-FIELD-PLACEHOLDER"
    return _placeholder_swap(response, b"CHAOS-FIELD-PLACEHOLDER", b"CHAOS-\xc3\x28ELD-PLACEHOLDER")


def _corrupt(rig: Rig, rng: random.Random) -> bytes:
    data = to_grpc_response(rig.maker.make(rng)).SerializeToString()
    return data[: rng.randint(3, len(data) - 3)]  # cut inside a field


def _deep(rig: Rig, rng: random.Random) -> bytes:
    response = to_grpc_response(rig.maker.make(rng))
    response.output_fields["chaos.deep"] = "[" * 250 + "]" * 250
    return response.SerializeToString()


def _far_future(rig: Rig, rng: random.Random) -> bytes:
    response = to_grpc_response(rig.maker.make(rng))
    response.time.seconds = 2**62
    return response.SerializeToString()


BAD_MESSAGES: dict[str, Callable[[Rig, random.Random], bytes]] = {
    "invalid UTF-8 in rule": _bad_rule,
    "invalid UTF-8 in an output field": _bad_field,
    "truncated message": _corrupt,
    "value nested 250 deep": _deep,
    "time seconds 2^62": _far_future,
}


async def _grpc_bad(fault: Fault, rig: Rig, rng: random.Random) -> None:
    for name in rng.sample(sorted(BAD_MESSAGES), rng.randint(1, 3)):
        rig.falco.emit_raw(BAD_MESSAGES[name](rig, rng))
        rig.notes.append(f"grpc-bad: {name}")
        await asyncio.sleep(0.05)


_ACTIONS = {
    "nats-kill": _nats_kill,
    "nats-pause": _nats_pause,
    "gateway-kill": _gateway_kill,
    "disk-full": _disk_full,
    "grpc-bad": _grpc_bad,
    "oversize": _oversize,
    "falco-restart": _falco_restart,
}
assert tuple(_ACTIONS) == FAULT_KINDS
