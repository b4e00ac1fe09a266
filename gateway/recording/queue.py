"""Where records wait between the request path and the store: the first of the writer's
two jobs (the second, writing them in priced batches, is `writer.py`).

The request path calls `append(rec)`: one append, never a wait on the store. Two queues
share one interface:

- `LogQueue` (default): the durable local log (`log.RecordLog`). Records survive a
  process crash and are replayed at the next start; batches carry deduplication tokens.
  While the log cannot write (a full disk), records are held in memory up to a byte budget
  and written to the store from there; past the budget they are dropped and counted.
- `MemoryQueue`: records live in memory until written (no durability; bounded).

The writer asks for a batch (`next_batch`), notes it in flight (`begin`) and, once the
store has it, lets it go (`commit`); a batch that failed stays at the head, the same rows
with the same token.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgspec

from gateway.errors import StoreBusy, StoreError
from gateway.recording.log import LogConfig, Pos, RecordLog
from gateway.recording.record import encode_line

log = logging.getLogger("gateway.recording.queue")


@dataclass
class Batch:
    lines: list[bytes]  # JSONEachRow lines, as logged
    end: Pos | None = None
    token: str | None = None
    replayed: int = 0  # records in it that an earlier process had logged
    in_memory: bool = False  # taken from the memory overflow, not the log


class Queue(Protocol):
    def append(self, rec: msgspec.Struct) -> bool: ...
    def trouble(self) -> str: ...
    def pending(self) -> int: ...
    def size_bytes(self) -> int: ...
    def next_batch(self, n: int) -> Batch | None: ...
    def begin(self, batch: Batch) -> None: ...
    def commit(self, batch: Batch) -> None: ...
    def close(self) -> None: ...


class MemoryQueue:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._q: deque[bytes] = deque()
        self._held: Batch | None = None

    def append(self, rec: msgspec.Struct) -> bool:
        if len(self._q) >= self.limit:
            return False
        self._q.append(encode_line(rec))
        return True

    def pending(self) -> int:
        return len(self._q) + (len(self._held.lines) if self._held else 0)

    def size_bytes(self) -> int:
        return 0

    def trouble(self) -> str:
        return ""

    def next_batch(self, n: int) -> Batch | None:
        if self._held is None:
            q = self._q
            if not q:
                return None
            self._held = Batch([q.popleft() for _ in range(min(n, len(q)))])
        return self._held

    def begin(self, batch: Batch) -> None:
        pass

    def commit(self, batch: Batch) -> None:
        self._held = None

    def close(self) -> None:
        pass


# While the log is failing, one append a second tries the disk again.
_RETRY_DISK_S = 1.0
# Free space that counts as "the disk is back" when no append has tried it yet.
_ROOM_BYTES = 1024 * 1024


class LogQueue:
    def __init__(self, rlog: RecordLog, memory_bytes: int = 64 * 1024 * 1024) -> None:
        self.log = rlog
        self.memory_bytes = memory_bytes
        self._mem: deque[bytes] = deque()  # records the log could not take, oldest first
        self._mem_bytes = 0
        self._mem_lock = threading.Lock()  # appends (loop thread) vs. batches (writer thread)
        self._mem_batches = 0
        self._failed = ""  # why the log last failed to append ("" when it works)
        self._failed_at = 0.0
        done, in_flight = rlog.read_checkpoint()
        self._read = done
        self._in_flight_end = in_flight[1] if in_flight else None
        self._held: Batch | None = None
        self._appended = 0
        self._taken = 0  # records handed to batches and committed
        # Records from before this start still to write (counted at first read).
        self._backlog_seen = False

    def append(self, rec: msgspec.Struct) -> bool:
        line = encode_line(rec)
        retry_due = not self._failed or time.monotonic() - self._failed_at >= _RETRY_DISK_S
        if retry_due and (kept := self._to_log(line)) is not None:
            return kept
        with self._mem_lock:
            if self._mem_bytes + len(line) <= self.memory_bytes:
                self._mem.append(line)
                self._mem_bytes += len(line)
                return True
        # Memory is full too: the disk gets one more try before the record is dropped.
        return not retry_due and self._to_log(line) is True

    def _to_log(self, line: bytes) -> bool | None:
        """True: in the log; False: over the log's budget; None: the log cannot write."""
        try:
            pos = self.log.append(line)
        except OSError as e:
            self._fail(e)
            return None
        if pos is None:
            return False
        self._failed = ""
        self._appended += 1
        return True

    def _fail(self, e: OSError) -> None:
        if not self._failed:
            log.error(
                "record log cannot write; holding records in memory",
                extra={"error": str(e), "dir": str(self.log.dir),
                       "memory_budget_bytes": self.memory_bytes},
            )  # fmt: skip
        self._failed = f"the record log cannot write: {e.strerror or e}"
        self._failed_at = time.monotonic()

    def trouble(self) -> str:
        if not self._failed:
            return ""
        if time.monotonic() - self._failed_at >= _RETRY_DISK_S:
            # No append may come to find out that space is back (a load balancer that
            # trusts /readyz sends none): look at the disk.
            try:
                st = os.statvfs(self.log.dir)
                if st.f_bavail * st.f_frsize >= _ROOM_BYTES:
                    self._failed = ""
                    return ""
            except OSError:
                pass
        return f"{self._failed}; {len(self._mem)} records held in memory"

    def pending(self) -> int:
        return max(self._appended - self._taken, 0) + len(self._mem) + self._mem_batches

    def size_bytes(self) -> int:
        return self.log.size

    def next_batch(self, n: int) -> Batch | None:
        if self._held is not None:
            return self._held
        # After a crash the first batch is exactly the one that was in flight, so that its
        # token matches and the store drops it if it had arrived.
        until, self._in_flight_end = self._in_flight_end, None
        lines, end, replayed = self.log.read(self._read, n, until)
        if not lines:
            return self._memory_batch(n)
        start = self._read
        self._held = Batch(lines, end=end, replayed=replayed)
        self._held.token = f"{self.log.log_id}:{start}-{end}"
        self._batch_start = start
        return self._held

    def _memory_batch(self, n: int) -> Batch | None:
        with self._mem_lock:
            if not self._mem:
                return None
            lines = [self._mem.popleft() for _ in range(min(n, len(self._mem)))]
        self._mem_batches = len(lines)
        # A retried batch keeps its token: the store drops it if it had arrived.
        self._held = Batch(lines, token=f"{self.log.log_id}:mem-{uuid.uuid4().hex}",
                           in_memory=True)  # fmt: skip
        return self._held

    def begin(self, batch: Batch) -> None:
        if batch.in_memory:
            return
        assert batch.end is not None
        self.log.begin(self._batch_start, batch.end)

    def commit(self, batch: Batch) -> None:
        if batch.in_memory:
            with self._mem_lock:
                self._mem_bytes -= sum(map(len, batch.lines))
            self._mem_batches = 0
            self._held = None
            return
        assert batch.end is not None
        self.log.commit(batch.end)
        self._read = batch.end
        self._taken += len(batch.lines) - batch.replayed
        self._held = None

    def close(self) -> None:
        # What memory still holds goes to the log if it can now: the next start replays it.
        held = self._held.lines if self._held is not None and self._held.in_memory else []
        for line in [*held, *self._mem]:
            try:
                if self.log.append(line) is None:
                    break
            except OSError:
                break
        self.log.close()


def open_queue(lc: LogConfig, memory_limit: int, stream: str = "") -> Queue:
    """The durable log, in the first worker slot (`w0`, `w1`, ...) no live process holds;
    a restarted worker takes its predecessor's slot and replays what it left. Without the
    log, a memory queue of `memory_limit` records."""
    if not lc.enabled:
        return MemoryQueue(memory_limit)
    for slot in range(1024):
        rlog = RecordLog(
            Path(lc.dir) / stream / f"w{slot}",
            segment_bytes=lc.segment_bytes,
            max_bytes=lc.max_bytes,
            fsync_interval=lc.fsync_interval_ms / 1000.0,
        )
        try:
            rlog.open()
        except StoreBusy:
            continue
        return LogQueue(rlog, lc.memory_bytes)
    raise StoreError(f"no free record log slot under {lc.dir}")
