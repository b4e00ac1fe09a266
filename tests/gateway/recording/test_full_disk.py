"""A full disk under the data directory, for real: a small tmpfs mounted as the data directory
of a real gateway process, filled while calls with captured bodies flow, then freed."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from gateway.recording.log import RecordLog
from gateway.recording.queue import LogQueue
from gateway.recording.record import CallRecord
from gateway.recording.store.disabled import DisabledStore
from gateway.recording.store.metadata import damaged_files
from gateway.recording.writer import BatchWriter
from tests.conftest import GatewayProcess, gateway_config
from tests.gateway.recording.test_durability import metrics

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a tmpfs as the data directory needs root"
)


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes past `limit` bytes of a file are cut short or fail, as on a full disk."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_failed_appends_leave_no_torn_line_and_records_wait_in_memory(tmp_path: Path):
    rlog = RecordLog(tmp_path / "log", segment_bytes=1 << 20, fsync_interval=0)
    rlog.open()
    q = LogQueue(rlog, memory_bytes=3000)
    w = BatchWriter(DisabledStore(), q, None, {})
    rec = lambda i: CallRecord(request_id=f"r{i}", request_body="x" * 700)  # noqa: E731
    assert w.record(rec(0))
    seg = rlog._seg_path(rlog._seg)
    with file_size_limit(seg.stat().st_size + 1000):  # room for part of the next line
        kept = [w.record(rec(i)) for i in range(1, 8)]
    assert kept[0] and not kept[-1] and kept == sorted(kept, reverse=True)  # memory, then drops
    assert w.counters.dropped == kept.count(False)
    assert "cannot write" in q.trouble()
    assert seg.read_bytes().endswith(b"}\n")  # the cut-short append was undone
    time.sleep(1.1)  # the log is tried again after a second
    assert w.record(rec(8))
    assert q.trouble() == ""
    ids = []
    while (batch := q.next_batch(100)) is not None:
        ids += [msgspec.json.decode(line)["request_id"] for line in batch.lines]
        q.begin(batch)
        q.commit(batch)
    expect = ["r0", *(f"r{i + 1}" for i, k in enumerate(kept) if k), "r8"]
    assert sorted(ids) == sorted(expect)
    assert rlog.size == 0  # every segment in the store is reclaimed, the open one too
    q.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8192k", "tmpfs", str(data)], check=True)
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def fill(path: Path) -> None:
    """Write `path` until the disk is full."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
        with contextlib.suppress(OSError):
            while f.write(b"\0" * 512):
                pass


def readyz(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for(cond, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)


@needs_root
def test_full_disk_answers_whole_counts_drops_and_recovers(
    fake, selfhosted, small_disk: Path, tmp_path: Path
):
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["capture"] = {"mode": "full", "max_body_bytes": 16384}
    # A few records fit in memory while the disk is full; the rest are dropped, and counted.
    cfg["log"] = {"memory_bytes": 40_000, "segment_bytes": 1024 * 1024}
    gw = GatewayProcess(cfg, tmp_path).start()
    client = httpx.Client(base_url=gw.url, timeout=30)
    # One record's line (about 8 KB of captured body) is larger than the one page left free
    # below: its append is cut short, leaving a torn line unless the log undoes it.
    msgs = [{"role": "user", "content": "x" * 8000}]

    def call(rid: str) -> None:
        r = client.post("/v1/chat/completions", headers={"X-Request-Id": rid},
                        json={"model": "gpt-4o", "messages": msgs})  # fmt: skip
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"]  # the whole body arrived

    try:
        wait_for(lambda: readyz(gw.url)[0] == 200)
        run = uuid.uuid4().hex[:6]
        call(f"before-{run}")
        gw.call_row(f"before-{run}")
        dropped_before = metrics(gw.url)["gateway_records_dropped_total"]

        pad = small_disk / "pad"
        pad.write_bytes(b"\0" * 4096)
        fill(small_disk / "filler")
        pad.unlink()  # one page free
        during = [f"full-{run}-{i}" for i in range(30)]
        for rid in during:
            call(rid)
        dropped = metrics(gw.url)["gateway_records_dropped_total"] - dropped_before
        assert 0 < dropped < len(during)  # some held in memory, the rest counted
        status, body = readyz(gw.url)
        assert status == 503 and b"record log cannot write" in body

        (small_disk / "filler").unlink()  # space is back
        after = [f"after-{run}-{i}" for i in range(10)]
        for rid in after:
            call(rid)
        wait_for(lambda: readyz(gw.url)[0] == 200)
        rows = gw.wait_rows(f"request_id LIKE 'after-{run}-%'", len(after), timeout=60)
        assert sorted(r["request_id"] for r in rows) == sorted(after)
        assert all(len(r["request_body"]) > 8000 for r in rows)
        kept = len(during) - int(dropped)
        rows = gw.wait_rows(f"request_id LIKE 'full-{run}-%'", kept, timeout=60)
        assert len(rows) == kept == len({r["request_id"] for r in rows})
        # Segments whose records are all in the store are gone, the open one included.
        wait_for(lambda: metrics(gw.url)["gateway_record_log_bytes"] == 0)
    finally:
        client.close()
        gw.stop()


@needs_root
def test_full_disk_then_restart_reopens_the_store_without_losing_a_row(
    fake, selfhosted, small_disk: Path, tmp_path: Path
):
    """The issue's run: bodies captured, 150 calls while the disk is full, space freed,
    the gateway restarted: the store opens, every answered call has its row once, and no
    DDL ran meanwhile (one that is asked for is refused, not half-done)."""
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["capture"] = {"mode": "full", "max_body_bytes": 16384}
    cfg["log"] = {"memory_bytes": 4_000_000, "segment_bytes": 1024 * 1024}
    cfg["store"]["path"] = str(small_disk)
    msgs = [{"role": "user", "content": "x" * 8000}]
    run = uuid.uuid4().hex[:6]
    answered: list[str] = []

    def call(client: httpx.Client, rid: str) -> None:
        r = client.post("/v1/chat/completions", headers={"X-Request-Id": rid},
                        json={"model": "gpt-4o", "messages": msgs})  # fmt: skip
        assert r.status_code == 200
        answered.append(rid)

    gw = GatewayProcess(cfg, tmp_path).start()
    try:
        wait_for(lambda: readyz(gw.url)[0] == 200)
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            for i in range(20):
                call(client, f"before-{run}-{i}")
            gw.wait_rows(f"request_id LIKE 'before-{run}-%'", 20)
            fill(small_disk / "filler")
            for i in range(150):
                call(client, f"full-{run}-{i}")
            # A migration's ALTER while the disk is full is refused before it runs: chDB
            # would report it done and leave the table's definition empty.
            with pytest.raises(AssertionError, match="nearly full"):
                gw.sql("ALTER TABLE llm_calls ADD COLUMN IF NOT EXISTS added_while_full String")
            time.sleep(2)  # the writer's retries, the jobs' timers
        (small_disk / "filler").unlink()  # space is back
    finally:
        gw.stop()
    assert damaged_files(small_disk) == []
    gw2 = GatewayProcess(cfg, tmp_path).start()
    try:
        wait_for(lambda: readyz(gw2.url)[0] == 200)
        rows = gw2.wait_rows(f"request_id LIKE '%-{run}-%'", len(answered), timeout=60)
        ids = [r["request_id"] for r in rows]
        assert len(ids) == len(answered) == 170
        assert sorted(ids) == sorted(answered)
    finally:
        gw2.stop()


RETRIED_MIGRATION = """
import contextlib, sys
from pathlib import Path
from gateway.recording.store import StoreError, migrate
from gateway.recording.store.chdb_store import ChdbStore
path = Path(sys.argv[1])
s = ChdbStore(str(path), "llm_gateway")
migrate(s)
s.command("INSERT INTO llm_gateway.llm_calls (request_id, app) "
          "SELECT concat('r', toString(number)), 'retried' FROM numbers(41)")
# The last migration's row never made it (its insert failed, say): the job runs it again.
s.command("ALTER TABLE llm_gateway.schema_migrations DELETE WHERE version = 13 "
          "SETTINGS mutations_sync = 1")
with open(path / "filler", "wb", buffering=0) as f:
    with contextlib.suppress(OSError):
        while f.write(bytes(65536)):
            pass
try:
    migrate(s)
    print("migrated on a full disk")
except StoreError as e:
    print("refused:", e)
(path / "filler").unlink()
print("applied:", migrate(s))
s.close()
"""


@needs_root
def test_a_migration_retried_on_a_full_disk_is_refused_and_runs_once_space_is_back(
    small_disk: Path,
):
    """The migrations job tries again until it succeeds: an ALTER it repeats while the disk
    is full must not run (chDB would report it done and leave llm_calls.sql empty, and the
    store could not be opened again)."""
    p = subprocess.run([sys.executable, "-c", RETRIED_MIGRATION, str(small_disk)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "refused: not run while the disk" in p.stdout, p.stdout
    assert "applied: [13]" in p.stdout
    assert damaged_files(small_disk) == []
    count = (
        "from gateway.recording.store.chdb_store import ChdbStore; import sys; "
        "s = ChdbStore(sys.argv[1], 'llm_gateway'); "
        "print(s.query(\"SELECT count() FROM llm_calls WHERE app = 'retried'\", 'TSV'))"
    )
    p = subprocess.run([sys.executable, "-c", count, str(small_disk)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "41" in p.stdout
