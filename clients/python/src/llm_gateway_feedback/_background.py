"""Sending events from a bounded queue on a thread of the client's own, in batches.

The habit of analytics clients (Segment's, PostHog's): the app's thread only puts the
event on a queue and goes on; a worker thread takes up to `flush_at` events at a time
(or whatever arrived within `flush_interval`), posts them as one batch and retries it on
network errors, 429 and 5xx. A full queue drops the new event rather than block or grow
without bound. What was queued is flushed at interpreter exit, within `shutdown_timeout`.
Nothing here raises into the app: failures go to `on_error` and the log.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from llm_gateway_feedback._events import FeedbackError

log = logging.getLogger("llm_gateway_feedback")

Batch = list[dict[str, Any]]
# Signals to the worker, on the queue with the events: send what you have; then stop.
_FLUSH: Any = object()
_STOP: Any = object()
Report = Callable[[FeedbackError, Batch], None]


class BackgroundSender:
    def __init__(self, deliver: Callable[[Batch], None], report: Report, max_queue_size: int,
                 flush_at: int, flush_interval: float) -> None:  # fmt: skip
        self._deliver = deliver  # posts one batch with retries; reports failures itself
        self._report = report
        self._max = max_queue_size
        self.flush_at = flush_at
        self.flush_interval = flush_interval
        self.dropped = 0  # events refused because the queue was full
        self._lock = threading.Lock()
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(max_queue_size)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = False
        # Flushed at exit; a weak reference, so that the client can still be collected.
        self.shutdown_timeout = 5.0
        ref = weakref.ref(self)
        atexit.register(lambda: (s := ref()) is not None and s.close(s.shutdown_timeout))

    def put(self, ev: dict[str, Any]) -> None:
        if self._closed:
            self._report(FeedbackError(0, "the client is closed: event not sent"), [ev])
            return
        self._ensure_worker()
        try:
            self._queue.put_nowait(ev)
        except queue.Full:
            self.dropped += 1
            err = FeedbackError(0, f"feedback queue full ({self._max} events): event dropped")
            self._report(err, [ev])

    def _ensure_worker(self) -> None:
        # A forked child (gunicorn, celery) has the queue but not the thread: start its own.
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid():
                if self._pid and self._pid != os.getpid():
                    self._queue = queue.Queue(self._max)  # the parent's events are its own
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="llm-gateway-feedback",
                                                daemon=True)  # fmt: skip
                self._thread.start()

    def _next_batch(self) -> tuple[Batch, bool]:
        """Up to flush_at events, waiting at most flush_interval after the first (less when
        a flush asks for what is there), and whether the worker was told to stop."""
        batch: Batch = []
        deadline: float | None = None
        while len(batch) < self.flush_at:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                break
            if item is _STOP or item is _FLUSH:
                self._queue.task_done()  # an event is done once delivered, a signal now
                if item is _STOP:
                    return batch, True
                if batch:
                    break
                continue
            batch.append(item)
            if deadline is None:
                deadline = time.monotonic() + self.flush_interval
        return batch, False

    def _run(self) -> None:
        while True:
            batch, stop = self._next_batch()
            if batch:
                try:
                    self._deliver(batch)
                except Exception as e:  # never let the worker die: the next batch must go
                    log.exception("feedback: sending a batch failed")
                    self._report(FeedbackError(0, f"unexpected error: {e!r}"), batch)
                finally:
                    for _ in batch:
                        self._queue.task_done()
            if stop:
                return

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued now, and wait until it was sent (or given up on); False on
        timeout."""
        if self._thread is None or self._pid != os.getpid():
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        q = self._queue
        try:  # the worker stops gathering a batch and sends what it has
            q.put(_FLUSH, timeout=timeout)
        except queue.Full:
            return False
        with q.all_tasks_done:
            while q.unfinished_tasks:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                q.all_tasks_done.wait(left)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the worker. False when events were still waiting at timeout."""
        if self._closed:
            return True
        self._closed = True
        done = self.flush(timeout)
        if self._thread is not None and self._pid == os.getpid():
            with contextlib.suppress(queue.Full):  # then the daemon thread dies with us
                self._queue.put_nowait(_STOP)
            self._thread.join(0 if not done else timeout)
        if not done:
            left = self._queue.qsize()
            log.warning("feedback: %d event(s) not sent at shutdown", left)
        return done
