"""Falco's two exits give one message: the same alert as http_output's JSON
(formats.cpp) and as a gRPC response (outputs_grpc.cpp, with json_output off and
on) is published with the same bytes, the same subject and the same id; and
alerts that differ are never merged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import orjson
import pytest
from nats.aio.msg import Msg

from gateway.event import FalcoEvent
from gateway.pipeline import MSG_ID_HEADER
from gateway.simulator.alerts import CATALOG, render
from gateway.simulator.falco_server import FalcoServer
from gateway.simulator.http_client import HttpClient
from gateway.simulator.wire import to_falco_json, to_grpc_response
from tests.support import (
    NatsServer,
    StartFalco,
    nothing_more,
    running_gateway,
    subscribe,
    take,
)

BASE_NS = 1_700_000_000_000_000_000
STOCK = [render(t, BASE_NS + i * 1_000_003, "node-1") for i, t in enumerate(CATALOG)]
# Falco's text line of an internal alert is not the `output` of its JSON
# (falco_outputs.cpp handle_msg), and with json_output off Falco cannot post JSON.
TEXT_FORM = [e for e in STOCK if e.source != "internal"]


async def _one(inbox: asyncio.Queue[Msg]) -> Msg:
    return (await take(inbox, 1))[0]


async def _published_three_ways(
    event: FalcoEvent,
    falco: FalcoServer,
    http: HttpClient,
    inbox: asyncio.Queue[Msg],
    text_form: bool,
) -> list[Msg]:
    msgs = []
    falco.emit(to_grpc_response(event, json_output=True))
    msgs.append(await _one(inbox))
    if text_form:
        falco.emit(to_grpc_response(event, json_output=False))
        msgs.append(await _one(inbox))
    assert (await http.post(to_falco_json(event))).status == 200
    msgs.append(await _one(inbox))
    return msgs


async def test_every_stock_alert_is_one_payload_from_every_wire_form(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    falco = await start_falco(socket_path)
    nc, inbox = await subscribe(nats_server.url)
    # Deduplication off, so that every copy is published and can be compared.
    async with (
        running_gateway(nats_server.url, falco_grpc=socket_path, dedup_window=0) as gw,
        gw.client() as http,
    ):
        for event in STOCK:
            msgs = await _published_three_ways(event, falco, http, inbox, event in TEXT_FORM)
            assert len({m.data for m in msgs}) == 1, (event.rule, [m.data for m in msgs])
            assert len({m.subject for m in msgs}) == 1
            assert {m.headers[MSG_ID_HEADER] for m in msgs if m.headers} == {event.alert_id}
    await nc.close()


async def test_one_alert_on_both_paths_is_one_message(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    falco = await start_falco(socket_path)
    nc, inbox = await subscribe(nats_server.url)
    async with (
        running_gateway(nats_server.url, falco_grpc=socket_path) as gw,
        gw.client() as http,
    ):
        for event in TEXT_FORM:
            falco.emit(to_grpc_response(event, json_output=False))
            await _one(inbox)
            answer = await http.post(to_falco_json(event))
            assert orjson.loads(answer.body) == {"status": "duplicate"}, event.rule
        await nothing_more(inbox, 0.3)
    await nc.close()


def _cloudtrail(user: str) -> FalcoEvent:
    # CloudTrail's eventTime is to the second: Falco stamps the event with it.
    template = next(t for t in CATALOG if t.source == "aws_cloudtrail")
    event = render(template, 1_700_000_000_000_000_000, "node-1")
    fields = dict(event.output_fields, **{"ct.user": user})
    return replace(event, output=event.output.replace("alice", user), output_fields=fields)


@pytest.mark.parametrize("paths", [("grpc", "grpc"), ("http", "http"), ("grpc", "http")])
async def test_distinct_alerts_of_one_rule_and_second_are_not_merged(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco, paths: tuple[str, str]
) -> None:
    falco = await start_falco(socket_path)
    nc, inbox = await subscribe(nats_server.url)
    alerts = [_cloudtrail("alice"), _cloudtrail("bob")]
    async with (
        running_gateway(nats_server.url, falco_grpc=socket_path) as gw,
        gw.client() as http,
    ):
        for event, path in zip(alerts, paths, strict=True):
            if path == "grpc":
                falco.emit(to_grpc_response(event, json_output=False))
            else:
                assert (await http.post(to_falco_json(event))).status == 200
            await _one(inbox)
        await nothing_more(inbox, 0.2)
    await nc.close()


async def test_json_without_output_never_merges_alerts_and_is_logged_once(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.pipeline")
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url) as gw, gw.client() as http:
        for user in ("alice", "bob", "carol"):
            body = to_falco_json(_cloudtrail(user), include_output=False)
            assert (await http.post(body)).status == 200
        msgs = await take(inbox, 3)
        # The same alert again is still a duplicate.
        again = await http.post(to_falco_json(_cloudtrail("alice"), include_output=False))
        assert orjson.loads(again.body) == {"status": "duplicate"}
    await nc.close()
    assert len({m.headers[MSG_ID_HEADER] for m in msgs if m.headers}) == 3
    warnings = [r for r in caplog.records if r.getMessage() == "alert without output"]
    assert len(warnings) == 1


async def _grpc_fields(
    nats_server: NatsServer, socket_path: str, falco: FalcoServer, event: FalcoEvent
) -> dict[str, object]:
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url, falco_grpc=socket_path):
        falco.emit(to_grpc_response(event, json_output=False))
        msg = await _one(inbox)
    await nc.close()
    fields = orjson.loads(msg.data)["output_fields"]
    assert isinstance(fields, dict)
    return fields


async def test_grpc_missing_value_is_null(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    event = next(e for e in STOCK if e.rule == "Launch Privileged Container")
    assert to_grpc_response(event, json_output=False).output_fields["k8s.pod.name"] == "<NA>"
    fields = await _grpc_fields(nats_server, socket_path, await start_falco(socket_path), event)
    assert fields["k8s.pod.name"] is None


async def test_grpc_values_take_their_fields_types(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    event = next(e for e in STOCK if e.rule == "Contact K8S API Server From Container")
    fields = await _grpc_fields(nats_server, socket_path, await start_falco(socket_path), event)
    assert fields["container.id"] == "123456789012"
    assert fields["k8s.pod.name"] == "12345"
    assert fields["fd.rport"] == 443


async def test_grpc_gets_the_evt_time_prefix_field(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    event = STOCK[0]
    assert "evt.time" not in to_grpc_response(event, json_output=False).output_fields
    fields = await _grpc_fields(nats_server, socket_path, await start_falco(socket_path), event)
    assert fields["evt.time"] == event.time_ns
