"""`llm-gateway replay`: the records a record log still holds, written into the store.

A gateway replays its own log when it starts again. A log no gateway will start on again
(a replica scaled away whose volume was kept, a machine retired, a log copied off a broken
host) is replayed with this command: every slot (`w0`, `w1`, ...) of the calls' log and of
the feedback events' log, in batches, priced as the gateway prices them. Each batch carries
the deduplication token the gateway would have sent, so a batch the store already has is
dropped by the store: replaying twice, or a log a gateway had partly written, writes each
record once. A slot held by a running process is left to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from gateway.config import Config
from gateway.errors import StoreBusy, StoreMissing
from gateway.recording.log import RecordLog
from gateway.recording.pricing import Pricer
from gateway.recording.queue import LogQueue
from gateway.recording.store import Store
from gateway.recording.writer import BatchWriter

# (folder under the log's root, table, priced): as the gateway's two writers log them.
STREAMS = (("", "llm_calls", True), ("feedback", "llm_feedback", False))


def slots(root: Path) -> list[tuple[Path, str, bool]]:
    """Each slot of the two logs under `root`: (directory, table, priced)."""
    found = []
    for sub, table, priced in STREAMS:
        base = root / sub if sub else root
        if base.is_dir():
            for d in sorted(base.glob("w[0-9]*"), key=lambda p: int(p.name[1:] or 0)):
                if d.is_dir() and d.name[1:].isdigit():
                    found.append((d, table, priced))
    return found


async def _drain(writer: BatchWriter, say: Callable[[int], None]) -> int:
    written = 0
    while n := await writer.flush_once():
        written += n
        say(written)
    return written


def replay_slot(
    cfg: Config, store: Store, directory: Path, table: str, priced: bool,
    step: Callable[[str], None],
) -> int:  # fmt: skip
    """Every record the slot holds, into `table`; returns how many were written. StoreBusy
    when a running process holds the slot."""
    lc = cfg.log
    rlog = RecordLog(directory, lc.segment_bytes, lc.max_bytes, fsync_interval=0)
    rlog.open()
    queue = LogQueue(rlog, memory_bytes=0)
    price_ids = {name: p.price_as or "" for name, p in cfg.providers.items()}
    writer = BatchWriter(
        store,
        queue,
        Pricer(cfg.prices) if priced else None,
        price_ids if priced else {},
        batch_size=cfg.store.batch_size,
        table=table,
        name="replay",
    )
    try:
        return asyncio.run(_drain(writer, lambda n: step(f"{directory}: {n} records written")))
    finally:
        queue.close()


def replay(cfg: Config, store: Store, log_dir: str | None, step: Callable[[str], None]) -> str:
    """Replay every slot under `log_dir` (default: the config's `log.dir`) into `store`
    (opened and migrated by the caller); the summary to print."""
    root = Path(log_dir or cfg.log.dir).resolve()
    found = slots(root)
    if not found:
        raise StoreMissing(
            f"no record log at {root}: a record log has slot folders w0, w1, ... (and "
            "feedback/w0, ...). Give its directory with --log-dir DIR."
        )
    written = {table: 0 for _, table, _ in STREAMS}
    busy = []
    for directory, table, priced in found:
        step(f"{directory}: opening")
        try:
            written[table] += replay_slot(cfg, store, directory, table, priced, step)
        except StoreBusy:
            busy.append(str(directory))
    out = (
        f"Replayed {written['llm_calls']} call records and {written['llm_feedback']} feedback "
        f"events from {root} ({len(found) - len(busy)} of {len(found)} log slots)."
    )
    if busy:
        out += " Held by a running process, left to it: " + ", ".join(busy) + "."
    return out


__all__ = ["replay", "slots"]
