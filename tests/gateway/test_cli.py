"""The CLI as an operator uses it: sql (through a running gateway or on its own), migrate,
one gateway per data directory, a graceful stop that keeps every record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import openai

from tests.conftest import GatewayProcess, gateway_config, seed_outage


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], cwd=cwd, capture_output=True, text=True,
        timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_sql_through_running_gateway_honours_format(gateway: GatewayProcess):
    r = f"cli-{uuid.uuid4()}"
    openai.OpenAI(base_url=gateway.url + "/v1", api_key="k").chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"X-Request-Id": r})  # fmt: skip
    gateway.call_row(r)
    q = f"SELECT request_id, output_tokens FROM llm_calls WHERE request_id = '{r}'"
    p = cli("--config", str(gateway.config_path), "sql", q + " FORMAT JSONEachRow",
            cwd=gateway.workdir)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"request_id": r, "output_tokens": 5}
    p = cli("sql", q, "--config", str(gateway.config_path), cwd=gateway.workdir)
    assert p.returncode == 0 and r in p.stdout and "output_tokens" in p.stdout  # a table
    p = cli("sql", "SELECT nope FROM llm_calls", "--config", str(gateway.config_path),
            cwd=gateway.workdir)  # fmt: skip
    assert p.returncode == 1 and "nope" in p.stderr


def test_second_gateway_on_same_data_dir_refuses(gateway: GatewayProcess):
    p = cli("serve", "--config", str(gateway.config_path), "--port", "1", cwd=gateway.workdir)
    assert p.returncode == 1 and "in use" in p.stderr


def test_zero_config_migrate_and_sql_without_gateway(tmp_path: Path):
    env = {"LLM_GATEWAY_DATA_DIR": str(tmp_path / "d")}
    p = cli("migrate", cwd=tmp_path, env=env)
    assert p.returncode == 0 and "applied migrations [1" in p.stdout, p.stderr
    p = cli("migrate", cwd=tmp_path, env=env)
    assert p.returncode == 0 and "up to date" in p.stdout
    p = cli("sql", "SELECT count() AS n FROM llm_calls FORMAT JSONEachRow", cwd=tmp_path, env=env)
    assert p.returncode == 0 and json.loads(p.stdout) == {"n": 0}


def test_sigterm_flushes_and_exits_zero_then_restart_reads_rows(fake, selfhosted, tmp_path):
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["store"]["flush_interval_ms"] = 60_000  # nothing is written before the stop
    gw = GatewayProcess(cfg, tmp_path).start()
    app = "term-" + uuid.uuid4().hex[:6]
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k",
                           default_headers={"X-Gateway-App": app})  # fmt: skip
    for _ in range(7):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert gw.stop(signal.SIGTERM) == 0
    p = cli("sql", f"SELECT count() AS n FROM llm_calls WHERE app = '{app}' FORMAT JSONEachRow",
            "--config", str(gw.config_path), cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"n": 7}


def test_drift_command_through_running_gateway(gateway: GatewayProcess):
    r = f"cli-{uuid.uuid4()}"
    openai.OpenAI(base_url=gateway.url + "/v1", api_key="k").chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"X-Request-Id": r})  # fmt: skip
    gateway.call_row(r)
    before = gateway.sql("SELECT count() AS n FROM llm_drift")[0]["n"]
    p = cli("drift", "--config", str(gateway.config_path), cwd=gateway.workdir)
    assert p.returncode == 0, p.stderr
    assert "Drift" in p.stdout
    # Too few calls to compare: groups are reported as skipped, and no row says so in the
    # table (a row per group and run that says nothing).
    assert "SKIPPED (" in p.stdout and "fewer than min_calls=200" in p.stdout
    assert gateway.sql("SELECT count() AS n FROM llm_drift")[0]["n"] == before


def test_drift_when_every_call_of_a_group_failed(tmp_path: Path):
    data = tmp_path / "d"
    seed_outage(data)
    env = {"LLM_GATEWAY_DATA_DIR": str(data)}
    p = cli("drift", cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and "not evaluated" not in p.stderr, p.stderr
    out = p.stdout
    assert "1 group(s) evaluated" in out, out
    assert "outage / gpt-4o  error_rate: z +" in out and "250/250 = 100.00%" in out, out
    assert "length_rate: no answer in the current window: every call failed" in out, out
    p = cli("sql", "SELECT metric, level FROM llm_drift ORDER BY metric FORMAT JSONEachRow",
            cwd=tmp_path, env=env)  # fmt: skip
    stored = {json.loads(x)["metric"]: json.loads(x)["level"] for x in p.stdout.splitlines()}
    assert stored["error_rate"] == "alert" and "length_rate" not in stored, stored
    assert "skipped" not in stored.values()


def test_migrate_bakes_the_configured_session_idle_minutes(tmp_path: Path):
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(f"store: {{path: {tmp_path / 'd'}}}\nfeedback: {{session_idle_minutes: 45}}\n")
    p = cli("migrate", "--config", str(cfg), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    q = ("SELECT create_table_query AS q FROM system.tables WHERE database = 'llm_gateway' "
         "AND name = 'llm_sessions' FORMAT JSONEachRow")  # fmt: skip
    p = cli("sql", q, "--config", str(cfg), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    ddl = json.loads(p.stdout)["q"]
    assert "toIntervalMinute(45)" in ddl or "INTERVAL 45 MINUTE" in ddl, ddl


def test_python_m_gateway_version_and_help_list_every_command(tmp_path: Path):
    run = [sys.executable, "-m", "gateway"]
    p = subprocess.run([*run, "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("llm-gateway ")
    p = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    for item in (
        "serve",
        "migrate",
        "sql",
        "report",
        "drift",
        "--host",
        "--port",
        "--cluster",
        "--since",
        "(default: 7d)",
        "(default: server.port, 8080)",
    ):
        assert item in p.stdout, item
