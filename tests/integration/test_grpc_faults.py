"""One bad gRPC message is handled on its own; the stream goes on with the next.

Falco's C++ protobuf sends what Python's refuses (a string that is not UTF-8),
so the Falco stand-in sends such messages as raw bytes (`emit_raw`).
"""

from __future__ import annotations

import copy
import re

import grpc.aio
import orjson

from gateway.falco_pb import outputs_pb2
from gateway.pipeline import MSG_ID_HEADER
from gateway.simulator.alerts import stream
from gateway.simulator.wire import to_grpc_response
from gateway.telemetry import Telemetry
from tests.support import NatsServer, StartFalco, running_gateway, subscribe, take, until

REPLACEMENT = "\N{REPLACEMENT CHARACTER}"


def _with_bad_byte(response: outputs_pb2.response, marker: str) -> bytes:
    """`response` serialized, with the first byte of `marker` (in some text) made 0xFF:
    what Falco's C++ sends for a file name that is not UTF-8."""
    data = response.SerializeToString()
    at = data.index(marker.encode())
    return data[:at] + b"\xff" + data[at + 1 :]


def _metric(telemetry: Telemetry, name: str, **labels: str) -> float:
    text = telemetry.exposition().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if m and ",".join(sorted(m.group(1).split(","))) == wanted:
            return float(m.group(2))
    return 0.0


async def test_each_bad_message_is_handled_alone_and_the_stream_goes_on(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    falco = await start_falco(socket_path)
    good = list(stream("node-1", 9))
    # The text form (json_output: false), where the values travel in output_fields.
    base = [to_grpc_response(e, json_output=False) for e in stream("node-2", 8)]

    bad_rule = outputs_pb2.response()
    bad_rule.CopyFrom(base[0])
    bad_rule.rule = "Xfile name rule"
    bad_value = outputs_pb2.response()
    bad_value.CopyFrom(base[1])
    bad_value.output_fields["fd.name"] = "/tmp/Xnot-utf8"
    deep = outputs_pb2.response()
    deep.CopyFrom(base[2])
    deep.output_fields["proc.cmdline"] = "[" * 253 + "]" * 253
    far = outputs_pb2.response()
    far.CopyFrom(base[3])
    far.time.seconds = 2**62
    negative = outputs_pb2.response()
    negative.CopyFrom(base[4])
    negative.time.nanos = -1
    overflowing = outputs_pb2.response()
    overflowing.CopyFrom(base[5])
    overflowing.time.nanos = 2_000_000_000
    bad_rule_far = outputs_pb2.response()
    bad_rule_far.CopyFrom(base[6])
    bad_rule_far.rule = "Xfar"
    bad_rule_far.time.seconds = 2**40
    raw_bad = [
        _with_bad_byte(bad_rule, "Xfile"),  # published, repaired
        _with_bad_byte(bad_value, "Xnot-utf8"),  # published, repaired
        deep.SerializeToString(),  # published, the text kept
        b"\xff\xff\xff\xff\xff",  # corrupt: rejected
        far.SerializeToString(),  # rejected: bad_time
        negative.SerializeToString(),  # rejected: bad_time
        overflowing.SerializeToString(),  # rejected: bad_time
        _with_bad_byte(bad_rule_far, "Xfar"),  # rejected: bad_time, not counted as repaired
    ]

    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url, falco_grpc=socket_path) as gw:
        source = gw.gateway.grpc
        assert source is not None
        await until(lambda: source.state.state == "connected", "gRPC")
        falco.emit(to_grpc_response(good[0]))
        for raw, event in zip(raw_bad, good[1:], strict=True):
            falco.emit_raw(raw)
            falco.emit(to_grpc_response(event))
        msgs = await take(inbox, len(good) + 3)
        telemetry = gw.gateway.telemetry
        assert source.connects == 1, "the stream was never broken"
        assert source.state.state == "connected"
        assert telemetry.get("rejected", "grpc") == 5
        assert (
            _metric(
                telemetry,
                "falco_nats_gateway_alerts_rejected_by_reason_total",
                path="grpc",
                reason="bad_time",
            )
            == 4
        )
        assert (
            _metric(
                telemetry,
                "falco_nats_gateway_alerts_rejected_by_reason_total",
                path="grpc",
                reason="corrupt_message",
            )
            == 1
        )
        assert (
            _metric(
                telemetry,
                "falco_nats_gateway_alerts_repaired_total",
                path="grpc",
                reason="not_utf8",
            )
            == 2
        )
    await nc.close()

    ids = [m.headers[MSG_ID_HEADER] for m in msgs if m.headers]
    assert [i for i in ids if i in {e.alert_id for e in good}] == [e.alert_id for e in good]
    docs = [orjson.loads(m.data) for m in msgs]
    rules = [d["rule"] for d in docs]
    assert REPLACEMENT + "file name rule" in rules
    by_rule = {d["rule"]: d for d in docs}
    assert by_rule[bad_value.rule]["output_fields"]["fd.name"] == "/tmp/" + REPLACEMENT + "not-utf8"
    assert by_rule[deep.rule]["output_fields"]["proc.cmdline"] == "[" * 253 + "]" * 253


async def test_a_stream_that_ends_at_once_backs_off_instead_of_reconnecting_hot(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    falco = await start_falco(socket_path)
    falco.end_streams_at_once()
    async with running_gateway(nats_server.url, falco_grpc=socket_path) as gw:
        source = gw.gateway.grpc
        assert source is not None
        await until(lambda: source.connects >= 4, "four connects")
        # Each connect delivered nothing and ended at once: the backoff grew (ceilings
        # 0.1, 0.2, 0.4, 0.8 s...) rather than restarting from 0.1 s at each connect.
        probe = copy.copy(source.backoff)
        assert probe.next_delay() >= 0.4
        assert source.last_delay > source.backoff.initial
        falco.end_streams_at_once(False)
        alert = next(iter(stream("node-1", 1)))
        nc, inbox = await subscribe(nats_server.url)
        falco.emit(to_grpc_response(alert))
        (msg,) = await take(inbox, 1, timeout=15)
        await nc.close()
        assert msg.headers is not None
        assert msg.headers[MSG_ID_HEADER] == alert.alert_id


async def test_emit_raw_bytes_go_out_as_they_are_on_get(
    socket_path: str, start_falco: StartFalco
) -> None:
    falco = await start_falco(socket_path)
    falco.emit_raw(b"\x22\x02\xff\xfe")  # rule: two bytes that are not UTF-8
    falco.emit(to_grpc_response(next(iter(stream("node-1", 1)))))
    async with grpc.aio.insecure_channel(socket_path) as channel:
        get = channel.unary_stream(
            "/falco.outputs.service/get",
            request_serializer=outputs_pb2.request.SerializeToString,
            response_deserializer=None,
        )
        got = [data async for data in get(outputs_pb2.request())]
    assert got[0] == b"\x22\x02\xff\xfe"
    assert outputs_pb2.response.FromString(got[1]).rule
