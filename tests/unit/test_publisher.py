"""The publisher and the sink's two confirmation strategies, driven step by step.

No server and no waiting: a FakeLink stands in for the connection (the test
says what NATS answers, and when the connection breaks), and a ClockLoop moves
time forward past publish_timeout. tests/integration/test_delivery.py covers the same
promises against a real nats-server.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
import pytest

from gateway.errors import LinkDown, StreamError
from gateway.publisher import Publisher
from gateway.sinks.nats import (
    CONFIRM_INTERVAL,
    MAX_SUBJECT_BYTES,
    STREAM_GONE,
    JetStreamConfirmation,
    NatsSink,
)
from gateway.sinks.natspy import message_size
from gateway.sinks.stream import StreamSettings, stream_config
from gateway.spool import Spool
from tests.unit.fake_nats import ClockLoop, FakeJetStream, FakeLink, build

Test = Callable[[], Coroutine[Any, Any, None]]


def clocked(test: Test) -> Callable[[], None]:
    """Run an async test on a ClockLoop of its own."""

    @functools.wraps(test)
    def run() -> None:
        loop = ClockLoop()
        try:
            loop.run_until_complete(test())
        finally:
            loop.close()

    return run


def advance(seconds: float) -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, ClockLoop)
    loop.advance(seconds)


async def turns(n: int = 30) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def later(seconds: float) -> None:
    """Let `seconds` pass (timeouts, backoff), and let the publisher act on it."""
    advance(seconds)
    await turns(100)  # timers now due fire on the first turn


def spool_alerts(spool: Spool, count: int, size: int = 100, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + count):
        alert_id = f"id-{i:04d}"
        payload = orjson.dumps({"uuid": alert_id, "output": "x" * size, "output_fields": {}})
        spool.append("http", "falco.notice.x", {"Nats-Msg-Id": alert_id}, payload)
        ids.append(alert_id)
    return ids


async def offer(publisher: Publisher, spool: Spool, count: int, **kwargs: Any) -> list[str]:
    """Spool `count` alerts, tell the publisher, and let it act: their ids."""
    sent = spool_alerts(spool, count, **kwargs)
    publisher.notify()
    await turns()
    return sent


class Running:
    """A publisher task, and what it takes to stop it."""

    def __init__(self, publisher: Publisher, drain_timeout: float = 5.0) -> None:
        self.publisher = publisher
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(publisher.run(self.stop, drain_timeout))

    async def finish(self) -> None:
        """Stop, letting the drain time run out if it must."""
        self.stop.set()
        self.publisher.notify()
        for _ in range(100):
            if self.task.done():
                break
            await later(1)
        assert self.task.done(), "the publisher did not stop"
        await self.task


def ids(messages: list[Any]) -> list[str]:
    return [m.alert_id for m in messages]


# JetStream


@clocked
async def test_jetstream_acks_delete_alerts_in_order() -> None:
    link, _, publisher, spool = build(jetstream=True)
    running = Running(publisher)
    sent = await offer(publisher, spool, 10)
    assert ids(link.published) == sent
    for _ in sent:
        await link.ack()
    await turns()
    assert spool.count == 0
    assert publisher.telemetry.get("published") == 10
    await running.finish()


@clocked
async def test_mixed_acks_ok_refused_malformed_and_unanswered() -> None:
    """ok: delivered; code 400: refused for good (counted, never resent); an
    unreadable ack or none within publish_timeout: sent again, from the first
    such alert on, in order."""
    link, _, publisher, spool = build(jetstream=True, publish_timeout=2.0, batch_size=64)
    running = Running(publisher)
    sent = await offer(publisher, spool, 5)
    await link.ack()  # 0: stored
    await link.ack({"error": {"code": 400, "err_code": 10054, "description": "too big"}})
    await link.ack(raw=b"not json")  # 2: unreadable, sent again
    link.unanswered.pop(0)  # 3: its answer is lost
    await link.ack()  # 4: stored
    await turns()
    assert spool.count == 5, "the group waits for 3 until publish_timeout"
    await later(2.5)
    await later(0.5)  # the backoff before trying again
    telemetry = publisher.telemetry
    assert telemetry.get("undeliverable") == 1
    assert telemetry.get("published") == 2
    # 2 and 3 again, in order; 4 was stored already and left the spool.
    assert ids(link.published) == [*sent, sent[2], sent[3]]
    assert publisher.problem == "unreadable JetStream ack"
    await link.ack()
    await link.ack()
    await turns()
    assert spool.count == 0
    assert publisher.problem == ""
    await running.finish()


@clocked
async def test_stream_full_is_retried_and_reported_as_degraded() -> None:
    link, _, publisher, spool = build(jetstream=True)
    running = Running(publisher)
    sent = await offer(publisher, spool, 2)
    full = {"error": {"code": 503, "err_code": 10077, "description": "maximum messages exceeded"}}
    await link.ack(full)
    await link.ack(full)
    await turns()
    assert publisher.problem == "JetStream: maximum messages exceeded (503)"
    assert publisher.telemetry.get("undeliverable") == 0
    advance(5)  # the backoff before trying again
    publisher.notify()
    await turns(100)
    assert ids(link.published) == sent + sent
    await link.ack()
    await link.ack()
    await turns()
    assert spool.count == 0
    assert publisher.problem == ""
    await running.finish()


@clocked
async def test_deleted_stream_is_created_again() -> None:
    """No responders (the stream was deleted after start-up): the stream is
    checked again, created again when stream_create allows, and the alerts resent."""
    js = FakeJetStream()
    link, _, publisher, spool = build(jetstream=True, js=js)
    running = Running(publisher)
    await turns()
    assert "FALCO" in js.streams
    sent = await offer(publisher, spool, 1)
    js.streams.clear()  # someone deleted it
    await link.ack(status="503")
    await turns()
    assert publisher.problem == STREAM_GONE
    advance(5)
    publisher.notify()
    await turns(100)
    assert "FALCO" in js.streams
    assert ids(link.published) == sent + sent
    await link.ack()
    await turns()
    assert spool.count == 0
    await running.finish()


@clocked
async def test_missing_stream_stops_start_up_but_only_degrades_later() -> None:
    js = FakeJetStream()
    stream = StreamSettings(create=False)
    _, _, publisher, _ = build(jetstream=True, js=js, stream=stream)
    with pytest.raises(StreamError, match="does not exist"):
        await Running(publisher).task
    # After start-up (a stream deleted while running): waited out, not fatal.
    js.streams["FALCO"] = stream_config(stream)
    link, _, publisher, spool = build(jetstream=True, js=js, stream=stream)
    running = Running(publisher)
    await turns()
    await offer(publisher, spool, 1)
    js.streams.clear()
    await link.ack(status="503")
    await turns()
    await later(5)
    assert "does not exist" in publisher.problem
    assert not running.task.done()
    await running.finish()


@clocked
async def test_stream_check_that_times_out_is_tried_again() -> None:
    js = FakeJetStream()
    js.fail = 2
    link, _, publisher, spool = build(jetstream=True, js=js)
    running = Running(publisher)
    await turns()
    assert "FALCO" not in js.streams
    spool_alerts(spool, 1)
    for _ in range(3):
        advance(5)
        publisher.notify()
        await turns(100)
    assert "FALCO" in js.streams
    assert len(link.published) == 1
    await running.finish()


# Core NATS


@clocked
async def test_core_one_ping_confirms_everything_before_it() -> None:
    link, _, publisher, spool = build()
    running = Running(publisher)
    await offer(publisher, spool, 5)
    assert len(link.pings) == 1
    assert link.pings[0][1] == 5, "the PING comes after all five"
    link.pong()
    await turns()
    assert spool.count == 0
    assert publisher.telemetry.get("published") == 5
    await running.finish()


@clocked
async def test_core_pings_at_most_every_confirm_interval_and_one_at_a_time() -> None:
    link, _, publisher, spool = build()
    running = Running(publisher)
    await offer(publisher, spool, 1)
    await offer(publisher, spool, 1, start=1)
    assert len(link.pings) == 1, "one PING out at a time"
    link.pong()
    await turns()
    assert len(link.pings) == 0, "not before CONFIRM_INTERVAL has passed"
    await later(CONFIRM_INTERVAL)  # the timer set for the next PING fires
    assert len(link.pings) == 1
    link.pong()
    await turns()
    assert spool.count == 0
    await running.finish()


@clocked
async def test_core_unanswered_ping_resends_in_order() -> None:
    link, _, publisher, spool = build(publish_timeout=1.0)
    running = Running(publisher)
    sent = await offer(publisher, spool, 3)
    await later(1.5)  # no PONG within publish_timeout
    assert publisher.problem == "no answer within publish_timeout"
    await later(0.5)  # the backoff before trying again
    assert ids(link.published) == sent + sent
    await confirm_all(link, False)
    assert spool.count == 0
    await running.finish()


# Faults common to both modes


@pytest.mark.parametrize("jetstream", [False, True], ids=["core", "jetstream"])
def test_connection_lost_with_a_window_in_flight(jetstream: bool) -> None:
    @clocked
    async def scenario() -> None:
        link, _, publisher, spool = build(jetstream=jetstream, batch_size=8)
        running = Running(publisher)
        sent = await offer(publisher, spool, 12)
        assert ids(link.published) == sent[:8], "a window of 8 in flight"
        link.drop()
        await turns()
        assert publisher.state.state == "waiting"
        link.restore()
        await turns(100)
        # Everything unconfirmed again, from the first, in arrival order.
        assert ids(link.published[8:]) == sent[:8]
        await confirm_all(link, jetstream)
        assert spool.count == 0
        assert ids(link.published[16:]) == sent[8:]
        await running.finish()

    scenario()


async def confirm_all(link: FakeLink, jetstream: bool, rounds: int = 10) -> None:
    for _ in range(rounds):
        await turns()
        if jetstream:
            while link.unanswered:
                await link.ack()
        else:
            await later(CONFIRM_INTERVAL)
            while link.pings:
                link.pong()
        await turns()


@pytest.mark.parametrize("jetstream", [False, True], ids=["core", "jetstream"])
def test_batch_cut_short_resends_exactly_the_rest(jetstream: bool) -> None:
    """A publish fails part-way through a batch with NATS still there: what went
    out is confirmed as usual, and only the rest is sent, after a pause."""

    @clocked
    async def scenario() -> None:
        link, _, publisher, spool = build(jetstream=jetstream, batch_size=16)
        running = Running(publisher)
        link.fails_after = 2
        sent = await offer(publisher, spool, 4)
        assert ids(link.published) == sent[:2]
        assert publisher.problem == "publish failed with NATS connected"
        await later(0.5)  # the backoff before trying again
        await confirm_all(link, jetstream)
        assert ids(link.published) == sent, "each once"
        assert spool.count == 0
        await running.finish()

    scenario()


@pytest.mark.parametrize("jetstream", [False, True], ids=["core", "jetstream"])
def test_connection_lost_mid_batch_resends_everything_unconfirmed(jetstream: bool) -> None:
    @clocked
    async def scenario() -> None:
        link, _, publisher, spool = build(jetstream=jetstream, batch_size=16)
        running = Running(publisher)
        link.breaks_after = 2
        sent = await offer(publisher, spool, 4)
        assert ids(link.published) == sent[:2]
        link.restore()
        await turns(100)
        await confirm_all(link, jetstream)
        assert ids(link.published) == sent[:2] + sent
        assert spool.count == 0
        await running.finish()

    scenario()


@clocked
async def test_spool_max_age_drops_and_counts_old_alerts() -> None:
    link, _, publisher, spool = build(max_age=60)
    link.drop()
    running = Running(publisher)
    old = spool_alerts(spool, 20)
    await turns()
    # Alerts accepted 61 s ago by the wall clock the spool stamps them with.
    for alert in spool.read(0, 100):
        object.__setattr__(alert, "accepted_ns", alert.accepted_ns - 61 * 10**9)
    fresh = spool_alerts(spool, 2, start=20)
    link.restore()
    await turns(100)
    assert publisher.telemetry.get("expired") == len(old)
    assert ids(link.published) == fresh
    await confirm_all(link, False)
    assert spool.count == 0
    await running.finish()


@clocked
async def test_alert_over_max_payload_is_shortened_to_fit() -> None:
    link, _, publisher, spool = build(max_payload=2000)
    running = Running(publisher)
    await offer(publisher, spool, 1, size=5000)
    (message,) = link.published
    # As long as fits with its headers: the cut is the least that makes it fit.
    assert 2000 - 2 <= message_size(message.payload, message.headers) <= 2000
    assert orjson.loads(message.payload)["output"].endswith("[truncated]")
    link.pong()
    await turns()
    assert publisher.telemetry.get("published") == 1
    await running.finish()


@clocked
async def test_alert_that_cannot_fit_is_undeliverable_and_the_rest_flows() -> None:
    link, _, publisher, spool = build(max_payload=400)
    running = Running(publisher)
    spool_alerts(spool, 1)
    # Nothing to shorten: a rule name alone is over the limit.
    spool.append(
        "http", "falco.notice.x", {"Nats-Msg-Id": "big"}, orjson.dumps({"rule": "r" * 500})
    )
    last = await offer(publisher, spool, 1, start=2)
    assert ids(link.published) == ["id-0000", *last]
    link.pong()
    await turns()
    assert publisher.telemetry.get("undeliverable") == 1
    assert publisher.telemetry.get("published") == 2
    assert spool.count == 0
    await running.finish()


@clocked
async def test_a_subject_past_the_protocol_line_limit_is_cut() -> None:
    link, _, publisher, spool = build()
    running = Running(publisher)
    subject = "falco.notice." + ".".join(["r" * 99] * 50)
    spool.append("http", subject, {"Nats-Msg-Id": "a"}, orjson.dumps({"rule": "r"}))
    publisher.notify()
    await turns()
    (message,) = link.published
    assert len(message.subject) <= MAX_SUBJECT_BYTES
    assert subject.startswith(message.subject)
    assert not message.subject.endswith(".")
    await running.finish()


@clocked
async def test_only_refused_alerts_settle_without_a_ping() -> None:
    link, _, publisher, spool = build(max_payload=100)
    running = Running(publisher)
    spool.append("http", "falco.notice.x", {"Nats-Msg-Id": "a"}, orjson.dumps({"rule": "r" * 200}))
    publisher.notify()
    await turns()
    await later(CONFIRM_INTERVAL)
    assert link.pings == []
    assert spool.count == 0
    assert publisher.telemetry.get("undeliverable") == 1
    await running.finish()


@pytest.mark.parametrize("jetstream", [False, True], ids=["core", "jetstream"])
def test_drain_on_stop_delivers_then_returns(jetstream: bool) -> None:
    @clocked
    async def scenario() -> None:
        link, _, publisher, spool = build(jetstream=jetstream)
        running = Running(publisher, drain_timeout=10)
        spool_alerts(spool, 3)
        running.stop.set()
        publisher.notify()
        await turns()
        assert not running.task.done(), "still delivering what is spooled"
        await confirm_all(link, jetstream)
        assert running.task.done()
        assert spool.count == 0

    scenario()


@clocked
async def test_drain_gives_up_after_its_timeout_and_keeps_the_rest() -> None:
    link, _, publisher, spool = build()
    link.drop()
    running = Running(publisher, drain_timeout=1)
    spool_alerts(spool, 3)
    await turns()
    running.stop.set()
    publisher.notify()
    await turns()
    await later(2)
    assert running.task.done()
    assert spool.count == 3


@clocked
async def test_stop_while_disconnected_with_nothing_spooled_returns_at_once() -> None:
    link, _, publisher, _ = build()
    link.drop()
    running = Running(publisher)
    await turns()
    running.stop.set()
    publisher.notify()
    await turns()
    assert running.task.done()


@clocked
async def test_run_again_after_a_failure_starts_from_the_oldest_alert() -> None:
    link, _, publisher, spool = build(jetstream=True)
    running = Running(publisher)
    sent = await offer(publisher, spool, 3)
    running.task.cancel()  # as if it had crashed; a supervisor calls run() again
    await asyncio.gather(running.task, return_exceptions=True)
    running = Running(publisher)
    await turns()
    assert ids(link.published) == sent + sent
    await confirm_all(link, True)
    assert spool.count == 0
    await running.finish()


@clocked
async def test_gathers_a_stream_spooled_one_per_turn() -> None:
    _, sink, publisher, spool = build(batch_size=64)
    running = Running(publisher)
    batches: list[int] = []
    send = sink.send

    async def counted(batch: Any) -> Any:
        batches.append(len(batch))
        return await send(batch)

    sink.send = counted  # type: ignore[method-assign]
    for i in range(32):
        spool_alerts(spool, 1, start=i)
        publisher.notify()
        await asyncio.sleep(0)
    await turns()
    assert sum(batches) == 32
    assert len(batches) <= 8, batches
    await running.finish()


@clocked
async def test_an_error_ack_that_is_not_an_object_is_retried() -> None:
    link, _, publisher, spool = build(jetstream=True)
    running = Running(publisher)
    sent = await offer(publisher, spool, 1)
    await link.ack({"error": "stream offline"})
    await turns()
    assert publisher.problem == "JetStream: stream offline (None)"
    await later(0.5)
    assert ids(link.published) == sent + sent
    await running.finish()


@clocked
async def test_answers_given_up_on_are_swept() -> None:
    """Receipts of a rewound window wait for answers that may never come; past
    SWEEP_AT the ones already done (cancelled) are dropped."""
    link, sink, publisher, spool = build(jetstream=True, batch_size=8)
    strategy = sink.strategy
    assert isinstance(strategy, JetStreamConfirmation)
    strategy.SWEEP_AT = 4
    running = Running(publisher)
    await offer(publisher, spool, 4)
    link.drop()  # the window is given up on; its answers never come
    link.restore()
    await turns(100)
    assert len(strategy._waiting) <= 4 + 4
    await confirm_all(link, True)
    assert spool.count == 0
    await running.finish()


# The sink on its own


@clocked
async def test_prepare_without_a_connection_is_a_passing_problem() -> None:
    link = FakeLink()
    sink = NatsSink(link, StreamSettings(create=True), jetstream=lambda: None)
    with pytest.raises(LinkDown):
        await sink.prepare()
    assert not sink.ready


@clocked
async def test_prepare_learns_the_streams_max_msg_size() -> None:
    js = FakeJetStream(max_msg_size=1500)
    link, _, publisher, spool = build(jetstream=True, js=js)
    running = Running(publisher)
    await offer(publisher, spool, 1, size=3000)
    (message,) = link.published
    assert len(message.payload) < 1500
    await running.finish()


@pytest.mark.parametrize("jetstream", [False, True], ids=["core", "jetstream"])
def test_an_alert_that_fits_exactly_is_sent_as_it_is(jetstream: bool) -> None:
    """The size counted against max_payload is exact in both modes: an alert whose
    headers (with JetStream's Nats-Expected-Stream) and payload fill max_payload to
    the byte goes out whole; one byte more and it is shortened."""

    @clocked
    async def scenario() -> None:
        payload = orjson.dumps({"uuid": "a", "output": "x" * 500, "output_fields": {}})
        headers = {"Nats-Msg-Id": "a"}
        if jetstream:
            headers = {**headers, "Nats-Expected-Stream": "FALCO"}
        exact = message_size(payload, headers)
        for limit, whole in ((exact, True), (exact - 1, False)):
            link, _, publisher, spool = build(jetstream=jetstream, max_payload=limit)
            running = Running(publisher)
            spool.append("http", "falco.notice.x", {"Nats-Msg-Id": "a"}, payload)
            publisher.notify()
            await turns()
            (message,) = link.published
            assert (message.payload == payload) is whole
            await running.finish()

    scenario()
