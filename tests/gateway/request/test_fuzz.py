"""A seeded fuzz run against a running gateway: bodies and headers a hostile or broken
client might send, to the four endpoints a client reaches. The fake upstream answers
every call with a 200, so any 5xx is the gateway's own. No answer may take the client's
whole timeout (a hang), and every error must be in OpenAI's error shape. Then a flood of
distinct names must leave /metrics small."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import GatewayProcess, gateway_config
from tests.fakes import Behaviour, FakeUpstream

ENDPOINTS = ["/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/v1/feedback"]
MODELS = ["gpt-4o", "claude-3-5-sonnet", "text-embedding-3-small", "fast", "nope", ""]
KEYS = ["model", "messages", "input", "stream", "stream_options", "user", "metadata",
        "system", "max_tokens", "name", "value", "request_id", "session_id", "source",
        "prompt", "safety_identifier", "include_usage"]  # fmt: skip
HEADER_NAMES = ["x-gateway-app", "x-gateway-user", "x-gateway-session", "x-gateway-capture",
                "x-gateway-property-team", "x-request-id", "traceparent", "content-type",
                "user-agent", "authorization", "api-key", "x-api-key", "origin",
                "x-gateway-key", "anthropic-version", "content-encoding", "accept"]  # fmt: skip
CONTENT_TYPES = ["application/json", "text/plain", "multipart/form-data; boundary=x",
                 "application/x-www-form-urlencoded", "application/json; charset=latin-1",
                 "*/*", "", "\x7f"]  # fmt: skip

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                | st.text(max_size=40) | st.sampled_from(MODELS))  # fmt: skip
json_values = st.recursive(
    json_scalars,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), kids, max_size=5)
    ),
    max_leaves=12,
)
objects = st.fixed_dictionaries(
    {"model": st.sampled_from(MODELS) | json_scalars},
    optional={k: json_values for k in KEYS[1:]},
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:  # deep nesting
        n = draw(st.integers(200, 3000))
        return b'{"model":"gpt-4o","messages":' + b"[" * n + b"]" * n + b"}"
    if kind == 2:  # valid JSON, not UTF-8
        return b'{"model":"gpt-4o","messages":"' + draw(st.binary(min_size=1, max_size=20)) + b'"}'
    import json

    value = draw(objects if kind < 5 else json_values)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    if kind == 4:  # truncated
        text = text[: draw(st.integers(0, len(text)))]
    return text.encode("utf-8", "surrogatepass")


header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=60,
) | st.sampled_from(["a" * 4000, "é" * 1000, "00-" + "0" * 32 + "-" + "0" * 16 + "-01", " "])
# (values with surrounding whitespace are not sendable: the client library refuses them)
headers = st.dictionaries(
    st.sampled_from(HEADER_NAMES), header_values.filter(lambda v: v == v.strip()), max_size=6
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(Behaviour(canned=True)) as f:
        yield f


@pytest.fixture(scope="module")
def fuzzed(upstream: FakeUpstream, tmp_path_factory) -> Iterator[GatewayProcess]:
    cfg = gateway_config(upstream.url, upstream.url)
    gw = GatewayProcess(cfg, tmp_path_factory.mktemp("fuzz")).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=15.0) as c:  # a hang shows as a ReadTimeout
        yield c


def check(resp: httpx.Response, endpoint: str = "") -> None:
    assert resp.status_code < 500, (resp.status_code, resp.text[:300])
    if resp.status_code >= 400:
        try:
            body = resp.json()
            err = body["error"]
        except (ValueError, KeyError):
            raise AssertionError((resp.status_code, resp.headers, resp.text[:300])) from None
        # The client's dialect (Anthropic's shape on /v1/messages), except for a request the
        # HTTP layer refuses before any route is known (`invalid_http_request`).
        if endpoint == "/v1/messages" and err.get("code") != "invalid_http_request":
            assert body.get("type") == "error" and set(err) == {"message", "type"}, body
        else:
            assert set(err) == {"message", "type", "param", "code"}, err


@settings(max_examples=2000, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(endpoint=st.sampled_from(ENDPOINTS), body=bodies(), hdrs=headers,
       ctype=st.sampled_from(CONTENT_TYPES))  # fmt: skip
def test_fuzz_no_5xx_no_hang_errors_in_shape(
    fuzzed: GatewayProcess, client: httpx.Client, endpoint: str, body: bytes,
    hdrs: dict[str, str], ctype: str,
) -> None:  # fmt: skip
    hdrs = {**hdrs, "content-type": hdrs.get("content-type", ctype)}
    encoded = {k: v.encode("latin-1") for k, v in hdrs.items()}
    check(client.post(fuzzed.url + endpoint, content=body, headers=encoded), endpoint)


def test_metrics_stay_small_after_a_flood(fuzzed: GatewayProcess, client: httpx.Client):
    def flood(model: str, app: str) -> None:
        r = client.post(
            fuzzed.url + "/v1/chat/completions",
            headers={"X-Gateway-App": app},
            json={"model": model, "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.status_code < 500

    for i in range(120):
        tag = uuid.uuid4().hex
        flood("gpt-" + tag * 6000, "app-" + tag * 2000)  # 200 KB names
        flood(f"gpt-{tag}", f"app-{tag}")  # short distinct names: capped in number
        flood(f"nope-{tag}", f"app-{i}")  # no route knows it
    size = len(client.get(fuzzed.url + "/metrics").content)
    assert size < 1_000_000, size
