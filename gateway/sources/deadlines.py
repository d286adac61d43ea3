"""Deadlines for reading request bodies: one timer for every request, not one each.

`asyncio.timeout` costs about 7 us per use (a Timeout object, a loop timer armed
and cancelled), paid on every alert although a body almost never stalls: Falco's
~1 KB POST arrives with its headers. Here entering and leaving a deadline is a
dict insert and delete; one timer looks at the open deadlines every `period`
seconds (a quarter of the timeout) while any are open, and cancels the tasks
past theirs. A stalled read therefore ends between `timeout` and
`timeout + period` after it started.
"""

from __future__ import annotations

import asyncio


class ReadDeadlines:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.period = max(timeout / 4, 0.01)
        self._open: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def enter(self) -> asyncio.Task[object]:
        """Start the current task's deadline; `leave` must follow, whatever happens."""
        task = asyncio.current_task()
        assert task is not None, "a deadline needs a task"
        loop = asyncio.get_running_loop()
        self._open[task] = loop.time() + self.timeout
        # A timer of a loop that has since closed (an app served twice) never fires.
        if self._timer is None or self._loop is not loop:
            self._loop = loop
            self._timer = loop.call_later(self.period, self._check)
        return task

    def leave(self, task: asyncio.Task[object]) -> None:
        self._open.pop(task, None)

    def expired(self, task: asyncio.Task[object]) -> bool:
        """Whether a CancelledError `task` got came from its deadline (which is then
        withdrawn: the task goes on to answer) rather than from someone else."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    def _check(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = [task for task, deadline in self._open.items() if deadline <= now]
        for task in late:
            del self._open[task]
            # The task is suspended in its body read or waiting for its turn to
            # read a large body (the only awaits between enter and leave), so the
            # CancelledError arrives there.
            self._expired.add(task)
            task.cancel()
        if self._open:
            self._timer = loop.call_later(self.period, self._check)
