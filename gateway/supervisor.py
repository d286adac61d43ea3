"""Keeps the gateway's long-lived tasks alive: none may die in silence.

Each task (the HTTP server, the gRPC source, the publisher, the NATS connect)
runs under a `Supervised`: an unexpected exception is logged at error with its
traceback, counted (`falco_nats_gateway_task_failures_total{task}`), and the
task started again after a capped, jittered backoff. A task that returns
because it was asked to stop is not a failure; one that returns when nobody
asked is (and is restarted). Errors that are fatal by design (a configuration
error, the JetStream stream missing with stream_create off, the HTTP port taken
at start) are not retried: they end the gateway with their message.

`state` is what /healthz and the gauges read, so a task that is down or waiting
to restart never shows as healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Awaitable, Callable

from gateway.backoff import Backoff
from gateway.errors import ConfigError, StreamError
from gateway.logs import OncePer, log

LOG = logging.getLogger("gateway.supervisor")

# Errors that no restart can cure: the gateway ends with their message.
FATAL: tuple[type[BaseException], ...] = (ConfigError, StreamError)
# A run that lasted this long before failing was healthy: the next restart waits
# the shortest delay again instead of the growing one.
HEALTHY_RUN = 30.0
# After a restart a task counts as up once it has run this long: one in a crash
# loop, failing at once on every run, is never reported up between two runs.
STEADY = 1.0
# The most of a failure's message kept for /healthz.
ERROR_CHARS = 300
# The most of a traceback logged: its start and its end (the frames and the error).
TRACEBACK_CHARS = 16 * 1024


class Supervised:
    """One long-lived task, restarted with backoff when it fails.

    `start` makes a new run of the task (a fresh coroutine each time). `stopping`
    is the event that asks it to stop. `fatal_at_start`: errors of its first run that
    end the gateway (the HTTP port taken). `last_chance`: after `stopping` is set,
    a task waiting to restart runs once more (the publisher, to drain the spool).
    """

    def __init__(
        self,
        name: str,
        start: Callable[[], Awaitable[None]],
        stopping: asyncio.Event,
        *,
        fatal_at_start: tuple[type[BaseException], ...] = (),
        last_chance: bool = False,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self._start = start
        self.stopping = stopping
        self.fatal_at_start = fatal_at_start
        self.last_chance = last_chance
        self.backoff = backoff if backoff is not None else Backoff(initial=0.5, maximum=30.0)
        # starting, running, restarting (failed, waiting to run again), done (returned
        # as asked), failed (fatal).
        self.state = "starting"
        self.failures = 0
        self.last_error = ""
        self._tracebacks = OncePer()
        self._since = 0.0  # monotonic time of the current run's start

    @property
    def up(self) -> bool:
        """Running (for STEADY seconds, after a failure), or finished as it should."""
        if self.state == "running" and self.failures:
            return time.monotonic() - self._since >= STEADY
        return self.state in {"running", "done"}

    async def run(self) -> None:
        """Run the task until it is asked to stop; raise only a fatal error."""
        loop = asyncio.get_running_loop()
        first = True
        while True:
            self.state = "running"
            self._since = time.monotonic()
            began = loop.time()
            began_stopping = self.stopping.is_set()
            try:
                await self._start()
            except asyncio.CancelledError:
                self.state = "done"
                raise
            except FATAL:
                self.state = "failed"
                raise
            except Exception as exc:
                if first and isinstance(exc, self.fatal_at_start):
                    self.state = "failed"
                    raise
                self._failed(exc)
            else:
                if self.stopping.is_set():
                    self.state = "done"
                    return
                self._failed(None)
            first = False
            if self.stopping.is_set() and (began_stopping or not self.last_chance):
                self.state = "done"
                return
            if loop.time() - began >= HEALTHY_RUN:
                self.backoff.reset()
            self.state = "restarting"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.backoff.next_delay())
            if self.stopping.is_set() and not self.last_chance:
                self.state = "done"
                return

    def _failed(self, exc: Exception | None) -> None:
        self.failures += 1
        if exc is None:
            self.last_error = "ended on its own"
            log(
                logging.ERROR,
                "task ended unexpectedly",
                LOG,
                task=self.name,
                failures=self.failures,
            )
            return
        text = f"{type(exc).__name__}: {exc}"
        # Shown in /healthz and check: an exception's text may carry a whole alert.
        self.last_error = text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS] + "..."
        fields: dict[str, object] = {}
        # The traceback once per kind of failure: a task failing the same way on
        # every restart logs one line per restart after the first.
        if self._tracebacks.first(f"{type(exc).__qualname__}:{_where(exc)}"):
            text = "".join(traceback.format_exception(exc)).rstrip()
            if len(text) > TRACEBACK_CHARS:
                half = TRACEBACK_CHARS // 2
                gap = len(text) - 2 * half
                text = f"{text[:half]}\n... ({gap} characters left out) ...\n{text[-half:]}"
            fields["traceback"] = text
        log(
            logging.ERROR,
            "task failed, restarting",
            LOG,
            task=self.name,
            error=self.last_error,
            failures=self.failures,
            **fields,
        )


def _where(exc: BaseException) -> str:
    """Where `exc` was raised: file and line of the innermost frame."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
