"""Shared fixtures: fake upstreams, and the real gateway as a subprocess on the embedded store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes import Behaviour, FakeUpstream

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayProcess:
    """`llm-gateway serve` in a child process, as a user would run it."""

    def __init__(self, config: dict[str, Any], workdir: Path, env: dict[str, str] | None = None):
        self.workdir = workdir
        self.config_path = workdir / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "gateway.log"

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--config",
                str(self.config_path),
                "--port",
                str(self.port),
            ],
            cwd=self.workdir,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited at start:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"gateway did not start:\n{self.log()}")

    def wait_jobs(self, *names: str, timeout: float = 60.0) -> GatewayProcess:
        """Until each named background job has done its work once (/readyz's jobs detail)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=5) as r:
                    jobs = json.loads(r.read())["jobs"]
            except urllib.error.HTTPError as e:  # 503 while not ready: the detail is there too
                jobs = json.loads(e.read())["jobs"]
            except OSError:
                jobs = {}
            if all(jobs.get(n, {}).get("last_ok_s") is not None for n in names):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"jobs {names} did not run:\n{self.log()}")

    def wait_ready(self, timeout: float = 30.0) -> GatewayProcess:
        """Until /readyz says ready: the store's tables exist (they are made after start)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway not ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    # -- reading what it recorded -------------------------------------------------------
    def sql(self, query: str) -> list[dict[str, Any]]:
        """Rows as dicts, through the running gateway's admin endpoint (as `llm-gateway sql`)."""
        data_dir = self.workdir / self.config["store"]["path"]
        token = json.loads((data_dir / "gateway.json").read_text())["token"]
        req = urllib.request.Request(
            self.url + "/_gateway/sql",
            data=(query + " FORMAT JSONEachRow").encode(),
            headers={"x-gateway-admin-token": token},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read().decode()
        except urllib.error.HTTPError as e:
            raise AssertionError(e.read().decode()) from None
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def call_row(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The one `llm_calls` row of a request, waiting for the writer to flush it."""
        rows = self.wait_rows(f"request_id = '{request_id}'", 1, timeout)
        assert len(rows) == 1, rows
        return rows[0]

    def wait_rows(
        self, where: str, n: int, timeout: float = 10.0, table: str = "llm_calls"
    ) -> list[dict[str, Any]]:
        """At least n rows of `table` where `where`, once the writer flushed them. Of
        llm_calls, the rows as stored (a late duplicate shows); of llm_feedback, as its
        readers see them: an event sent twice is one (FINAL)."""
        order, final = ("started_at", "") if table == "llm_calls" else ("ts, name", "FINAL")
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                rows = self.sql(f"SELECT * FROM {table} FINAL WHERE {where} ORDER BY {order}")
            except AssertionError as e:
                # the gateway listens before its store is migrated: no table is no rows yet
                if "UNKNOWN_TABLE" not in str(e):
                    raise
                rows = []
            if len(rows) >= n:
                time.sleep(0.1)  # a late duplicate would show up now
                return self.sql(f"SELECT * FROM {table} {final} WHERE {where} ORDER BY {order}")
            time.sleep(0.05)
        raise AssertionError(f"expected {n} rows where {where}, got {len(rows)}")


_OUTAGE = """
import sys
from gateway.recording.store import migrate
from gateway.recording.store.chdb_store import ChdbStore

store = ChdbStore(sys.argv[1], "llm_gateway")
migrate(store)
# a week of answers, then an hour where every call of the group failed
for start, span, n, status in ((8 * 86400, 7 * 86400 - 7200, 400, 200), (3500, 3400, 250, 503)):
    store.command(
        "INSERT INTO llm_gateway.llm_calls (request_id, started_at, app, request_model, "
        "provider, status_code, outcome, error_type, finish_reason, input_tokens, "
        "output_tokens, latency_ms) "
        f"SELECT concat('o-{status}-', toString(number)), "
        f"now64(3) - toIntervalMillisecond(({start} - number * {span} / {n}) * 1000), "
        f"'outage', 'gpt-4o', 'openai', {status}, if({status} = 200, 'ok', 'upstream_error'), "
        f"if({status} = 200, '', 'server_error'), if({status} = 200, 'stop', ''), 100, "
        f"if({status} = 200, 20, 0), 900 FROM numbers({n})"
    )
store.close()
"""


def seed_outage(data_dir: Path) -> None:
    """Calls of app `outage`, model gpt-4o, in a chDB store at `data_dir` (database
    llm_gateway): 400 answers over the week before the last hour, then 250 calls in the last
    hour that all failed (503). Written by a process of its own: one chDB engine each."""
    p = subprocess.run([sys.executable, "-c", _OUTAGE, str(data_dir)], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stderr


# The gateway's AWS identity (SigV4 for the bedrock provider): from the environment, the
# first link of botocore's credential chain; no shared files read.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "session-token-example",
    "AWS_REGION": "us-west-2",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


def gateway_config(fake_url: str, selfhosted_url: str, data_path: str = "data") -> dict[str, Any]:
    fast = {"connect": 1, "first_byte": 1.5, "total": 4}
    return {
        "server": {"max_body_bytes": 262_144},
        "store": {"kind": "chdb", "path": data_path, "flush_interval_ms": 50},
        "capture": {"mode": "metadata", "max_body_bytes": 4096},
        "retries": {"max_attempts": 2, "backoff_ms": 10},
        "providers": {
            "openai": {
                "kind": "openai",
                "base_url": fake_url + "/v1",
                "api_key": "sk-gw-secret-1",
                "price_as": "openai",
                "timeouts": fast,
            },
            "passthru": {
                "kind": "openai",
                "base_url": fake_url + "/v1",
                "auth": "passthrough",
                "price_as": "openai",
                "timeouts": fast,
            },
            "azure": {
                "kind": "azure",
                "base_url": fake_url,
                "api_key": "az-secret-2",
                "deployments": {"gpt-4o-azure": "my-deploy"},
                "price_as": "openai",
                "timeouts": fast,
            },
            "anthropic": {
                "kind": "anthropic",
                "base_url": fake_url,
                "api_key": "ant-secret-3",
                "price_as": "anthropic",
                "drop_params": ["seed"],
                "timeouts": fast,
            },
            "dead": {
                "kind": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "api_key": "x",
                "timeouts": fast,
            },
            "vllm": {"kind": "vllm", "base_url": fake_url + "/v1", "timeouts": fast},
            # a first-byte timeout that fits once in the total deadline, not twice
            "slow": {
                "kind": "openai",
                "base_url": fake_url + "/v1",
                "api_key": "sk-gw-secret-1",
                "timeouts": {"connect": 1, "first_byte": 2, "total": 3},
            },
            "bedrock": {"kind": "bedrock", "base_url": fake_url, "timeouts": fast},
            "gemini": {
                "kind": "gemini",
                "base_url": fake_url + "/v1",
                "api_key": "gm-secret-4",
                "timeouts": fast,
            },
            "selfhosted": {
                "kind": "openai",
                "base_url": selfhosted_url + "/v1",
                "api_key": "x",
                "inject_stream_usage": False,
                "timeouts": fast,
            },
        },
        "routes": [
            {"match": "claude*", "provider": "anthropic"},
            {"match": "gpt-4o-azure", "provider": "azure"},
            {
                "match": "fallback-model",
                "provider": "dead",
                "model": "gpt-4o",
                "fallbacks": [{"provider": "openai", "model": "gpt-4o"}],
            },
            {"match": "pt-*", "provider": "passthru", "model": "gpt-4o-mini"},
            {"match": "llama-*", "provider": "selfhosted"},
            {"match": "vllm-*", "provider": "vllm"},
            {"match": "slow-*", "provider": "slow"},
            {"match": "gemini*", "provider": "gemini"},
            {"match": "anthropic.*", "provider": "bedrock"},
            {"match": "gpt-*", "provider": "openai"},
            {"match": "text-embedding-*", "provider": "openai"},
            {"match": "o[0-9]*", "provider": "openai"},
        ],
        "aliases": {"fast": "gpt-4o-mini"},
        # evaluated at start, so that its gauges are on /metrics (test_dashboards)
        "experiments": {
            "dashboards": {
                "match": {"app": "exp-dashboards"},
                "variants": [{"name": "control"}, {"name": "treatment"}],
            }
        },
        "prices": {"llama-3-8b": {"input": 0.1, "output": 0.2}},
    }


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


@pytest.fixture(scope="session")
def selfhosted() -> Iterator[FakeUpstream]:
    """An OpenAI-compatible server that rejects `stream_options` and reports no usage."""
    with FakeUpstream() as f:
        f.behaviour = Behaviour(reject_stream_options=True, no_usage=True, model_suffix="")
        yield f


@pytest.fixture(autouse=True)
def _reset_fakes(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").reset()


@pytest.fixture(scope="session")
def gateway(
    fake: FakeUpstream, selfhosted: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("gw")
    gw = GatewayProcess(gateway_config(fake.url, selfhosted.url), workdir, AWS_ENV).start()
    gw.wait_ready()  # tests query the tables at once
    yield gw
    gw.stop()
