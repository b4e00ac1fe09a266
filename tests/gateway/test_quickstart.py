"""The README's quick start, as a new user runs it: no config file, the SDKs' variables,
`llm-gateway serve`, the official SDKs, then `llm-gateway sql` from the same directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import openai

from tests.conftest import free_port


def test_zero_config_quickstart(fake, tmp_path: Path):
    port = free_port()
    env = {
        **os.environ,
        "OPENAI_BASE_URL": fake.url + "/v1",
        "OPENAI_API_KEY": "sk-quickstart-gw",
        "ANTHROPIC_BASE_URL": fake.url,
    }
    env.pop("LLM_GATEWAY_CONFIG", None)
    env.pop("LLM_GATEWAY_DATA_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                openai.OpenAI(base_url=url + "/v1", api_key="x").models.list()
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        oa = openai.OpenAI(base_url=url + "/v1", api_key="anything")
        oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
        list(oa.chat.completions.create(model="gpt-4o-mini", stream=True,
                                        messages=[{"role": "user", "content": "Hi"}]))  # fmt: skip
        # No ANTHROPIC_API_KEY: the client's own key is passed through.
        claude = anthropic.Anthropic(base_url=url, api_key="sk-ant-client")
        claude.messages.create(model="claude-haiku-4-5", max_tokens=10,
                               messages=[{"role": "user", "content": "Hi"}])  # fmt: skip
        assert fake.requests[-1].headers["x-api-key"] == "sk-ant-client"
        assert fake.requests[-2].headers["authorization"] == "Bearer sk-quickstart-gw"
        q = (
            "SELECT operation, request_model, stream, input_tokens, output_tokens, "
            "cost_usd IS NULL AS unpriced, latency_ms > 0 AS timed, ttft_ms IS NOT NULL AS ttft "
            "FROM llm_calls WHERE operation = 'chat' ORDER BY started_at FORMAT JSONEachRow"
        )
        # The writer flushes every 500 ms by default, once the store is migrated (in the
        # background: the gateway listens at once).
        deadline = time.monotonic() + 30
        while True:
            out = subprocess.run(
                [sys.executable, "-m", "gateway.cli", "sql", q], cwd=tmp_path, env=env,
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
            rows = [json.loads(line) for line in out.stdout.splitlines()]
            if len(rows) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert [(r["request_model"], r["stream"], r["ttft"]) for r in rows] == [
            ("gpt-4o", False, 0),
            ("gpt-4o-mini", True, 1),
            ("claude-haiku-4-5", False, 0),
        ]
        assert all(r["input_tokens"] > 0 and r["output_tokens"] == 5 for r in rows)
        # Base URLs other than the providers' own APIs: not priced unless a config says
        # what to price them as (README, "Providers").
        assert all(r["unpriced"] == 1 and r["timed"] == 1 for r in rows)
        assert (tmp_path / "llm-gateway-data").is_dir()
        # Every background job has done its work once (the keys read from their table):
        # a fresh store starts without a warning.
        deadline = time.monotonic() + 30
        while True:
            jobs = httpx.get(url + "/readyz").json()["jobs"]
            if all(j["last_ok_s"] is not None for n, j in jobs.items() if n != "spend_seeding"):
                break
            assert time.monotonic() < deadline, jobs
            time.sleep(0.1)
        assert all(j["failures"] == 0 for j in jobs.values()), jobs
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert proc.stdout is not None
    lines = [json.loads(x) for x in proc.stdout.read().decode().splitlines() if x.startswith("{")]
    assert lines and not [x for x in lines if x["level"] in ("warning", "error")], lines
    started = next(x for x in lines if x["event"] == "listening")
    assert started["data_dir"] == str(tmp_path / "llm-gateway-data")
    assert started["data_dir_origin"] == "the default, under the working directory"
