"""The gateway as one asyncio program: NATS sink, HTTP source, gRPC source, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from gateway.config import Settings, redact
from gateway.logs import log
from gateway.pipeline import Pipeline
from gateway.sinks.nats import NatsSink
from gateway.sources.grpc import FalcoGrpcSource, GrpcTls
from gateway.sources.http import create_app, serve_http
from gateway.subject import SubjectTemplate

LOG = logging.getLogger("gateway")


class Gateway:
    """Wires the pipeline from settings. `run()` returns after a clean shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sink = NatsSink(settings.nats_servers)
        self.pipeline = Pipeline(
            self.sink, SubjectTemplate(settings.subject_template), settings.minimum
        )
        self.grpc: FalcoGrpcSource | None = None
        if settings.falco_grpc:
            tls = None
            if not settings.falco_grpc.startswith("unix://"):
                tls = GrpcTls.from_files(
                    ca=settings.grpc_ca_cert,
                    key=settings.grpc_client_key,
                    cert=settings.grpc_client_cert,
                    server_name=settings.grpc_server_name,
                )
            self.grpc = FalcoGrpcSource(
                settings.falco_grpc, self.pipeline, settings.grpc_poll_interval, tls
            )
        self.app = create_app(self.pipeline, self.health, settings.max_body_bytes)
        self.stop = asyncio.Event()

    def health(self) -> tuple[bool, str]:
        if self.sink.connected:
            return True, "ok"
        return False, self.sink.status

    async def run(self) -> None:
        s = self.settings
        log(
            logging.INFO,
            "starting",
            LOG,
            nats=redact(s.nats_url),
            listen=s.listen,
            falco_grpc=s.falco_grpc or "off",
            subject_template=s.subject_template,
            minimum_priority=s.minimum.canonical,
        )
        await self.sink.start()
        http = asyncio.create_task(
            serve_http(self.app, s.listen_host, s.listen_port, self.stop.wait, s.shutdown_timeout),
            name="http",
        )
        grpc_task = None
        if self.grpc is not None:
            grpc_task = asyncio.create_task(
                self.grpc.run(self.stop, drain_timeout=s.shutdown_timeout), name="grpc"
            )
        stopper = asyncio.create_task(self.stop.wait())
        # A source that dies on its own (port taken) ends the gateway instead of
        # leaving it half alive.
        await asyncio.wait({http, stopper}, return_when=asyncio.FIRST_COMPLETED)
        self.stop.set()
        stopper.cancel()
        tasks = [t for t in (http, grpc_task) if t is not None]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await self.sink.close(timeout=s.shutdown_timeout)
        log(logging.INFO, "stopped", LOG, **self.pipeline.stats.summary())
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if not self.stop.is_set():
            log(logging.INFO, "shutting down", LOG, signal=sig.name)
        self.stop.set()
