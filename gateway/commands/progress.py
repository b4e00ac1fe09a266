"""A long command's progress, on one line of stderr, only where a person watches.

On a terminal the line is rewritten in place (what is being done, how far, how long it has
taken; a ticker refreshes it while a step waits on the store) and erased at the end, before
the command prints its result. Piped or redirected (a CronJob, a script, `2> file`) nothing
is written: the output is what it would be without progress.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import TextIO

_TICK_S = 0.25  # how often the line is refreshed while a step runs
_ERASE = "\r\x1b[2K"  # carriage return, then erase the whole line


class Progress:
    """`with Progress("migrate", sys.stderr) as p: p.step("0001 llm_calls")`."""

    def __init__(self, what: str, stream: TextIO, width: int = 100) -> None:
        self.what, self.stream, self.width = what, stream, width
        isatty = getattr(stream, "isatty", None)
        self.shown = bool(isatty and isatty())
        self._text = ""
        self._done: int | None = None
        self._total: int | None = None
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._drawn = False

    def __enter__(self) -> Progress:
        if self.shown:
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def step(self, text: str, done: int | None = None, total: int | None = None) -> None:
        """What is being done now; `done` of `total` items when they are counted."""
        with self._lock:
            self._text, self._done, self._total = text, done, total
        self._draw()

    def _line(self) -> str:
        count = ""
        if self._done is not None:
            count = f" {self._done}" + (f"/{self._total}" if self._total else "")
        secs = time.monotonic() - self._t0
        line = f"{self.what}: {self._text}{count} ({secs:.0f}s)"
        return line if len(line) <= self.width else line[: self.width - 1] + "…"

    def _draw(self) -> None:
        if not self.shown:
            return
        with self._lock:
            if self._stop.is_set():
                return
            self.stream.write(_ERASE + self._line())
            self.stream.flush()
            self._drawn = True

    def _tick(self) -> None:
        while not self._stop.wait(_TICK_S):
            if self._text:
                self._draw()

    def close(self) -> None:
        """Erase the line (the result follows on a clean line)."""
        with self._lock:
            self._stop.set()
            if self._drawn:
                self.stream.write(_ERASE)
                self.stream.flush()
                self._drawn = False
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
