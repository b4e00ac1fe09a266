"""Upstreams that break HTTP itself (tests/fakes/raw.py), against a real gateway process: an
answer that is not HTTP is a 502 `upstream_protocol_error`, retried and recorded like a
connection error; bytes past an answer's end never become the answer to the next call."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import GatewayProcess, gateway_config
from tests.fakes.raw import RawUpstream

MSGS = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def bad_status() -> Iterator[RawUpstream]:
    with RawUpstream("bad_status") as r:
        yield r


@pytest.fixture(scope="module")
def trailing() -> Iterator[RawUpstream]:
    with RawUpstream("trailing") as r:
        yield r


@pytest.fixture(scope="module")
def late() -> Iterator[RawUpstream]:
    with RawUpstream("late") as r:
        yield r


@pytest.fixture(scope="module")
def gw(fake, selfhosted, bad_status, trailing, late, tmp_path_factory) -> Iterator[GatewayProcess]:
    cfg = gateway_config(fake.url, selfhosted.url)
    fast = {"connect": 1, "first_byte": 2, "total": 5}
    cfg["providers"]["broken"] = {"kind": "openai", "base_url": bad_status.url + "/v1",
                                  "api_key": "x", "timeouts": fast}  # fmt: skip
    cfg["providers"]["trailing"] = {"kind": "openai", "base_url": trailing.url + "/v1",
                                    "api_key": "x", "timeouts": fast}  # fmt: skip
    cfg["providers"]["late"] = {"kind": "openai", "base_url": late.url + "/v1",
                                "api_key": "x", "timeouts": fast}  # fmt: skip
    cfg["routes"][:0] = [
        {"match": "broken-only", "provider": "broken"},
        {"match": "broken-then-ok", "provider": "broken",
         "fallbacks": [{"provider": "openai", "model": "gpt-4o"}]},
        {"match": "trailing-*", "provider": "trailing"},
        {"match": "late-*", "provider": "late"},
    ]  # fmt: skip
    g = GatewayProcess(cfg, tmp_path_factory.mktemp("protocol")).start()
    g.wait_ready()
    yield g
    g.stop()


def call(gw: GatewayProcess, model: str) -> httpx.Response:
    rid = f"proto-{uuid.uuid4().hex[:10]}"
    return httpx.post(gw.url + "/v1/chat/completions", headers={"X-Request-Id": rid},
                      json={"model": model, "messages": MSGS}, timeout=30)  # fmt: skip


def test_an_answer_that_is_not_http_is_a_502_retried_and_recorded(gw, bad_status):
    n0 = bad_status.requests
    r = call(gw, "broken-only")
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "upstream_protocol_error" and err["type"] == "api_connection_error"
    assert "broken" in err["message"] and "127.0.0.1" not in err["message"]
    assert bad_status.requests - n0 == 2  # retried like a connection error (max_attempts 2)
    row = gw.call_row(r.headers["x-request-id"])
    assert row["status_code"] == 502 and row["error_type"] == "upstream_protocol_error"
    assert row["attempts"] == 2
    assert row["attempt_errors"] == ["broken: upstream_protocol_error"] * 2


def test_a_fallback_answers_after_a_protocol_error(gw):
    r = call(gw, "broken-then-ok")
    assert r.status_code == 200, r.text
    row = gw.call_row(r.headers["x-request-id"])
    assert row["provider"] == "openai" and row["fallback_used"]
    assert row["attempt_errors"] == ["broken: upstream_protocol_error"]


@pytest.mark.parametrize("mode", ["trailing", "late"])
def test_bytes_past_an_answer_never_answer_the_next_call(gw, request, mode: str):
    upstream: RawUpstream = request.getfixturevalue(mode)
    conns0 = upstream.connections
    answers = []
    for _ in range(4):
        r = call(gw, f"{mode}-model")
        assert r.status_code == 200, r.text
        answers.append(r.json()["choices"][0]["message"]["content"])
        time.sleep(0.2)  # the late bytes have arrived on the idle connection
    assert answers == ["answer 1 on this connection"] * 4  # each on a connection of its own
    assert upstream.connections - conns0 == 4
