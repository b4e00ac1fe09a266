"""The feedback API against a running gateway: good, bad and repeated events, batches, key
scopes, CORS, rate limits, and a schemathesis run against the endpoint's own OpenAPI."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.conftest import GatewayProcess, gateway_config

SERVER_KEY = "sk_fb_server_123456"
PUB_KEY = "pk_fb_public_123456"
ORIGIN = "https://app.example.com"


def events(gw: GatewayProcess, where: str, n: int, timeout: float = 10) -> list[dict]:
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = gw.sql(f"SELECT * FROM llm_feedback FINAL WHERE {where} ORDER BY ts")
        if len(rows) >= n:
            time.sleep(0.1)
            return gw.sql(f"SELECT * FROM llm_feedback FINAL WHERE {where} ORDER BY ts")
        time.sleep(0.05)
    raise AssertionError(f"expected {n} feedback rows where {where}, got {len(rows)}")


# ---------------------------------------------------------------------------- open gateway
def test_single_event_links_to_call_and_takes_headers(gateway: GatewayProcess):
    rid = f"fbcall-{uuid.uuid4()}"
    r = httpx.post(
        gateway.url + "/v1/feedback",
        json={"request_id": rid, "name": "rating", "value": 4, "comment": "good",
              "metadata": {"screen": "chat"}},
        headers={"X-Gateway-App": "web", "X-Gateway-User": "u-1"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1 and body["results"][0]["status"] == "accepted"
    (row,) = events(gateway, f"request_id = '{rid}'", 1)
    assert (row["name"], row["value"], row["data_type"], row["source"]) == (
        "rating", 4.0, "numeric", "user")  # fmt: skip
    assert (row["app"], row["end_user"], row["comment"]) == ("web", "u-1", "good")
    assert row["metadata"] == {"screen": "chat"}
    assert row["event_id"] == body["results"][0]["event_id"]


def test_same_event_twice_is_one_event(gateway: GatewayProcess):
    sid = f"s-{uuid.uuid4()}"
    ev = {"event_id": f"ev-{uuid.uuid4()}", "session_id": sid, "name": "share"}
    for _ in range(3):
        assert httpx.post(gateway.url + "/v1/feedback", json=ev).status_code == 200
    httpx.post(gateway.url + "/v1/feedback", json=[ev, ev])
    rows = events(gateway, f"session_id = '{sid}'", 1)
    time.sleep(0.5)
    assert len(gateway.sql(f"SELECT * FROM llm_feedback FINAL WHERE session_id = '{sid}'")) == 1
    assert rows[0]["value"] == 1.0 and rows[0]["data_type"] == "boolean"


@pytest.mark.parametrize(
    ("event", "param"),
    [
        ({"request_id": "r"}, "name"),
        ({"name": "rating", "value": 3}, "request_id"),  # linked to nothing
        ({"name": "rating", "request_id": "r", "value": "five"}, "value"),
        ({"name": "rating", "request_id": "r"}, "value"),  # a rating needs a number
        ({"name": "thumbs", "request_id": "r", "value": 7}, "value"),
        ({"name": "dwell", "request_id": "r", "value": -5}, "value"),
        ({"name": "suggestion_retained", "request_id": "r", "value": 1.5}, "value"),
        ({"name": "defect", "request_id": "r"}, "string_value"),
        ({"name": "Bad Name!", "request_id": "r"}, "name"),
        ({"name": "copy", "request_id": "r", "comment": "x" * 5000}, "comment"),
        ({"name": "copy", "request_id": "r", "source": "robot"}, "source"),
        ({"name": "copy", "request_id": "r", "ts": 12}, "ts"),
        ({"name": "copy", "request_id": "r", "metadata": {"k": {"x": 1}}}, "metadata.k"),
        ({"name": "copy", "request_id": "r", "colour": "red"}, "colour"),
        ({"name": "copy", "request_id": "not an id!"}, "request_id"),
    ],
)
def test_invalid_event_is_422_naming_the_field(gateway: GatewayProcess, event, param):
    r = httpx.post(gateway.url + "/v1/feedback", json=event)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["code"] == "invalid_feedback" and err["message"]


def test_batch_keeps_the_valid_ones(gateway: GatewayProcess):
    sid = f"s-{uuid.uuid4()}"
    batch = [
        {"session_id": sid, "name": "suggestion_shown"},
        {"session_id": sid, "name": "rating"},  # no value
        {"session_id": sid, "name": "dwell", "value": 1234, "source": "implicit"},
        {"session_id": sid, "name": "my_custom_signal", "value": 0.3},
        "not an object",
    ]
    r = httpx.post(gateway.url + "/v1/feedback", json=batch)
    assert r.status_code == 200
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (3, 2)
    assert [x["status"] for x in body["results"]] == [
        "accepted", "rejected", "accepted", "accepted", "rejected"]  # fmt: skip
    assert body["results"][1]["error"]["param"] == "value"
    rows = events(gateway, f"session_id = '{sid}'", 3)
    assert sorted((r["name"], r["data_type"]) for r in rows) == [
        ("dwell", "numeric"),
        ("my_custom_signal", "numeric"),
        ("suggestion_shown", "boolean"),
    ]
    # Nothing valid at all: 422 with the per-event report.
    r = httpx.post(gateway.url + "/v1/feedback", json=[{"name": "x"}, {}])
    assert r.status_code == 422 and r.json()["accepted"] == 0


def test_malformed_and_oversized_bodies(gateway: GatewayProcess):
    r = httpx.post(gateway.url + "/v1/feedback", content=b'{"name": "copy", ')
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(gateway.url + "/v1/feedback", content=b"[" + b"1," * 700_000 + b"1]")
    assert r.status_code == 413
    r = httpx.post(gateway.url + "/v1/feedback", json=[{"name": "copy", "session_id": "s"}] * 501)
    assert r.status_code == 413 and r.json()["error"]["code"] == "batch_too_large"
    # sendBeacon sends text/plain: still JSON.
    r = httpx.post(gateway.url + "/v1/feedback", content=b'{"name":"copy","session_id":"tp"}',
                   headers={"content-type": "text/plain;charset=UTF-8"})  # fmt: skip
    assert r.status_code == 200


def test_feedback_metric_counts_events(gateway: GatewayProcess):
    def count() -> float:
        text = httpx.get(gateway.url + "/metrics").text
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                   if ln.startswith('gateway_feedback_events_total{name="thumbs"'))  # fmt: skip

    before = count()
    httpx.post(gateway.url + "/v1/feedback",
               json={"name": "thumbs", "value": True, "session_id": "m"})  # fmt: skip
    assert count() == before + 1


# ---------------------------------------------------------------------------- keys, CORS
@pytest.fixture(scope="module")
def keyed(fake, selfhosted, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["feedback"] = {
        "keys": [
            {"key": SERVER_KEY, "kind": "server"},
            {"key": PUB_KEY, "kind": "publishable", "origins": [ORIGIN],
             "rate_per_minute": 20, "app": "web-app"},
        ]
    }  # fmt: skip
    gw = GatewayProcess(cfg, tmp_path_factory.mktemp("keyed")).start()
    yield gw
    gw.stop()


def post(gw: GatewayProcess, ev: object, headers: dict[str, str] | None = None,
         key: str | None = None) -> httpx.Response:  # fmt: skip
    url = gw.url + "/v1/feedback" + (f"?key={key}" if key else "")
    return httpx.post(url, json=ev, headers=headers or {})


def test_keys_required_once_configured(keyed: GatewayProcess):
    ev = {"name": "copy", "session_id": "k"}
    r = post(keyed, ev)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert post(keyed, ev, {"Authorization": "Bearer wrong-key-123"}).status_code == 401
    assert post(keyed, ev, {"Authorization": f"Bearer {SERVER_KEY}"}).status_code == 200
    assert post(keyed, ev, {"X-Gateway-Key": SERVER_KEY}).status_code == 200
    # A server key may send any source; a publishable key only user/implicit events.
    ev2 = {**ev, "source": "evaluator"}
    assert post(keyed, ev2, {"X-Gateway-Key": SERVER_KEY}).status_code == 200
    r = post(keyed, ev2, {"Origin": ORIGIN}, key=PUB_KEY)
    assert r.status_code == 422 and r.json()["error"]["param"] == "source"


def test_publishable_key_cors(keyed: GatewayProcess):
    sid = f"cors-{uuid.uuid4()}"
    ev = {"name": "copy", "session_id": sid}
    r = post(keyed, ev, {"Origin": ORIGIN, "X-Gateway-App": "spoofed"}, key=PUB_KEY)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    (row,) = events(keyed, f"session_id = '{sid}'", 1)
    assert row["app"] == "web-app"  # the key's app, not what the browser claimed
    r = post(keyed, ev, {"Origin": "https://evil.example"}, key=PUB_KEY)
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    r = post(keyed, ev, {"Origin": ORIGIN})  # a browser without a key
    assert r.status_code == 401
    # Preflight: allowed origin gets the CORS answer, others do not.
    r = httpx.options(keyed.url + "/v1/feedback", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})  # fmt: skip
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    r = httpx.options(keyed.url + "/v1/feedback", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
    # The LLM proxy itself never answers browsers with CORS headers.
    r = httpx.options(keyed.url + "/v1/chat/completions", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in r.headers


def test_publishable_key_needs_an_origin(keyed: GatewayProcess):
    # The key ships in web pages: without the browser's Origin it proves nothing.
    ev = {"name": "copy", "session_id": "no-origin"}
    for r in (post(keyed, ev, key=PUB_KEY), post(keyed, ev, {"X-Gateway-Key": PUB_KEY})):
        assert r.status_code == 403 and r.json()["error"]["code"] == "origin_required"


def test_publishable_key_rate_limit(keyed: GatewayProcess):
    ev = {"name": "copy", "session_id": "rl"}
    codes = [post(keyed, ev, {"Origin": ORIGIN}, key=PUB_KEY).status_code for _ in range(30)]
    assert 200 in codes and 429 in codes
    assert codes.index(429) >= 10  # the burst allowance came first (20/min, minus earlier tests)
    r = post(keyed, ev, {"Origin": ORIGIN}, key=PUB_KEY)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["type"] == "rate_limit_error"
    # Server keys are not rate limited.
    assert post(keyed, ev, {"X-Gateway-Key": SERVER_KEY}).status_code == 200


# ---------------------------------------------------------------------------- schemathesis
def test_feedback_api_conforms_to_its_openapi(gateway: GatewayProcess):
    """Every generated request, valid or not, gets a documented status and body shape; none
    gets a 5xx. (Driven through hypothesis directly; schemathesis' pytest plugin does not
    load on this pytest.)"""
    schema = schemathesis.openapi.from_url(gateway.url + "/v1/feedback/openapi.json")
    operations = [op.ok() for op in schema.get_all_operations()]
    assert [o.path for o in operations] == ["/v1/feedback"]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            # Schema-valid is not always acceptable: a rating needs a number, `ts` must be
            # recent. Those answers are documented 422s; every other check applies.
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        check()


def test_openapi_is_served(gateway: GatewayProcess, tmp_path: Path):
    spec = httpx.get(gateway.url + "/v1/feedback/openapi.json").json()
    assert "/v1/feedback" in spec["paths"]
    assert "rating" in spec["paths"]["/v1/feedback"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["oneOf"][0]["properties"]["name"]["description"]  # fmt: skip
