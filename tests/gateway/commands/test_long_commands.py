"""Long commands (`migrate`, `drift`, `replay`) show progress on a terminal (a pty here, as
a person's shell gives them) and nothing of it through a pipe (a CronJob, a script); and
`replay` writes what a record log holds into the store, once."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import openai

from gateway.recording.store.migrate import migrations
from tests.conftest import GatewayProcess, gateway_config, seed_outage
from tests.fakes import FakeUpstream

ERASE = "\r\x1b[2K"  # how a progress line is rewritten and, at the end, erased


def on_a_terminal(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """The command with its stdout and stderr on a pty: (exit code, everything it wrote)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", *args], cwd=cwd, stdin=subprocess.DEVNULL,
        stdout=slave, stderr=slave, env={**os.environ, **(env or {})},
    )  # fmt: skip
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer of the pty has gone
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(120), out.decode(errors="replace")


def piped(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], cwd=cwd, capture_output=True, text=True,
        timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_migrate_shows_each_migration_on_a_terminal_only(tmp_path: Path):
    code, out = on_a_terminal("--data-dir", "tty", "migrate", cwd=tmp_path)
    assert code == 0, out
    assert f"{ERASE}migrate: migration 0001 llm_calls" in out
    assert f"{ERASE}migrate: view llm_call_feedback" in out
    # erased before the result, which stands on a line of its own
    applied = ", ".join(str(m.version) for m in migrations())
    assert out.rstrip().endswith(f"{ERASE}embedded store at {tmp_path / 'tty'}: applied "
                                 f"migrations [{applied}]")  # fmt: skip
    p = piped("--data-dir", "pipe", "migrate", cwd=tmp_path)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert p.stdout.startswith(f"embedded store at {tmp_path / 'pipe'}: applied migrations")


def test_drift_shows_its_queries_on_a_terminal_only(tmp_path: Path):
    seed_outage(tmp_path / "d")
    code, out = on_a_terminal("--data-dir", "d", "drift", cwd=tmp_path)
    assert code == 0, out
    assert f"{ERASE}drift: reading calls, query 1 (" in out
    assert f"{ERASE}drift: storing the rows in llm_drift" in out
    assert "1 group(s) evaluated" in out
    p = piped("--data-dir", "d", "drift", cwd=tmp_path)
    assert p.returncode == 0 and p.stderr == "" and "1 group(s) evaluated" in p.stdout


def test_drift_that_cannot_reach_the_store_fails(tmp_path: Path):
    conf = tmp_path / "gw.yaml"
    conf.write_text("store: {kind: clickhouse, url: 'http://127.0.0.1:9'}\n")
    p = piped("drift", "--config", str(conf), cwd=tmp_path)
    assert p.returncode == 1 and "drift not evaluated" in p.stderr, (p.stdout, p.stderr)
    assert "cannot reach ClickHouse at http://127.0.0.1:9" in p.stderr


def test_replay_writes_a_log_no_gateway_will_start_on(
    fake: FakeUpstream, selfhosted: FakeUpstream, tmp_path: Path
):
    # A gateway whose store never answers: what it recorded stays in its log.
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["store"] = {"kind": "clickhouse", "url": "http://127.0.0.1:9", "flush_interval_ms": 50}
    cfg["log"] = {"dir": str(tmp_path / "log")}
    gw = GatewayProcess(cfg, tmp_path).start()
    app = "replay-" + uuid.uuid4().hex[:6]
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0,
                           default_headers={"X-Gateway-App": app})  # fmt: skip
    ids = []
    for _ in range(5):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}])  # fmt: skip
        ids.append(raw.headers["x-request-id"])
    ev = {"request_id": ids[0], "name": "thumbs", "value": True}
    assert httpx.post(gw.url + "/v1/feedback", json=ev).status_code == 200
    gw.stop()
    (tmp_path / "gateway.yaml").unlink()  # the replay below runs on the embedded store

    # The store they go to: an embedded one, made first (replay creates none).
    p = piped("--data-dir", "store", "replay", "--log-dir", "log", cwd=tmp_path)
    assert p.returncode == 1 and "no store at" in p.stderr, p.stderr
    assert piped("--data-dir", "store", "migrate", cwd=tmp_path).returncode == 0
    code, out = on_a_terminal("--data-dir", "store", "replay", "--log-dir", "log", cwd=tmp_path)
    assert code == 0, out
    assert f"{ERASE}replay: {tmp_path / 'log' / 'w0'}: 5 records written" in out
    assert f"Replayed 5 call records and 1 feedback events from {tmp_path / 'log'}" in out

    def stored(sql: str) -> list[dict[str, object]]:
        p = piped("--data-dir", "store", "sql", sql + " FORMAT JSONEachRow", cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        return [json.loads(line) for line in p.stdout.splitlines()]

    rows = stored(f"SELECT request_id, cost_usd FROM llm_calls FINAL WHERE app = '{app}'")
    assert sorted(r["request_id"] for r in rows) == sorted(ids)
    assert all(isinstance(r["cost_usd"], float) and r["cost_usd"] > 0 for r in rows)  # priced
    assert stored(f"SELECT name FROM llm_feedback WHERE request_id = '{ids[0]}'") == [
        {"name": "thumbs"}
    ]
    # Again, through a pipe: nothing left to write, nothing written twice, no progress.
    p = piped("--data-dir", "store", "replay", "--log-dir", "log", cwd=tmp_path)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert p.stdout.startswith("Replayed 0 call records and 0 feedback events")
    assert stored(f"SELECT count() AS n FROM llm_calls WHERE app = '{app}'") == [{"n": 5}]
