"""A full disk under the data directory, for real: a small tmpfs mounted as the data directory
of a real gateway process, filled while calls with captured bodies flow, then freed."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatewayProcess, gateway_config
from tests.test_durability import metrics

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a tmpfs as the data directory needs root"
)


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
