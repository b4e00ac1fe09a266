"""The durable local log between the request path and the batch writer.

Every record is appended (one JSON line, one `write` to an O_APPEND file) before the
client's response finishes. What the guarantee is, exactly:

- Process crash (`kill -9`, OOM): nothing appended is lost; the kernel's page cache holds
  it and the next start replays it.
- Machine crash or power loss: at most the last `fsync_interval_ms` of appends is lost
  (a background thread fsyncs the open segment that often; 0 fsyncs every append).

Segments (`seg-<n>.jsonl`) rotate at `segment_bytes`. The writer checkpoints the position
up to which rows are safely in the store and deletes older segments. Before inserting a
batch it notes the batch's range ("in flight"), and the insert carries a deduplication
token derived from that range: replaying after a crash between insert and checkpoint sends
the very same batch with the same token, and ClickHouse drops it as a duplicate.

Past `max_bytes` on disk a record is not kept: the caller counts and logs the drop.

A failed or short write (a full disk) is undone: the segment is cut back to its last whole
line, so that no torn line sits between records, and the caller gets the `OSError` (the
writer then holds the record in memory, see `writer.LogQueue`). Segments whose records are
all in the store are deleted at once, the open one included (appends move to a new one), and
before the checkpoint moves: the checkpoint is rewritten in place, so neither step needs
free space and a full disk never keeps what is already stored.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from msgspec import Meta

from gateway.errors import StoreBusy
from gateway.recording.filelock import try_lock
from gateway.sections import Amount, Count, Section

log = logging.getLogger("gateway.recording.log")

LOCK = "LOCK"
_READ_CHUNK = 16 * 1024 * 1024
CHECKPOINT = "checkpoint.json"
# The checkpoint is overwritten in place at this fixed size (one sector: written whole), so
# moving it needs no free space.
_CHECKPOINT_BYTES = 512
LOG_ID = "log-id"


@dataclass(frozen=True, slots=True, order=True)
class Pos:
    seg: int
    off: int

    def __str__(self) -> str:
        return f"{self.seg}:{self.off}"


class LogConfig(Section, frozen=True):
    """The `log` config section: the durable local record log (the guarantee: above)."""

    enabled: bool | None = None  # default: on unless store.kind is disabled
    dir: str = ""  # default: <store.path>/log for chdb, else ./llm-gateway-log
    max_bytes: Annotated[int, Meta(ge=4096)] = 1024 * 1024 * 1024
    segment_bytes: Annotated[int, Meta(ge=4096)] = 64 * 1024 * 1024
    fsync_interval_ms: Amount = 1000.0  # 0: fsync every record
    memory_bytes: Count = 64 * 1024 * 1024  # records held in memory while the log cannot write


_LOG = LogConfig()  # the defaults


class RecordLog:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        segment_bytes: int = _LOG.segment_bytes,
        max_bytes: int = _LOG.max_bytes,
        fsync_interval: float = _LOG.fsync_interval_ms / 1000.0,
    ) -> None:
        self.dir = Path(directory)
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.fsync_interval = fsync_interval
        self._lock_fd: int | None = None
        self._ckpt_fd = -1
        self._fd = -1
        self._seg = 0
        self._off = 0
        self._bytes_before = 0  # bytes in segments older than the open one
        self._dirty = False
        self._size_lock = threading.Lock()  # appends (loop thread) vs. commits (writer thread)
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        self.log_id = ""
        self._first_live = 0

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = try_lock(self.dir / LOCK)
        if fd is None:
            raise StoreBusy(f"record log {self.dir} is held by another process")
        self._lock_fd = fd
        id_file = self.dir / LOG_ID
        if not id_file.exists():
            id_file.write_text(secrets.token_hex(8))
        self.log_id = id_file.read_text().strip()
        done, in_flight = self.read_checkpoint()
        self._ckpt_fd = os.open(self.dir / CHECKPOINT, os.O_RDWR | os.O_CREAT, 0o600)
        self._write_checkpoint(done, in_flight)  # allocates its full size now
        segs = self.segments()
        for seg in segs:  # empty leftovers of earlier starts
            if self._seg_size(seg) == 0:
                self._seg_path(seg).unlink(missing_ok=True)
        last = max([*segs, self.read_checkpoint()[0].seg])
        segs = [s for s in segs if self._seg_path(s).exists()]
        # Numbers only grow: a batch's dedup token (log id + positions) must never recur.
        self._seg = last + 1  # never append to a segment from before
        self._bytes_before = sum(self._seg_size(s) for s in segs)
        self._first_live = self._seg
        self._open_segment(self._seg)
        if self.fsync_interval > 0:
            self._syncer = threading.Thread(target=self._sync_loop, name="log-fsync", daemon=True)
            self._syncer.start()

    def close(self) -> None:
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._ckpt_fd >= 0:
            os.close(self._ckpt_fd)
            self._ckpt_fd = -1
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _seg_path(self, seg: int) -> Path:
        return self.dir / f"seg-{seg:012d}.jsonl"

    def segments(self) -> list[int]:
        return sorted(int(p.name[4:16]) for p in self.dir.glob("seg-*.jsonl"))

    def _open_segment(self, seg: int) -> None:
        fd = os.open(self._seg_path(seg), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self._seg, self._off = seg, 0

    def _rotate(self) -> None:
        """Appends go to a new segment (the caller holds `_size_lock`)."""
        off = self._off
        self._open_segment(self._seg + 1)
        self._bytes_before += off

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.fsync_interval):
            if self._dirty:
                self._dirty = False
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)

    # ------------------------------------------------------------------ request path
    @property
    def size(self) -> int:
        return self._bytes_before + self._off

    def append(self, line: bytes) -> Pos | None:
        """Append one newline-terminated line; its end position, or None when over budget."""
        if self._bytes_before + self._off + len(line) > self.max_bytes:
            return None
        with self._size_lock:
            if self._off >= self.segment_bytes:
                self._rotate()
            try:
                written = os.write(self._fd, line)
                if written != len(line):
                    raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
            except OSError:
                self._cut_back()
                raise
            self._off += written
            if self.fsync_interval == 0:
                os.fsync(self._fd)
            else:
                self._dirty = True
            return Pos(self._seg, self._off)

    def _cut_back(self) -> None:
        """Remove the part of a failed append, so the next record does not join a torn line."""
        try:
            os.ftruncate(self._fd, self._off)
        except OSError:
            # The torn tail stays where readers skip it: at the end of a closed segment.
            with contextlib.suppress(OSError):
                self._rotate()

    # ------------------------------------------------------------------ writer side
    def read_checkpoint(self) -> tuple[Pos, tuple[Pos, Pos] | None]:
        try:
            data = json.loads((self.dir / CHECKPOINT).read_text())
            done = Pos(*data["done"])
            flight = data.get("in_flight")
            return done, (Pos(*flight[0]), Pos(*flight[1])) if flight else None
        except (OSError, ValueError, KeyError, TypeError):
            return Pos(0, 0), None

    def _write_checkpoint(self, done: Pos, in_flight: tuple[Pos, Pos] | None) -> None:
        body: dict[str, object] = {"done": [done.seg, done.off]}
        if in_flight:
            body["in_flight"] = [[in_flight[0].seg, in_flight[0].off],
                                 [in_flight[1].seg, in_flight[1].off]]  # fmt: skip
        data = json.dumps(body).encode().ljust(_CHECKPOINT_BYTES)
        os.pwrite(self._ckpt_fd, data, 0)

    def begin(self, start: Pos, end: Pos) -> None:
        """Note a batch about to be inserted."""
        done, _ = self.read_checkpoint()
        self._write_checkpoint(done, (start, end))

    def commit(self, end: Pos) -> None:
        """Everything up to `end` is in the store: drop the segments that holds whole (space
        first: a replay from the old checkpoint skips what is gone), then move the checkpoint."""
        with self._size_lock:
            if end == Pos(self._seg, self._off) and self._off > 0:
                with contextlib.suppress(OSError):  # no new file now: the next commit retries
                    self._rotate()
            for seg in self.segments():
                if seg >= self._seg or (seg == end.seg and self._seg_size(seg) > end.off):
                    break
                if seg <= end.seg:
                    self._bytes_before -= self._seg_size(seg)
                    self._seg_path(seg).unlink(missing_ok=True)
        self._write_checkpoint(end, None)

    def _seg_size(self, seg: int) -> int:
        try:
            return self._seg_path(seg).stat().st_size
        except OSError:
            return 0

    def read(
        self, start: Pos, max_lines: int, until: Pos | None = None
    ) -> tuple[list[bytes], Pos, int]:
        """Up to `max_lines` complete lines from `start` (stopping at `until`), where the
        next read starts, and how many of the lines an earlier process wrote."""
        lines: list[bytes] = []
        earlier = 0
        pos = start
        segs = [s for s in self.segments() if s >= start.seg]
        for seg in segs:
            if seg != pos.seg:
                pos = Pos(seg, 0)
            try:
                f = open(self._seg_path(seg), "rb")  # noqa: SIM115
            except FileNotFoundError:
                continue
            want = min(max(max_lines - len(lines), 1) * 2048, _READ_CHUNK)
            with f:
                while True:
                    f.seek(pos.off)
                    data = f.read(want)
                    if b"\n" in data or len(data) < want or want >= 64 * _READ_CHUNK:
                        break
                    want *= 4  # one line longer than the read: read more
            complete = data.rfind(b"\n") + 1  # a torn or half-written last line waits
            if until is not None and until.seg == seg:
                complete = min(complete, until.off - pos.off)
            take = data[:complete].splitlines(keepends=True)[: max_lines - len(lines)]
            lines += take
            if seg < self._first_live:
                earlier += len(take)
            pos = Pos(seg, pos.off + sum(map(len, take)))
            if until is not None and pos >= until:
                return lines, pos, earlier
            if len(lines) >= max_lines or seg == self._seg:
                break
        return lines, pos, earlier
