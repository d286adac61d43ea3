"""The gateway publishes what falcosidekick's NATS output publishes (see falcosidekick.py)."""

from __future__ import annotations

import logging

import orjson
import pytest

from gateway.pipeline import MSG_ID_HEADER
from tests.integration.conformance.falcosidekick import CASES, Case, go_json
from tests.support import NatsServer, nothing_more, running_gateway, subscribe, take


@pytest.mark.parametrize("case", CASES, ids=[c.point for c in CASES])
async def test_falcosidekick_case(nats_server: NatsServer, case: Case) -> None:
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url, **case.settings) as gw, gw.client() as http:
        response = await http.post(orjson.dumps(case.body), path=case.path)
        assert response.status == 200, response.body
        (msg,) = await take(inbox, 1)
    await nc.close()
    assert msg.subject == case.subject
    assert msg.headers is not None
    uuid = msg.headers[MSG_ID_HEADER]
    assert msg.data == go_json({"uuid": uuid, **case.payload})


async def test_post_test_reaches_nats_whatever_the_minimum_priority(
    nats_server: NatsServer,
) -> None:
    nc, inbox = await subscribe(nats_server.url)
    async with (
        running_gateway(nats_server.url, minimum_priority="emergency") as gw,
        gw.client() as http,
    ):
        assert (await http.post(b"", path="/test")).status == 200
        (msg,) = await take(inbox, 1)
    await nc.close()
    assert msg.subject == "falco.debug.test_rule"
    doc = orjson.loads(msg.data)
    assert (doc["rule"], doc["priority"], doc["source"]) == ("Test rule", "Debug", "internal")


async def test_any_path_is_logged_once_and_named_routes_keep_their_meaning(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.http")
    body = orjson.dumps(CASES[0].body)
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url, dedup_window=0) as gw, gw.client() as http:
        for _ in range(3):
            assert (await http.post(body, path="/falco")).status == 200
        await take(inbox, 3)
        assert (await http.get("/ping")).body == b"pong\n"
        assert (await http.get("/falco")).status == 405  # an alert path, but not a POST
        assert (await http.post(b"", path="/test")).status == 200
        (test_alert,) = await take(inbox, 1)
        assert test_alert.subject == "falco.debug.test_rule"
        await nothing_more(inbox, 0.2)
    await nc.close()
    noted = [r for r in caplog.records if r.getMessage().startswith("alerts posted to a path")]
    assert len(noted) == 1
    assert noted[0].fields["path"] == "/falco"  # type: ignore[attr-defined]


async def test_any_path_needs_the_credentials_too(nats_server: NatsServer) -> None:
    body = orjson.dumps(CASES[0].body)
    async with (
        running_gateway(nats_server.url, http_user="falco", http_password="s3cret") as gw,  # noqa: S106
        gw.client() as http,
    ):
        refused = await http.post(body, path="/falco")
    assert refused.status == 401
