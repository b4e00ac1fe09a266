"""A deadline on the running task: `asyncio.timeout_at` for a loop already at hand.

asyncio's own looks the running loop up three times per use (on CPython 3.11 each lookup
is a `getpid` syscall, to notice a fork): with three deadlines on every call that was
eleven syscalls a call. This one is given the loop, and otherwise behaves the same: when
the deadline passes the task is cancelled, and the block raises `TimeoutError`.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

_current_task = asyncio.current_task


class Deadline:
    """`async with Deadline(loop, when):` — `when` in the loop's time."""

    __slots__ = ("_fired", "_loop", "_task", "_timer", "_when")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._loop = loop
        self._when = when
        self._fired = False
        self._task: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> Deadline:
        self._task = _current_task(self._loop)
        if self._task is None:
            raise RuntimeError("a Deadline must be used inside a task")
        self._timer = self._loop.call_at(self._when, self._fire)
        return self

    def _fire(self) -> None:
        self._fired = True
        assert self._task is not None
        self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._timer is not None and self._task is not None
        self._timer.cancel()
        # Our cancellation, and no other pending: it was the deadline (asyncio's rule).
        if self._fired and self._task.uncancel() == 0 and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc
