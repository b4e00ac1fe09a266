"""The batch writer: call records leave the request path here and reach the store in batches.

`enqueue` is O(1) and never waits. A background task flushes when a batch fills or the
flush interval passes; pricing, encoding and the insert run in a worker thread so the
event loop keeps serving. When the store fails, the batch goes back to the front of the
queue and the writer backs off; past `queue_limit` records are dropped, counted and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from gateway.pricing import Pricer, Tokens
from gateway.record import CallRecord, encode_rows
from gateway.store.base import Store

log = logging.getLogger("gateway.writer")

TABLE = "llm_calls"


def price_record(pricer: Pricer, provider_id: str, rec: CallRecord) -> None:
    if rec.cost_usd is not None:
        return
    if not (rec.input_tokens or rec.output_tokens):
        if rec.status_code and rec.status_code >= 400:
            rec.cost_usd, rec.price_source = 0.0, "not_billed"  # a refused call costs nothing
        return
    rec.cost_usd, rec.price_source = pricer.price(
        provider_id,
        (rec.response_model, rec.upstream_model, rec.request_model),
        Tokens(rec.input_tokens, rec.output_tokens, rec.cache_read_tokens, rec.cache_write_tokens),
        rec.started_at,
    )


class BatchWriter:
    def __init__(
        self,
        store: Store,
        pricer: Pricer,
        price_ids: dict[str, str],
        batch_size: int = 1000,
        flush_interval: float = 0.5,
        queue_limit: int = 100_000,
    ) -> None:
        self.store = store
        self.pricer = pricer
        self.price_ids = price_ids  # provider name -> genai-prices provider id
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.queue_limit = queue_limit
        self._queue: deque[CallRecord] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # Counters, read by /metrics and /readyz.
        self.written = 0
        self.failed_batches = 0
        self.dropped = 0
        self.unpriced = 0
        self.store_ok = True
        self.last_error = ""

    @property
    def depth(self) -> int:
        return len(self._queue)

    def enqueue(self, rec: CallRecord) -> None:
        q = self._queue
        if len(q) >= self.queue_limit:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error(
                    "record queue full; dropping records",
                    extra={"dropped_total": self.dropped, "queue_limit": self.queue_limit},
                )
            return
        q.append(rec)
        if len(q) >= self.batch_size and self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batch-writer")

    def _write(self, batch: list[CallRecord]) -> None:
        for rec in batch:
            price_record(self.pricer, self.price_ids.get(rec.provider, ""), rec)
            if rec.cost_usd is None and (rec.input_tokens or rec.output_tokens):
                self.unpriced += 1
        self.store.insert(TABLE, encode_rows(batch))

    async def flush_once(self) -> int:
        """Write up to one batch; returns how many records were written."""
        q = self._queue
        if not q:
            return 0
        n = min(len(q), self.batch_size)
        batch = [q.popleft() for _ in range(n)]
        try:
            await asyncio.to_thread(self._write, batch)
        except Exception as e:
            q.extendleft(reversed(batch))
            self.failed_batches += 1
            self.store_ok = False
            self.last_error = str(e)[:500]
            raise
        self.written += n
        self.store_ok = True
        return n

    async def _run(self) -> None:
        assert self._wake is not None
        backoff = 0.0
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff or self.flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                while await self.flush_once() == self.batch_size:
                    pass
                backoff = 0.0
            except Exception:
                backoff = min(max(backoff * 2, 0.5), 30.0)
                log.warning(
                    "store write failed; will retry",
                    extra={
                        "error": self.last_error,
                        "queued": len(self._queue),
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
        while self._queue and time.monotonic() < deadline:
            try:
                await self.flush_once()
            except Exception:
                await asyncio.sleep(0.2)
        if self._queue:
            log.error("records not written at shutdown", extra={"lost": len(self._queue)})
