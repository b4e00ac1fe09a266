"""The batch writer: records leave the queue (`queue.py`) and reach the store in batches.

A background job asks the queue for a batch whenever one fills or the flush interval
passes; reading, pricing, encoding and the insert run in a worker thread so the event
loop keeps serving. A failed batch stays at the head of the queue and is sent again, the
same rows with the same token, after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec
import msgspec.structs

from gateway.jobs import Health, Periodic, Tally
from gateway.recording.pricing import Pricer
from gateway.recording.queue import LogQueue, Queue
from gateway.recording.record import CallRecord
from gateway.recording.store.base import Store, StoreError
from gateway.recording.store.config import StoreConfig

log = logging.getLogger("gateway.recording.writer")

TABLE = "llm_calls"
_STORE = StoreConfig()  # the defaults


# What pricing reads of a record's line, decoded without the rest: the record's own fields
# (name, type, default), so the view cannot drift from the record.
_PRICED = ("app", "provider", "request_model", "upstream_model", "response_model", "status_code",
           "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd",
           "price_source", "started_at", "cache_status", "cost_saved_usd")  # fmt: skip
if TYPE_CHECKING:
    PriceView = CallRecord  # typed as the record, of which it is a part
else:
    _of = {f.name: f for f in msgspec.structs.fields(CallRecord)}
    PriceView = msgspec.defstruct(
        "PriceView", [(n, _of[n].type, _of[n].default) for n in _PRICED], kw_only=True
    )


_view = msgspec.json.Decoder(PriceView).decode
_encode_json = msgspec.json.Encoder().encode
_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode


def _once(line: bytes, pattern: bytes) -> int:
    """Where `pattern` occurs in `line`, or -1 unless exactly once."""
    i = line.find(pattern)
    return i if i >= 0 and line.find(pattern, i + len(pattern)) < 0 else -1


def _with_fields(
    line: bytes, changes: list[tuple[str, bytes, bytes]], splice: bool = True
) -> bytes:
    """The line with fields set, whatever the order of its columns: each change is (name,
    its value's JSON now, the new JSON). Spliced in place when each `"name":now` occurs
    exactly once (and `splice`: the caller knows them to be the record's own, not a
    property's); else the line is re-encoded by field."""
    spots = []
    for name, now, new in changes:
        old = b'"' + name.encode() + b'":' + now
        i = _once(line, old) if splice else -1
        if i < 0:
            fields = _fields(line)
            for field, _, value in changes:
                fields[field] = msgspec.Raw(value)
            return _encode_json(fields) + b"\n"
        spots.append((i, len(old), b'"' + name.encode() + b'":' + new))
    out: list[bytes] = []
    at = 0
    for i, n, new in sorted(spots):
        out += (line[at:i], new)
        at = i + n
    out.append(line[at:])
    return b"".join(out)


def _with_price(line: bytes, v: PriceView, cost: float, source: str, hit: bool) -> bytes:
    """The line priced: its cost, and for a response-cache hit (billed nothing) the cost
    as what it saved."""
    changes = [("price_source", b'""', _encode_json(source))]
    if hit:
        changes += [("cost_usd", b"null", b"0.0"), ("cost_saved_usd", b"null", repr(cost).encode())]
    else:
        changes.append(("cost_usd", b"null", repr(cost).encode()))
    # `"price_source":""` may also be a property's; it is the record's own when it is empty
    return _with_fields(line, changes, splice=v.price_source == "")


def price_line(
    pricer: Pricer, price_ids: dict[str, str], line: bytes
) -> tuple[bytes, PriceView, bool]:
    """The line with its cost filled in, what was read of it, and False when it has
    tokens but no known price. A response-cache hit costs 0; its price is what it saved."""
    v = _view(line)
    if v.cost_usd is not None:
        return line, v, True
    hit = v.cache_status == "hit"
    if not (v.input_tokens or v.output_tokens):
        if v.status_code >= 400 or hit:  # a refused call, a hit without usage: nothing billed
            v.cost_usd = 0.0
            v.cost_saved_usd = 0.0 if hit else v.cost_saved_usd
            return _with_price(line, v, 0.0, "not_billed", hit), v, True
        return line, v, True
    cost, source = pricer.price_call(price_ids.get(v.provider, ""), v)
    if hit:
        v.cost_usd, v.cost_saved_usd = 0.0, cost
        if cost is None:
            return _with_fields(line, [("cost_usd", b"null", b"0.0")]), v, False
        return _with_price(line, v, cost, source, True), v, True
    if cost is None:
        return line, v, False
    v.cost_usd = cost
    return _with_price(line, v, cost, source, False), v, True


class Counters:
    """What the pipeline did; read by /metrics and /readyz."""

    __slots__ = ("accepted", "dropped", "last_error", "replayed", "retries", "store_ok", "written")

    def __init__(self) -> None:
        self.accepted = self.written = self.replayed = self.retries = self.dropped = 0
        self.store_ok, self.last_error = True, ""


class BatchWriter:
    def __init__(
        self,
        store: Store,
        queue: Queue,
        pricer: Pricer | None,  # None: rows need no price (feedback events)
        price_ids: dict[str, str],
        batch_size: int = _STORE.batch_size,
        flush_interval: float = _STORE.flush_interval_ms / 1000.0,
        migrate: Callable[[], object] | None = None,
        on_priced: Callable[[PriceView, bool], None] | None = None,
        table: str = TABLE,
        name: str = "writer",
    ) -> None:
        self.name = name  # a background job (gateway/jobs.py)
        self.tally = Tally()
        self.table = table
        self.on_priced = on_priced
        self.store = store
        self._migrate = migrate
        self._migrated = migrate is None
        self._migrate_lock = threading.Lock()
        self.queue = queue
        self.pricer = pricer
        self.price_ids = price_ids  # provider name -> genai-prices provider id
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.counters = Counters()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._since_wake = 0

    @property
    def depth(self) -> int:
        return self.queue.pending()

    @property
    def migrated(self) -> bool:
        return self._migrated

    def record(self, rec: msgspec.Struct) -> bool:
        """The request path's one call: keep the record (durably, with the log), or count
        it as dropped. True when kept."""
        c = self.counters
        try:
            kept = self.queue.append(rec)
        except Exception:  # nothing on the record path may break the answer
            log.exception("record could not be queued", extra={"table": self.table})
            kept = False
        if not kept:
            c.dropped += 1
            if c.dropped == 1 or c.dropped % 1000 == 0:
                log.error(
                    "record dropped: neither the record log nor its memory budget can hold it",
                    extra={"dropped_total": c.dropped, "table": self.table,
                           "trouble": self.queue.trouble()},
                )  # fmt: skip
            return False
        c.accepted += 1
        self._since_wake += 1
        if self._since_wake >= self.batch_size and self._wake is not None:
            self._since_wake = 0
            self._wake.set()
        return True

    def health(self) -> Health:
        return self.tally.health()

    # -- figures for /metrics (observability/sampler.py) ------------------------------------
    def log_bytes(self) -> int:
        return self.queue.size_bytes()

    def totals(self) -> dict[str, int]:
        c = self.counters
        return {"accepted": c.accepted, "written": c.written, "replayed": c.replayed,
                "dropped": c.dropped, "retries": c.retries}  # fmt: skip

    @property
    def store_ok(self) -> bool:
        return self.counters.store_ok

    def migrations_job(self) -> Periodic:
        """Creates or updates the tables at start, retrying with a backoff until the store
        answers (/readyz says 503 meanwhile; records wait in the queue)."""
        return Periodic("store_migrations", 30.0, lambda: asyncio.to_thread(self.prepare),
                        backoff=0.5, once=True)  # fmt: skip

    def ping_job(self, every: float = 2.0) -> Periodic:
        """Asks the store whether it answers, off the loop, so that /readyz reads the latest
        outcome (of this or of an insert) instead of waiting on a busy or slow store."""

        async def ping() -> None:
            ok = await asyncio.to_thread(self.store.ping)
            c = self.counters
            c.store_ok = ok
            if not ok and not c.last_error:
                c.last_error = "the store does not answer"

        return Periodic("store_ping", every, ping)

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batch-writer")

    def prepare(self) -> None:
        """Create or update the tables, once; before the first write (the store may have
        been down when the gateway started)."""
        if self._migrated:
            return
        with self._migrate_lock:
            if not self._migrated and self._migrate is not None:
                self._migrate()
                self._migrated = True

    def _flush_sync(self) -> int:
        """Write one batch (in a worker thread); returns how many records it held."""
        batch = self.queue.next_batch(self.batch_size)
        if batch is None:
            return 0
        c = self.counters
        rows: list[bytes] = [] if self.pricer is not None else batch.lines
        priced_views: list[tuple[PriceView, bool]] = []
        if self.pricer is not None:
            for line in batch.lines:
                try:
                    priced, view, known = price_line(self.pricer, self.price_ids, line)
                except msgspec.DecodeError:  # a torn or foreign line: leave it out, say so
                    log.error("unreadable record line skipped", extra={"line": line[:200]})
                    continue
                rows.append(priced)
                priced_views.append((view, known))
        self.queue.begin(batch)
        try:
            self.prepare()
            self.store.insert(self.table, b"".join(rows), batch.token)
        except Exception as e:
            c.store_ok, c.last_error = False, str(e)[:500]
            raise
        self.queue.commit(batch)
        for view, known in priced_views:  # once the rows are in: a retried batch counts once
            if self.on_priced is not None:
                self.on_priced(view, known)
        c.written += len(rows)
        c.replayed += batch.replayed
        c.store_ok, c.last_error = True, ""
        return len(batch.lines)

    async def flush_once(self) -> int:
        return await asyncio.to_thread(self._flush_sync)

    async def _run(self) -> None:
        assert self._wake is not None
        backoff = 0.0
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff or self.flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                while await self.flush_once() >= self.batch_size:
                    pass
                backoff = 0.0
                self.tally.ok()
            except Exception as e:
                self.tally.failed(e)
                self.counters.retries += 1
                backoff = min(max(backoff * 2, 0.5), 30.0)
                log.warning(
                    "store write failed; will retry",
                    exc_info=not isinstance(e, StoreError),  # a bug of ours: show where
                    extra={
                        "error": self.counters.last_error or repr(e),
                        "pending": self.depth,
                        "retry_in_s": backoff,
                    },
                )

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop and flush what is queued, trying until `timeout`."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if await self.flush_once() == 0:
                    break
            except Exception:
                await asyncio.sleep(0.2)
        if self.depth:
            log.error(
                "records not written at shutdown",
                extra={"pending": self.depth, "kept_in_log": isinstance(self.queue, LogQueue)},
            )
        self.queue.close()
