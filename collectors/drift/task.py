"""The periodic drift job inside the gateway (`drift.enabled`): every interval, a run's
rows into `llm_drift` and to whoever shows them (the gateway's gauges). A failed run is
logged and tried again at the next interval."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from collectors.drift.config import DriftConfig
from collectors.drift.report import DriftRow, rows_to_jsonl
from collectors.drift.run import run_drift
from collectors.sql import Query
from gateway.jobs import Periodic

log = logging.getLogger("collectors.drift")

Insert = Callable[[str, bytes], None]  # a store's `insert`: table, JSONEachRow bytes


def drift_job(
    query: Query,
    insert: Insert,
    show: Callable[[list[DriftRow]], None],
    cfg: DriftConfig,
    ready: Callable[[], bool] | None = None,
) -> Periodic:
    async def run() -> None:
        rows = await asyncio.to_thread(run_drift, query, None, cfg)
        if rows:
            await asyncio.to_thread(insert, "llm_drift", rows_to_jsonl(rows))
        show(rows)
        log.info("drift evaluated", extra={"rows": len(rows), "alerts": sum(r.alert for r in rows)})

    every = cfg.interval_minutes * 60
    return Periodic("drift", every, run, delay=every, until=ready)
