"""The chart's moving parts run for real, outside a cluster: the `helm test` Pod's check
(the script and environment the chart renders) against a gateway started with the config
the chart renders, its counters in a real redis-server started as the bundled Redis is
(the rendered arguments and password). Only the addresses change: the cluster's service
names become ports on 127.0.0.1, and the store a local chDB directory."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GatewayProcess, free_port
from tests.helmchart import FULLNAME, by_kind, load_chart, manifests, named, render_raw
from tests.helmchart import rendered_config as chart_config
from tests.prereqs import program
from tests.redisproc import RedisServer

TEST_MODEL = "llm-gateway-helm-test"
VALUES = {
    "tests": {"enabled": True},
    "redis": {"bundled": {"enabled": True}},
    "config": {"auth": {"require_key": True}},
}


@dataclass
class Release:
    docs: list[dict[str, Any]]
    gateway: GatewayProcess
    redis: RedisServer
    password: str
    key: str
    upstream_port: int  # where the gateway sends the test's model


def redis_command(port: int, password: str, *args: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for cmd in (("AUTH", password), args):
            s.sendall(b"".join([b"*%d\r\n" % len(cmd)] +
                               [b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in cmd]))  # fmt: skip
        data = b""
        while data.count(b"\r\n") < 2 or not data.endswith(b"\r\n"):
            data += s.recv(65536)
        return data


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    program("redis-server")
    docs = manifests(render_raw(load_chart(), VALUES))
    password = named(docs, "Secret", f"{FULLNAME}-redis")["stringData"]["password"]
    key = named(docs, "Secret", f"{FULLNAME}-helm-test")["stringData"]["key"]
    # The bundled Redis, started with the arguments its Deployment gives it.
    (container,) = named(docs, "Deployment", f"{FULLNAME}-redis")["spec"]["template"]["spec"][
        "containers"
    ]
    args = [a.replace("$(REDIS_PASSWORD)", password) for a in container["args"]]
    i = args.index("--port")
    del args[i : i + 2]  # the test's own free port instead
    redis = RedisServer(*args).start()
    # The gateway, with the config its ConfigMap holds.
    cfg = chart_config(docs)
    upstream_port = free_port()
    cfg["server"] = {"host": "127.0.0.1"}
    cfg["store"] = {"kind": "chdb", "path": "data", "flush_interval_ms": 50}
    del cfg["log"]  # under the store's directory
    cfg["auth"]["redis_url"] = cfg["auth"]["redis_url"].replace(
        f"@{FULLNAME}-redis:6379", f"@127.0.0.1:{redis.port}"
    )
    provider = cfg["providers"][TEST_MODEL]
    provider["base_url"] = re.sub(
        r"//[^/]+/", f"//127.0.0.1:{upstream_port}/", provider["base_url"]
    )
    env = {"LLM_GATEWAY_REDIS_PASSWORD": password, "LLM_GATEWAY_HELM_TEST_KEY": key}
    gw = GatewayProcess(cfg, tmp_path_factory.mktemp("helm-release"), env).start()
    yield Release(docs, gw, redis, password, key, upstream_port)
    gw.stop()
    redis.stop()


def run_helm_test(r: Release, tmp_path: Path, **override: str) -> subprocess.CompletedProcess[str]:
    """The test Pod's command, with the environment the chart gives it."""
    (pod,) = by_kind(r.docs, "Pod")
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["python", "/helm-test/check.py"]
    script = tmp_path / "check.py"
    script.write_text(named(r.docs, "ConfigMap", f"{FULLNAME}-test")["data"]["check.py"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    env.update(GATEWAY_URL=r.gateway.url, GATEWAY_KEY=r.key, UPSTREAM_PORT=str(r.upstream_port),
               UPSTREAM_LISTEN="127.0.0.1")  # fmt: skip
    env.update(override)
    assert None not in env.values(), env
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


def test_helm_test_passes_against_the_release_it_was_rendered_with(
    release: Release, tmp_path: Path
):
    p = run_helm_test(release, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].endswith("/readyz answered 200"), lines
    request_id = re.search(r"call (\S+) went through the gateway", lines[1]).group(1)
    row = release.gateway.call_row(request_id)
    assert (row["request_model"], row["upstream_model"], row["status_code"]) == (
        TEST_MODEL, TEST_MODEL, 200)  # fmt: skip
    assert (row["app"], row["key_name"], row["provider"]) == (TEST_MODEL,) * 3
    assert row["cost_usd"] is None  # a fake upstream's tokens are priced at nothing known
    # The key's counters went to the bundled Redis, through the password the chart made.
    keys = redis_command(release.redis.port, release.password, "KEYS", "lgw:*")
    assert b"cfg_llm-gateway-helm-test" in keys, keys


def test_helm_test_fails_when_its_key_is_refused(release: Release, tmp_path: Path):
    p = run_helm_test(release, tmp_path, GATEWAY_KEY="lgw_" + "x" * 43)
    assert p.returncode == 1
    assert "FAILED: POST /v1/chat/completions answered 401" in p.stderr, p.stderr


def test_helm_test_fails_when_the_gateway_cannot_reach_the_upstream(
    release: Release, tmp_path: Path
):
    """The gateway routes the model to the Service's port; a Pod listening elsewhere is
    never reached, and the test says so once its time is up."""
    p = run_helm_test(release, tmp_path, UPSTREAM_PORT=str(free_port()), TIMEOUT_SECONDS="3")
    assert p.returncode == 1
    assert "FAILED: the proxied call: no answer in time (last: 502" in p.stderr, p.stderr


def test_helm_test_fails_when_the_gateway_is_not_ready(release: Release, tmp_path: Path):
    p = run_helm_test(release, tmp_path, GATEWAY_URL=f"http://127.0.0.1:{free_port()}",
                      TIMEOUT_SECONDS="1")  # fmt: skip
    assert p.returncode == 1
    assert "FAILED: GET /readyz: no answer in time (last: unreachable" in p.stderr, p.stderr
