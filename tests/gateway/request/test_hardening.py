"""Hostile input against a running gateway: bodies that are not JSON a decoder can take,
paths that climb out of the provider's base URL, oversized strings and labels, odd
headers; and the retry policy's deadline and Retry-After."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import GatewayProcess, gateway_config
from tests.fakes import Behaviour, FakeUpstream

MESSAGES = [{"role": "user", "content": "hi"}]
ENDPOINTS = ["/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/v1/feedback"]


def rid() -> str:
    return f"hard-{uuid.uuid4()}"


def assert_openai_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    return err


def assert_dialect_error(resp: httpx.Response, status: int, endpoint: str) -> dict:
    """The gateway's own error in the client's dialect: Anthropic's shape (its type for the
    status, the request id) on /v1/messages, OpenAI's elsewhere."""
    if endpoint != "/v1/messages":
        return assert_openai_error(resp, status)
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"type", "error", "request_id"} and body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"}, body
    assert body["request_id"] == resp.headers["x-request-id"]
    return body["error"]


def raw_request(gw: GatewayProcess, request: bytes) -> bytes:
    """Bytes on a socket as sent: httpx would normalise the path."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


# ------------------------------------------------------------------ bodies a decoder refuses
BAD_BODIES = {
    "invalid_utf8": b'{"model":"gpt-4o\xff","messages":[]}',
    "deep_nesting": b'{"model":"gpt-4o","messages":' + b"[" * 1200 + b"]" * 1200 + b"}",
    "deep_array": b"[" * 5000 + b"]" * 5000,
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("kind", sorted(BAD_BODIES))
def test_undecodable_json_is_a_400_recorded_as_rejected(
    gateway: GatewayProcess, endpoint: str, kind: str
):
    r = rid()
    resp = httpx.post(gateway.url + endpoint, content=BAD_BODIES[kind],
                      headers={"X-Request-Id": r, "content-type": "application/json"})  # fmt: skip
    err = assert_dialect_error(resp, 400, endpoint)
    assert err["type"] == "invalid_request_error"
    if endpoint == "/v1/messages":  # Anthropic's shape has no code: the message says it
        assert err["message"].startswith("We could not parse the JSON body"), err
        assert resp.headers["x-request-id"] == r
    else:
        assert err["code"] == "invalid_json"
    if endpoint != "/v1/feedback":
        row = gateway.call_row(r)
        assert row["outcome"] == "rejected" and row["status_code"] == 400


@pytest.mark.parametrize("model", [5, ["gpt-4o"], {"a": 1}, True])
def test_model_of_the_wrong_type_is_a_400(gateway: GatewayProcess, model: object):
    for endpoint in ENDPOINTS[:3]:
        resp = httpx.post(gateway.url + endpoint, json={"model": model, "messages": MESSAGES})
        err = assert_dialect_error(resp, 400, endpoint)
        assert err["type"] == "invalid_request_error"
        if endpoint == "/v1/messages":  # Anthropic's shape has no param nor code
            assert err["message"].startswith("`model` must be"), err
        else:
            assert err["param"] == "model" and err["code"] == "invalid_type"


def test_wrongly_typed_fields_are_not_a_5xx(gateway: GatewayProcess):
    bodies = [
        {"model": "gpt-4o", "messages": "hi"},
        {"model": "gpt-4o", "messages": [5, None, {"content": {"text": [1]}}]},
        {"model": "gpt-4o", "messages": MESSAGES, "stream": "yes", "stream_options": 3},
        {"model": "gpt-4o", "input": [[1, "a"], {"content": 5}], "user": 7},
        {"model": "claude-3-5-sonnet", "messages": MESSAGES, "metadata": [1], "system": {}},
    ]
    for body in bodies:
        for endpoint in ENDPOINTS[:3]:
            resp = httpx.post(gateway.url + endpoint, json=body)
            assert resp.status_code < 500, (endpoint, body, resp.text)


# ------------------------------------------------------------------ the gateway's own errors
def test_every_own_error_is_in_the_openai_shape(gateway: GatewayProcess):
    assert_openai_error(httpx.get(gateway.url + "/nowhere"), 404)
    assert_openai_error(httpx.delete(gateway.url + "/healthz"), 405)
    assert_openai_error(httpx.get(gateway.url + "/v1/feedback"), 405)
    assert_openai_error(httpx.post(gateway.url + "/_gateway/sql", content=b"SELECT 1"), 403)
    refused = httpx.options(gateway.url + "/v1/feedback")  # a preflight with no Origin
    assert_openai_error(refused, 403)
    big = httpx.post(gateway.url + "/v1/feedback", content=b"[" + b"1," * 6_000_000 + b"1]")
    assert_openai_error(big, 413)


@pytest.mark.parametrize("token", [b"\xe9t\xe9", b"\xff" * 40, "é".encode()])
def test_non_ascii_admin_token_is_a_403(gateway: GatewayProcess, token: bytes):
    request = (b"POST /_gateway/sql HTTP/1.1\r\nHost: x\r\nx-gateway-admin-token: " + token
               + b"\r\nContent-Length: 8\r\nConnection: close\r\n\r\nSELECT 1")  # fmt: skip
    head, _, body = raw_request(gateway, request).partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"403", head
    assert b'"permission_error"' in body


# ------------------------------------------------------------------ caps on stored strings
def test_client_strings_are_capped_in_the_row(gateway: GatewayProcess):
    r = rid()
    long = "m" * 190_000
    resp = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "gpt-" + long, "messages": MESSAGES, "user": "u" * 5000},
        headers={"X-Request-Id": r, "X-Gateway-App": "a" * 5000, "User-Agent": "b" * 5000,
                 "X-Gateway-Session": "s" * 5000, "X-Gateway-Property-" + "k" * 100: "v" * 5000},
    )  # fmt: skip
    assert resp.status_code == 200
    row = gateway.call_row(r)
    assert len(row["request_model"]) == 256 and len(row["upstream_model"]) == 256
    assert len(row["response_model"]) == 256
    assert len(row["app"]) == 128 and len(row["user_agent"]) == 256
    assert len(row["session_id"]) == 256 and len(row["end_user"]) == 256
    ((key, value),) = row["properties"].items()
    assert len(key) == 64 and len(value) == 512


# ------------------------------------------------------------------ escaping the base URL
@pytest.mark.parametrize(
    "path",
    [b"/v1/../internal/admin", b"/v1/./../internal", b"/v1/%2e%2e/internal/admin",
     b"/v1/%2E%2e%2finternal", b"/v1/chat%2f..%2f..%2finternal", b"/v1/%252e%252e/internal",
     b"/v1/..\\internal", b"/v1/chat/completions/.."],
)  # fmt: skip
def test_dot_segments_never_reach_the_upstream(gateway: GatewayProcess, fake: FakeUpstream,
                                               path: bytes):  # fmt: skip
    request = (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")  # fmt: skip
    head, _, body = raw_request(gateway, request).partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", head
    assert b'"invalid_path"' in body
    assert fake.requests == []  # nothing went upstream, with or without the gateway's key


def test_a_plain_path_still_goes_through(gateway: GatewayProcess, fake: FakeUpstream):
    request = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    head, _, _ = raw_request(gateway, request).partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"200"
    assert [q.path for q in fake.requests] == ["/v1/models"]


# ------------------------------------------------------------------ what a 502 tells
def test_a_fallback_after_a_failed_attempt_is_recorded(gateway: GatewayProcess):
    r = rid()
    resp = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"X-Request-Id": r},
        json={"model": "fallback-model", "messages": MESSAGES},
    )
    assert resp.status_code == 200  # the fallback answered
    row = gateway.call_row(r)
    assert row["attempts"] == 2 and row["attempt_errors"] == ["dead: connection_error"]


def test_502_body_hides_the_upstream_address(fake, selfhosted, tmp_path_factory):
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["routes"].insert(0, {"match": "gpt-dead", "provider": "dead"})
    gw = GatewayProcess(cfg, tmp_path_factory.mktemp("dead")).start()
    try:
        r = rid()
        resp = httpx.post(gw.url + "/v1/chat/completions", headers={"X-Request-Id": r},
                          json={"model": "gpt-dead", "messages": MESSAGES})  # fmt: skip
        err = assert_openai_error(resp, 502)
        assert "`dead`" in err["message"]
        assert "127.0.0.1" not in resp.text and ":9" not in resp.text
        row = gw.call_row(r)
        assert "127.0.0.1" in row["error_message"]  # the detail is kept for the operator
        assert row["attempt_errors"] == ["dead: connection_error"] * 2
    finally:
        gw.stop()


# ------------------------------------------------------------------ deadlines and retries
def test_total_deadline_bounds_all_attempts(gateway: GatewayProcess, fake: FakeUpstream):
    # first byte 2 s, total 3 s, 2 attempts: the second attempt is cut by the deadline
    fake.behaviour = Behaviour(first_byte_delay=8)
    r = rid()
    resp = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"X-Request-Id": r},
        json={"model": "slow-model", "messages": MESSAGES},
        timeout=30,
    )
    err = assert_openai_error(resp, 504)
    assert "total deadline of 3s" in err["message"] and "2 attempts" in err["message"]
    row = gateway.call_row(r)
    assert row["outcome"] == "timeout" and row["attempts"] == 2
    assert row["attempt_errors"] == ["slow: first_byte_timeout", "slow: deadline"]


def test_retry_after_beyond_the_deadline_is_not_waited_for(gateway: GatewayProcess,
                                                           fake: FakeUpstream):  # fmt: skip
    fake.behaviour = Behaviour(status=503, headers={"retry-after": "120"})
    r = rid()
    resp = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"X-Request-Id": r},
        json={"model": "gpt-4o", "messages": MESSAGES},
    )
    assert resp.status_code == 503  # the upstream's answer, at once
    assert gateway.call_row(r)["attempts"] == 1
    assert len(fake.requests) == 1


def test_each_failed_attempt_is_recorded(gateway: GatewayProcess, fake: FakeUpstream):
    fake.behaviour = Behaviour(fail_times=1, fail_status=503, headers={"retry-after": "0"})
    r = rid()
    resp = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"X-Request-Id": r},
        json={"model": "gpt-4o", "messages": MESSAGES},
    )
    assert resp.status_code == 200
    row = gateway.call_row(r)
    assert row["attempts"] == 2 and row["attempt_errors"] == ["openai: http_503"]


@pytest.fixture(scope="module")
def retrying(fake, selfhosted, tmp_path_factory) -> Iterator[GatewayProcess]:
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["retries"] = {"max_attempts": 3, "backoff_ms": 10, "on_429": True}
    gw = GatewayProcess(cfg, tmp_path_factory.mktemp("retry429")).start()
    yield gw
    gw.stop()


def test_429_retried_when_configured_honouring_retry_after(retrying: GatewayProcess,
                                                           fake: FakeUpstream):  # fmt: skip
    fake.behaviour = Behaviour(fail_times=2, fail_status=429, headers={"retry-after": "1"})
    r = rid()
    resp = httpx.post(
        retrying.url + "/v1/chat/completions",
        headers={"X-Request-Id": r},
        json={"model": "gpt-4o", "messages": MESSAGES},
    )
    assert resp.status_code == 200
    row = retrying.call_row(r)
    assert row["attempts"] == 3 and row["attempt_errors"] == ["openai: http_429"] * 2
    fake.reset(Behaviour(status=429, headers={"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"}))
    resp = httpx.post(
        retrying.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES}
    )
    assert resp.status_code == 429 and len(fake.requests) == 1  # a date far past the deadline
