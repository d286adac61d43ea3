"""The same alert becomes the same message whichever way it came."""

from __future__ import annotations

from gateway.pipeline import MSG_ID_HEADER, PATH_HEADER
from gateway.simulator.alerts import CATALOG, render
from gateway.simulator.wire import to_falco_json, to_grpc_response
from tests.support import NatsServer, StartFalco, running_gateway, subscribe, take


async def test_every_catalog_alert_is_identical_over_grpc_and_http(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    falco = await start_falco(socket_path)
    events = [render(t, 1_700_000_000_000_000_000 + i, "node-1") for i, t in enumerate(CATALOG)]
    nc, inbox = await subscribe(nats_server.url)
    # Deduplication off, so that both copies are published and can be compared.
    async with (
        running_gateway(nats_server.url, falco_grpc=socket_path, dedup_window=0) as gw,
        gw.client() as http,
    ):
        for event in events:
            falco.emit(to_grpc_response(event))
            grpc_msg = (await take(inbox, 1))[0]
            assert (await http.post(to_falco_json(event))).status == 200
            http_msg = (await take(inbox, 1))[0]
            assert grpc_msg.headers is not None
            assert http_msg.headers is not None
            assert (grpc_msg.headers[PATH_HEADER], http_msg.headers[PATH_HEADER]) == (
                "grpc",
                "http",
            )
            assert grpc_msg.subject == http_msg.subject
            assert grpc_msg.data == http_msg.data, event.rule
            assert (
                grpc_msg.headers[MSG_ID_HEADER] == http_msg.headers[MSG_ID_HEADER] == event.alert_id
            )
    await nc.close()
    await falco.stop()
