"""End-to-end latency: alerts at a steady rate over HTTP and over gRPC, timed from
the alert's own time to its arrival at a NATS subscriber.
"""

from __future__ import annotations

from bench.collector import Arrivals, Collector
from bench.scenarios.parts import Feed, GatewayProc, LoadGen, Parts
from bench.stats import percentiles


class Latency(Parts):
    """Latency runs at a steady rate, for the core and JetStream phases."""

    async def _latency_http(
        self, gw: GatewayProc, load: LoadGen, col: Collector, mode: str
    ) -> None:
        s = self.sizes
        count = max(1, round(s.latency_rate * s.latency_seconds))
        key = f"latency.{mode}.http"
        what = f"end to end, HTTP, {_MODE[mode]}, {s.latency_rate:,.0f}/s"
        late = 0
        for attempt in range(s.repeats):
            col.reset(latency=True)
            result = await load.run(gw.port, 1, count, rate=s.latency_rate)
            arrivals = await col.wait_for(count, self._timeout(count))
            self._check_http(f"{what} #{attempt + 1}", count, result)
            self._check_arrivals(f"{what} #{attempt + 1}", count, arrivals, "http")
            late += result["behind_schedule"]
            self._add_latency(key, what, arrivals)
            # The same alerts timed from the moment their POST went out: the gateway's
            # own share, without the wait behind a slow answer to the previous one.
            sent = dict(zip(result["due_ns"], result["sent_ns"], strict=True))
            from_send = [(a - sent[e]) / 1000 for e, a in arrivals.timings if e in sent]
            if from_send:
                (p99,) = percentiles(from_send, [99])
                self.results.add(f"{key}.send_p99", f"{what}: p99 from the send", "ms", p99 / 1000)
            # Without the load generator's own lateness: it shares its core with
            # nats-server and the subscriber, and a POST it sends late through no fault
            # of the gateway's (the previous answer had come) is its delay, not the
            # gateway's. Waiting behind a slow previous answer still counts.
            own = own_delays(result["due_ns"], result["sent_ns"], result["answered_ns"])
            adjusted = [(a - e - own[e]) / 1000 for e, a in arrivals.timings if e in own]
            if adjusted:
                (p99,) = percentiles(adjusted, [99])
                self.results.add(f"{key}.own_p99",
                                 f"{what}: p99 without the load generator's own delays", "ms",
                                 p99 / 1000)  # fmt: skip
            (resp_p99,) = percentiles(result["latencies_us"], [99])
            self.results.add(f"{key}.resp_p99", f"{what}: response p99", "ms", resp_p99 / 1000)
        if late > s.repeats * count // 100:
            self.warnings.append(
                f"{what}: {late} of {s.repeats * count} POSTs went out after they were due "
                "(the previous answer came late), so those alerts waited, as in Falco"
            )
        self.say(f"{what}: p99 {self.results.median(f'{key}.p99'):.2f} ms")

    async def _latency_grpc(self, feed: Feed, col: Collector, mode: str) -> None:
        s = self.sizes
        count = max(1, round(s.latency_rate * s.latency_seconds))
        key = f"latency.{mode}.grpc"
        what = f"end to end, gRPC, {_MODE[mode]}, {s.latency_rate:,.0f}/s"
        for attempt in range(s.repeats):
            col.reset(latency=True)
            result = await feed.paced(count, s.latency_rate)
            arrivals = await col.wait_for(count, self._timeout(count))
            self._check_arrivals(f"{what} #{attempt + 1}", count, arrivals, "grpc")
            if result["late"] > count // 100:
                self.warnings.append(f"{what}: {result['late']} of {count} alerts queued late")
            self._add_latency(key, what, arrivals)
        self.say(f"{what}: p99 {self.results.median(f'{key}.p99'):.1f} ms")

    def _add_latency(self, key: str, what: str, arrivals: Arrivals) -> None:
        if not arrivals.latencies_us:
            return
        p50, p99, top = percentiles(arrivals.latencies_us, [50, 99, 100])
        self.results.add(f"{key}.p50", f"{what}: p50", "ms", p50 / 1000)
        self.results.add(f"{key}.p99", f"{what}: p99", "ms", p99 / 1000)
        self.results.add(f"{key}.max", f"{what}: max", "ms", top / 1000)


_MODE = {"core": "core", "js": "JetStream"}


def own_delays(due: list[int], sent: list[int], answered: list[int]) -> dict[int, int]:
    """How late each POST of one connection went out through the load generator's own
    doing: after both its due time and the previous answer. By due time, in ns."""
    delays: dict[int, int] = {}
    previous = 0
    for due_ns, sent_ns, answered_ns in zip(due, sent, answered, strict=True):
        delays[due_ns] = max(0, sent_ns - max(due_ns, previous))
        previous = answered_ns
    return delays
