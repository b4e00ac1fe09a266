"""Background jobs: what runs beside the request path (key refresh, spend seeding, experiment
evaluation, metric sampling, the writers, drift, the store's migrations).

Each job is declared beside the component it serves and has one small interface: `start`
(on the running loop), `stop`, and `health`, the figures /readyz and /metrics show for it.
The composition root (`app.py`) only lists them. `Periodic` is the common kind: a piece of
work run every interval, whose failures are logged, counted and tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger("gateway.jobs")


@dataclass(frozen=True, slots=True)
class Health:
    """How a job is doing: the figure is the age of its last success."""

    last_ok_s: float | None  # seconds since it last did its work (None: not yet)
    failures: int  # failed runs since start
    error: str = ""  # the last failure's, while it is the latest outcome

    def to_json(self) -> dict[str, object]:
        age = None if self.last_ok_s is None else round(self.last_ok_s, 3)
        return {"last_ok_s": age, "failures": self.failures, "error": self.error}


class Job(Protocol):
    name: str

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> Health: ...


class Tally:
    """A job's record of its runs, for `health`."""

    __slots__ = ("error", "failures", "last_ok")

    def __init__(self) -> None:
        self.last_ok: float | None = None
        self.failures = 0
        self.error = ""

    def ok(self) -> None:
        self.last_ok, self.error = time.monotonic(), ""

    def failed(self, e: BaseException) -> None:
        self.failures += 1
        self.error = f"{type(e).__name__}: {e}"[:300]

    def health(self) -> Health:
        age = None if self.last_ok is None else time.monotonic() - self.last_ok
        return Health(age, self.failures, self.error)


@dataclass(eq=False)
class Periodic:
    """`work` every `interval` seconds, the first run after `delay`; `until` (when given)
    must hold before the first run. A failed run is logged and counted; with `backoff`
    the next try comes sooner and then later (doubling up to `interval`), and with `once`
    the job ends after its first success."""

    name: str
    interval: float
    work: Callable[[], Awaitable[object]]
    delay: float = 0.0
    until: Callable[[], bool] | None = None
    backoff: float = 0.0
    once: bool = False
    tally: Tally = field(default_factory=Tally)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        while self.until is not None and not self.until():
            await asyncio.sleep(0.5)
        wait = self.backoff
        while True:
            try:
                await self.work()
            except Exception as e:  # keep running whatever happened this time
                self.tally.failed(e)
                log.warning(f"{self.name} failed; will retry",
                            extra={"job": self.name, "error": str(e)[:500]})  # fmt: skip
                if self.backoff:
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, self.interval)
                    continue
            else:
                self.tally.ok()
                wait = self.backoff
                if self.once:
                    return
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def health(self) -> Health:
        return self.tally.health()
