"""The gateway as one asyncio program: sources, spool, publisher, NATS, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from gateway import __version__
from gateway.config import Settings, naming, redact
from gateway.config import split_listen as config_split_listen
from gateway.dedup import DedupWindow
from gateway.logs import log
from gateway.nats_options import connect_options
from gateway.normalize import Limits
from gateway.payload import Stamp
from gateway.pipeline import Pipeline
from gateway.publisher import Publisher
from gateway.sinks.nats import NatsSink
from gateway.sinks.natspy import NatsLink, self_check
from gateway.sinks.stream import stream_settings
from gateway.sources.grpc import FalcoGrpcSource, GrpcTls
from gateway.sources.http import BasicAuth, HttpTls, create_app, serve_http
from gateway.spool import Spool
from gateway.subject import SubjectTemplate
from gateway.supervisor import Supervised
from gateway.telemetry import Telemetry, counter, gauge, labelled_counter

LOG = logging.getLogger("gateway")


class Gateway:
    """Wires the pipeline from settings. `run()` returns after a clean shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = s = settings
        stream = stream_settings(s) if s.jetstream else None
        self.telemetry = Telemetry(rule_labels=s.metrics_rule_labels)
        # A nats-py this gateway does not know how to drive stops it here, by name.
        self_check()
        self.link = NatsLink(connect_options(s), request_timeout=s.publish_timeout)
        self.sink = NatsSink(
            self.link,
            stream,
            publish_timeout=s.publish_timeout,
            jetstream=lambda: self.link.jetstream,
        )
        with naming("spool_dir"):
            self.spool = Spool(s.spool_dir, s.spool_max_bytes, s.spool_sync)
        self.publisher = Publisher(
            self.spool,
            self.sink,
            self.telemetry,
            batch_size=s.publish_batch,
            max_age=s.spool_max_age,
        )
        self.dedup = DedupWindow(s.dedup_window, s.dedup_max_entries)
        self.pipeline = Pipeline(
            SubjectTemplate(s.subject_template),
            s.minimum,
            self.spool,
            dedup=self.dedup,
            on_spooled=self.publisher.notify,
            telemetry=self.telemetry,
            stamp=Stamp(s.custom_field_map, s.custom_tag_list),
        )
        limits = Limits(s.max_output_fields, s.max_field_bytes)
        self.grpc: FalcoGrpcSource | None = None
        if s.falco_grpc:
            tls = GrpcTls.for_address(
                s.falco_grpc,
                ca=s.grpc_ca_cert,
                key=s.grpc_client_key,
                cert=s.grpc_client_cert,
                server_name=s.grpc_server_name,
            )
            self.grpc = FalcoGrpcSource(
                s.falco_grpc,
                self.pipeline,
                s.grpc_poll_interval,
                tls,
                max_message_bytes=s.grpc_max_message_bytes,
                limits=limits,
            )
        self.telemetry.watch(self._link_metrics)
        auth = BasicAuth(s.http_user, s.secret("http_password")) if s.http_user else None
        self.http_tls = HttpTls(s.tls_cert, s.tls_key, s.tls_client_ca) if s.http_tls else None
        self.health_bind = config_split_listen(s.health_listen) if s.health_listen else None
        self.app = create_app(
            self.pipeline,
            self.health,
            s.max_body_bytes,
            self.telemetry.exposition,
            auth=auth,
            health_port=self.health_bind[1] if self.health_bind else None,
            read_timeout=s.http_read_timeout,
            max_in_flight=s.http_max_in_flight,
            limits=limits,
        )
        # `stop` ends intake; `_drain` then tells the publisher to finish up.
        self.stop = asyncio.Event()
        self._drain = asyncio.Event()
        # The long-lived tasks, each restarted after a failure (gateway/supervisor.py).
        # NatsLink.start() would run this in a task of its own, unwatched.
        self.nats_task = Supervised("nats", self.link.keep_connected, self.stop)
        self.http_task = Supervised(
            "http",
            self._serve_http,
            self.stop,
            # The port taken, or the certificate unreadable: the gateway cannot serve.
            fatal_at_start=(OSError,),
        )
        self.publisher_task = Supervised(
            "publisher",
            lambda: self.publisher.run(self._drain, s.shutdown_timeout),
            self._drain,
            last_chance=True,
        )
        self.grpc_task: Supervised | None = None
        if self.grpc is not None:
            grpc = self.grpc
            self.grpc_task = Supervised(
                "grpc", lambda: grpc.run(self.stop, drain_timeout=s.shutdown_timeout), self.stop
            )
        self.tasks = [
            t
            for t in (self.http_task, self.grpc_task, self.publisher_task, self.nats_task)
            if t is not None
        ]

    def _link_metrics(self) -> Iterator[Metric]:
        """Read at scrape time: depths and link states, never stale."""
        yield gauge("falco_nats_gateway_spool_alerts", "Alerts waiting for NATS", self.spool.count)
        yield gauge("falco_nats_gateway_spool_bytes", "Bytes waiting for NATS", self.spool.bytes)
        yield gauge("falco_nats_gateway_spool_limit_bytes", "spool_max_bytes", self.spool.max_bytes)
        if self.spool.durable:
            yield gauge(
                "falco_nats_gateway_spool_writable",
                "0 while the spool's disk refuses writes (alerts are refused meanwhile)",
                not self.spool.disk_error,
            )
            yield labelled_counter(
                "falco_nats_gateway_spool_disk_errors",
                "Writes the spool's disk refused (full, I/O error), by operation",
                "operation",
                self.spool.errors.items(),
            )
            yield counter(
                "falco_nats_gateway_spool_damaged",
                "Damaged spool files and unreadable rows found at start-up and moved aside",
                self.spool.damaged_items,
            )
        yield gauge(
            "falco_nats_gateway_dedup_entries", "Alert ids remembered for dedup", len(self.dedup)
        )
        yield gauge(
            "falco_nats_gateway_nats_connected", "1 when connected to NATS", self.sink.connected
        )
        yield counter(
            "falco_nats_gateway_nats_reconnects", "Reconnections to NATS", self.link.reconnects
        )
        yield gauge(
            "falco_nats_gateway_delivery_degraded",
            "1 while NATS is connected but not taking alerts (the reason is in /healthz)",
            bool(self.publisher.problem),
        )
        mode = "jetstream" if self.settings.jetstream else "core"
        yield gauge(
            "falco_nats_gateway_info",
            "The gateway's version and mode",
            1,
            {"version": __version__, "mode": mode},
        )
        yield labelled_counter(
            "falco_nats_gateway_task_failures",
            "Unexpected failures of the gateway's long-lived tasks, each followed by a restart",
            "task",
            ((t.name, t.failures) for t in self.tasks),
        )
        running = GaugeMetricFamily(
            "falco_nats_gateway_task_up",
            "1 while the task runs (or finished its job), 0 while it waits to restart",
            labels=["task"],
        )
        for task in self.tasks:
            running.add_metric([task.name], task.up)
        yield running
        if self.grpc is not None:
            # A gRPC task that died would leave its last state behind: connected
            # only while the task runs too.
            connected = self.grpc.state.state == "connected"
            connected = connected and self.grpc_task is not None and self.grpc_task.up
            yield gauge(
                "falco_nats_gateway_grpc_connected",
                "1 while the Falco gRPC stream is up",
                connected,
            )
            reconnects = max(self.grpc.connects - 1, 0)
            yield counter(
                "falco_nats_gateway_grpc_reconnects", "Reconnections to Falco gRPC", reconnects
            )
            if self.grpc.falco_version:
                labels = {"version": self.grpc.falco_version}
                yield gauge("falco_nats_gateway_falco_info", "Falco's version over gRPC", 1, labels)

    def health(self) -> tuple[bool, str]:
        """/healthz: NATS connected and taking alerts, no task down after a failure;
        else why not."""
        down = [
            f"{t.name} task {t.state} after {t.failures} failures (last: {t.last_error})"
            for t in self.tasks
            if not t.up and t.failures
        ]
        if not self.sink.connected:
            down.insert(0, self.link.status)
        elif self.publisher.problem:
            down.insert(0, f"delivery degraded: {self.publisher.problem}")
        if down:
            return False, "; ".join(down)
        return True, "ok"

    async def run(self) -> None:
        s = self.settings
        log(
            logging.INFO,
            "starting",
            LOG,
            nats=redact(s.nats_url),
            mode="jetstream" if s.jetstream else "core",
            listen=s.listen,
            falco_grpc=s.falco_grpc or "off",
            subject_template=s.subject_template,
            minimum_priority=s.minimum.canonical,
            spool=self.spool.location,
        )
        # Start-up leaves ~55k long-lived objects (modules, classes, the frameworks'
        # tables). A full collection walks them all, a ~10 ms pause that every alert
        # waiting behind it would see; they live as long as the process, so they are
        # moved out of the collector's sight once.
        gc.collect()
        gc.freeze()
        connect = asyncio.create_task(self.nats_task.run(), name="nats-connect")
        publisher = asyncio.create_task(self.publisher_task.run(), name="publisher")
        intake = [asyncio.create_task(self.http_task.run(), name="http")]
        if self.grpc_task is not None:
            intake.append(asyncio.create_task(self.grpc_task.run(), name="grpc"))
        stopper = asyncio.create_task(self.stop.wait())
        # Supervised tasks end before `stop` only on a fatal error (the HTTP port
        # taken, the stream missing): that ends the gateway, not half of it.
        await asyncio.wait(
            {*intake, publisher, connect, stopper}, return_when=asyncio.FIRST_COMPLETED
        )
        self.stop.set()
        stopper.cancel()
        results = await asyncio.gather(*intake, return_exceptions=True)
        self._drain.set()
        self.publisher.notify()
        results.append((await asyncio.gather(publisher, return_exceptions=True))[0])
        await _cancel(connect)
        if connect.done():
            results.append((await asyncio.gather(connect, return_exceptions=True))[0])
        await self.link.close(timeout=s.shutdown_timeout)
        self.spool.close()
        log(logging.INFO, "stopped", LOG, spooled=self.spool.count, **self.telemetry.summary())
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result

    async def _serve_http(self) -> None:
        s = self.settings
        await serve_http(
            self.app,
            s.listen_host,
            s.listen_port,
            self.stop.wait,
            s.shutdown_timeout,
            tls=self.http_tls,
            health=self.health_bind,
            read_timeout=s.http_read_timeout,
        )

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if not self.stop.is_set():
            log(logging.INFO, "shutting down", LOG, signal=sig.name)
        self.stop.set()


async def _cancel(task: asyncio.Task[None], tries: int = 50) -> None:
    """Cancel `task` and wait for it, cancelling again if the cancellation was
    swallowed: nats-py's connect runs asyncio.wait_for, which can turn a
    cancellation that meets its own timeout into a TimeoutError it then retries.
    Gives up (the task is left to the loop's end) after `tries` tenths of a second."""
    for _ in range(tries):
        if task.done():
            return
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    log(logging.WARNING, "task did not stop when cancelled", LOG, task=task.get_name())
