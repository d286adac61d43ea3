"""ReadDeadlines: one timer for every body read; which cancellations are its own."""

from __future__ import annotations

import asyncio

import pytest

from gateway.sources.deadlines import ReadDeadlines


async def _read(deadlines: ReadDeadlines, body: asyncio.Future[bytes]) -> bytes | str:
    """A body read as the HTTP fast path does it: 'timeout' when the deadline ended it."""
    task = deadlines.enter()
    try:
        return await body
    except asyncio.CancelledError:
        if deadlines.expired(task):
            return "timeout"
        raise
    finally:
        deadlines.leave(task)


async def test_a_stalled_read_is_ended_and_the_task_goes_on() -> None:
    deadlines = ReadDeadlines(0.05)
    never: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    reader = asyncio.create_task(_read(deadlines, never))
    assert await asyncio.wait_for(reader, 5) == "timeout"
    # The deadline's cancel was withdrawn: the task was not left cancelling.
    assert reader.cancelling() == 0
    assert not deadlines._open
    assert not deadlines._expired


async def test_reads_that_finish_in_time_are_not_touched() -> None:
    deadlines = ReadDeadlines(0.05)
    loop = asyncio.get_running_loop()
    stalled: asyncio.Future[bytes] = loop.create_future()
    slow = asyncio.create_task(_read(deadlines, stalled))
    for _ in range(20):  # many quick reads while one stalls: one timer serves them all
        body: asyncio.Future[bytes] = loop.create_future()
        loop.call_soon(body.set_result, b"{}")
        assert await _read(deadlines, body) == b"{}"
    assert await asyncio.wait_for(slow, 5) == "timeout"
    assert deadlines._timer is None  # nothing open: no timer left running


async def test_someone_elses_cancel_is_not_taken_for_a_timeout() -> None:
    deadlines = ReadDeadlines(60)
    never: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    reader = asyncio.create_task(_read(deadlines, never))
    await asyncio.sleep(0)
    reader.cancel()  # a connection closing, a shutdown
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert not deadlines._open


def test_deadlines_work_again_in_a_new_event_loop() -> None:
    """An app served in one loop, then another (tests, a restart in-process): the
    first loop's timer is gone with it, and the second loop gets its own."""
    deadlines = ReadDeadlines(0.05)

    async def stalled_read() -> bytes | str:
        never: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        return await asyncio.wait_for(_read(deadlines, never), 5)

    async def open_and_leave() -> None:
        deadlines.leave(deadlines.enter())  # arms a timer that this loop never runs

    asyncio.run(open_and_leave())
    assert asyncio.run(stalled_read()) == "timeout"
