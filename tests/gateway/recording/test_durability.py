"""Never lose a record: kill -9 under load, crash between insert and checkpoint, disk budget,
SIGTERM during streams. Real processes and the real log, no mocks of either."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from gateway.recording.log import RecordLog
from gateway.recording.pricing import Pricer
from gateway.recording.queue import LogQueue
from gateway.recording.record import CallRecord
from gateway.recording.store import migrate
from gateway.recording.store.chdb_store import ChdbStore
from gateway.recording.writer import BatchWriter
from tests.conftest import GatewayProcess, gateway_config
from tests.fakes import Behaviour

MSG = [{"role": "user", "content": "hi"}]


def metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_kill_9_under_load_loses_no_answered_call(fake, selfhosted, tmp_path: Path):
    fake.behaviour = Behaviour(chunk_delay=0.002)
    cfg = gateway_config(fake.url, selfhosted.url)
    # Rows reach the store rarely: most records exist only in the log when the kill lands.
    cfg["store"]["flush_interval_ms"] = 5_000
    gw = GatewayProcess(cfg, tmp_path).start()
    answered: list[str] = []
    stop = threading.Event()

    async def load() -> None:
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:

            async def worker(i: int) -> None:
                n = 0
                while not stop.is_set():
                    rid = f"k9-{i}-{n}-{uuid.uuid4().hex[:6]}"
                    n += 1
                    body = {"model": "gpt-4o", "messages": MSG, "stream": n % 2 == 0}
                    try:
                        r = await client.post("/v1/chat/completions", json=body,
                                              headers={"X-Request-Id": rid})  # fmt: skip
                        if r.status_code == 200 and (not body["stream"] or b"[DONE]" in r.content):
                            answered.append(rid)
                    except httpx.HTTPError:
                        await asyncio.sleep(0.01)

            await asyncio.gather(*(worker(i) for i in range(16)))

    t = threading.Thread(target=lambda: asyncio.run(load()))
    t.start()
    # Kill once 100 calls were answered, however long that takes on a loaded machine: the
    # deadline only bounds a gateway that answers nothing.
    deadline = time.monotonic() + 120
    while len(answered) < 100 and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.05)
    gw.stop(signal.SIGKILL)
    n_answered = len(answered)
    stop.set()
    t.join()
    assert n_answered >= 100
    gw2 = GatewayProcess(cfg, tmp_path)
    gw2.port, gw2.url = gw.port, gw.url
    gw2.start()
    try:
        rows = gw2.wait_rows("request_id LIKE 'k9-%'", len(answered), timeout=30)
        ids = [r["request_id"] for r in rows]
        assert set(answered) <= set(ids)
        assert len(ids) == len(set(ids))  # exactly once, without FINAL
        assert metrics(gw2.url)["gateway_records_replayed_total"] >= len(answered)
    finally:
        assert gw2.stop() == 0


def test_replay_after_crash_between_insert_and_checkpoint(tmp_path: Path):
    store = ChdbStore(str(tmp_path / "db"), "replay")
    try:
        migrate(store)

        def writer() -> BatchWriter:
            rlog = RecordLog(tmp_path / "log", fsync_interval=0)
            rlog.open()
            return BatchWriter(store, LogQueue(rlog), Pricer(), {}, batch_size=100)

        w = writer()
        for i in range(10):
            w.record(CallRecord(request_id=f"r{i}", started_at=1_700_000_000 + i))
        batch = w.queue.next_batch(100)
        assert batch is not None and len(batch.lines) == 10
        w.queue.begin(batch)
        store.insert("llm_calls", b"".join(batch.lines), batch.token)
        w.queue.close()  # the crash: the insert happened, the checkpoint did not move

        w2 = writer()
        w2.record(CallRecord(request_id="after", started_at=1_700_000_100))
        assert w2._flush_sync() == 10  # the same batch again, same token
        assert w2._flush_sync() == 1
        assert w2._flush_sync() == 0
        w2.queue.close()
        out = store.query("SELECT count() AS n, uniqExact(request_id) AS u FROM llm_calls")
        assert json.loads(out) == {"n": 11, "u": 11}  # no FINAL needed
        assert w2.counters.replayed == 10
    finally:
        store.close()


def test_disk_budget_exceeded_traffic_unaffected_drops_counted(fake, selfhosted, tmp_path: Path):
    cfg = gateway_config(fake.url, selfhosted.url)
    # A ClickHouse that is never there: everything piles up in the log.
    cfg["store"] = {"kind": "clickhouse", "url": "http://127.0.0.1:9", "flush_interval_ms": 50}
    cfg["log"] = {"dir": "log", "max_bytes": 20_000, "segment_bytes": 4096}
    gw = GatewayProcess(cfg, tmp_path).start()
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        for _ in range(60):
            c = client.chat.completions.create(model="gpt-4o", messages=MSG)
            assert c.choices[0].message.content
        m = metrics(gw.url)
        assert m["gateway_records_dropped_total"] > 0
        kept = m["gateway_records_accepted_total"]
        assert kept + m["gateway_records_dropped_total"] == 60
        assert 0 < m["gateway_record_log_bytes"] <= 20_000
        assert m["gateway_store_up"] == 0
        assert "record dropped" in gw.log()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(gw.url + "/readyz")
        assert e.value.code == 503
    finally:
        gw.stop()


def test_sigterm_lets_streams_finish_and_records_them(fake, selfhosted, tmp_path: Path):
    fake.behaviour = Behaviour(chunk_delay=0.15, n_chunks=10)
    gw = GatewayProcess(gateway_config(fake.url, selfhosted.url), tmp_path).start()
    texts: dict[str, str] = {}

    def stream(rid: str) -> None:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        s = client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True,
                                           extra_headers={"X-Request-Id": rid})  # fmt: skip
        texts[rid] = "".join(c.choices[0].delta.content or "" for c in s if c.choices)

    ids = [f"term-{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
    threads = [threading.Thread(target=stream, args=(r,)) for r in ids]
    n0 = len(fake.requests)
    for t in threads:
        t.start()
    # Every stream is under way upstream (a fixed sleep is too short on a loaded machine).
    fake.wait_for_requests(n0 + len(ids), timeout=60)
    gw.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    time.sleep(0.2)
    with pytest.raises(httpx.ConnectError):
        httpx.get(gw.url + "/healthz")  # no new connections
    for t in threads:
        t.join()
    assert gw.proc.wait(30) == 0  # type: ignore[union-attr]
    assert all(texts[r] == "Hello from the fake upstream!" for r in ids)
    gw2 = GatewayProcess(gw.config, tmp_path)
    gw2.start()
    try:
        rows = gw2.wait_rows("request_id LIKE 'term-%'", 4)
        assert {r["request_id"] for r in rows} == set(ids)
        assert all(r["outcome"] == "ok" and r["output_tokens"] == 10 for r in rows)
    finally:
        gw2.stop()
