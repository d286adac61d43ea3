"""The supervisor of the long-lived tasks: restart on failure, stop when asked, fatal is fatal."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway import supervisor
from gateway.backoff import Backoff
from gateway.errors import StreamError
from gateway.supervisor import Supervised


def quick() -> Backoff:
    return Backoff(initial=0.001, maximum=0.002)


class Flaky:
    """A task that fails `failures` times (its dependency raising), then runs until stopped."""

    def __init__(self, stop: asyncio.Event, failures: int, error: Exception) -> None:
        self.stop = stop
        self.failures = failures
        self.error = error
        self.runs = 0
        self.running = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            await asyncio.sleep(0)
            raise self.error
        self.running.set()
        await self.stop.wait()


async def test_a_failing_task_is_logged_counted_and_restarted(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = asyncio.Event()
    flaky = Flaky(stop, 3, ValueError("dependency broke"))
    task = Supervised("publisher", flaky, stop, backoff=quick())
    runner = asyncio.create_task(task.run())
    with caplog.at_level(logging.ERROR, "gateway.supervisor"):
        await asyncio.wait_for(flaky.running.wait(), 10)
    assert (task.failures, flaky.runs, task.state) == (3, 4, "running")
    assert not task.up  # not until it has run a while without failing
    monkeypatch.setattr(supervisor, "STEADY", 0.0)
    assert task.up
    assert task.last_error == "ValueError: dependency broke"
    failures = [r for r in caplog.records if r.getMessage() == "task failed, restarting"]
    assert len(failures) == 3
    fields = [r.fields for r in failures]
    assert all(f["task"] == "publisher" and f["error"] == task.last_error for f in fields)
    # The traceback once: the same failure again logs one line without it.
    assert "Traceback" in fields[0]["traceback"]
    assert "dependency broke" in fields[0]["traceback"]
    assert "traceback" not in fields[1]
    stop.set()
    await asyncio.wait_for(runner, 10)
    assert (task.state, task.failures) == ("done", 3)


async def test_while_waiting_to_restart_the_task_is_down() -> None:
    stop = asyncio.Event()
    flaky = Flaky(stop, 1, RuntimeError("boom"))
    task = Supervised("grpc", flaky, stop, backoff=Backoff(initial=60, maximum=60))
    runner = asyncio.create_task(task.run())
    while task.failures == 0:
        await asyncio.sleep(0.001)
    assert (task.state, task.up) == ("restarting", False)
    stop.set()  # a stop ends the wait; intake is not restarted for it
    await asyncio.wait_for(runner, 10)
    assert (task.state, flaky.runs) == ("done", 1)


async def test_a_clean_stop_is_not_a_failure() -> None:
    stop = asyncio.Event()
    flaky = Flaky(stop, 0, RuntimeError())
    task = Supervised("http", flaky, stop, backoff=quick())
    runner = asyncio.create_task(task.run())
    await flaky.running.wait()
    stop.set()
    await asyncio.wait_for(runner, 10)
    assert (task.failures, task.state, flaky.runs) == (0, "done", 1)


async def test_returning_when_nobody_asked_is_a_failure() -> None:
    stop = asyncio.Event()
    runs = 0

    async def ends_early() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            stop.set()
        await asyncio.sleep(0)

    task = Supervised("grpc", ends_early, stop, backoff=quick())
    await asyncio.wait_for(task.run(), 10)
    assert task.failures == 2
    assert task.last_error == "ended on its own"


async def test_fatal_errors_end_the_gateway_without_a_restart() -> None:
    stop = asyncio.Event()
    flaky = Flaky(stop, 5, StreamError("stream FALCO does not exist"))
    task = Supervised("publisher", flaky, stop, backoff=quick())
    with pytest.raises(StreamError):
        await asyncio.wait_for(task.run(), 10)
    assert (task.state, flaky.runs, task.failures) == ("failed", 1, 0)


async def test_an_error_fatal_at_start_is_retried_later() -> None:
    stop = asyncio.Event()
    # The port taken at start: the gateway cannot serve.
    first = Supervised(
        "http", Flaky(stop, 1, OSError("address in use")), stop, fatal_at_start=(OSError,)
    )
    with pytest.raises(OSError, match="address in use"):
        await asyncio.wait_for(first.run(), 10)
    # Once it served, the same error is one more failure to restart from.
    runs = 0

    async def serves_then_fails() -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            raise OSError("socket gone")
        if runs == 3:
            stop.set()
        await asyncio.sleep(0)

    later = Supervised("http", serves_then_fails, stop, fatal_at_start=(OSError,), backoff=quick())
    await asyncio.wait_for(later.run(), 10)
    assert (later.failures, later.last_error) == (2, "OSError: socket gone")


async def test_a_task_with_a_last_chance_runs_once_more_when_asked_to_stop() -> None:
    drain = asyncio.Event()
    runs: list[bool] = []

    async def publisher() -> None:
        runs.append(drain.is_set())
        if not drain.is_set():
            raise RuntimeError("NATS sink broke")
        # Draining: deliver what is spooled, then return.

    task = Supervised("publisher", publisher, drain, last_chance=True, backoff=Backoff(60, 60))
    runner = asyncio.create_task(task.run())
    while task.state != "restarting":
        await asyncio.sleep(0.001)
    drain.set()  # shutdown: no waiting out the backoff, one more run to drain
    await asyncio.wait_for(runner, 10)
    assert runs == [False, True]
    assert task.state == "done"


async def test_a_task_that_fails_while_draining_is_not_run_forever() -> None:
    drain = asyncio.Event()
    drain.set()
    runs = 0

    async def publisher() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("still broken")

    task = Supervised("publisher", publisher, drain, last_chance=True, backoff=quick())
    await asyncio.wait_for(task.run(), 10)
    assert (runs, task.failures, task.state) == (1, 1, "done")


async def test_the_failure_shown_in_health_and_logged_is_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    flaky = Flaky(stop, 1, ValueError("x" * 100_000))
    task = Supervised("grpc", flaky, stop, backoff=quick())
    runner = asyncio.create_task(task.run())
    await asyncio.wait_for(flaky.running.wait(), 10)
    stop.set()
    await runner
    assert len(task.last_error) < 400
    assert task.last_error.startswith("ValueError: xxx")
    (logged,) = [r for r in caplog.records if r.getMessage() == "task failed, restarting"]
    trace = logged.fields["traceback"]  # type: ignore[attr-defined]
    assert len(trace) < 17 * 1024
    assert trace.startswith("Traceback (most recent call last)")
    assert "characters left out" in trace
