"""A `/v1/messages` client gets the gateway's own errors in Anthropic's error shape, so that
the Anthropic SDK raises the class it raises for Anthropic itself: refusals of keys and
limits, a body too large, an unknown model, timeouts, upstreams that cannot be read, and
the translated errors of an OpenAI upstream. The OpenAI SDK still gets OpenAI's shape."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import anthropic
import openai
import pytest

from gateway.access.keys import new_secret
from tests.conftest import GatewayProcess, gateway_config
from tests.fakes import Behaviour
from tests.fakes.raw import RawUpstream

KEY = new_secret()
LIMITED = new_secret()
MSGS = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def broken() -> Iterator[RawUpstream]:
    with RawUpstream("bad_status") as r:
        yield r


@pytest.fixture(scope="module")
def gw(fake, selfhosted, broken, tmp_path_factory) -> Iterator[GatewayProcess]:
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["server"]["max_body_bytes"] = 4096
    quick = {"connect": 1, "total": 3}
    cfg["providers"]["broken"] = {"kind": "openai", "base_url": broken.url + "/v1",
                                  "api_key": "x", "timeouts": quick}  # fmt: skip
    cfg["routes"].insert(0, {"match": "broken-*", "provider": "broken"})
    cfg["auth"] = {"require_key": True, "keys": [
        {"name": "open", "key": KEY},
        {"name": "limited", "key": LIMITED, "rpm": 1, "models": ["claude*"]},
    ]}  # fmt: skip
    g = GatewayProcess(cfg, tmp_path_factory.mktemp("dialect")).start()
    g.wait_ready().wait_jobs("key_refresh")  # unknown keys are unknown, not "loading"
    yield g
    g.stop()


def client(gw: GatewayProcess, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0,
                               default_headers={"X-Request-Id": uuid.uuid4().hex})  # fmt: skip


def raised(gw: GatewayProcess, key: str = KEY, **kw: object) -> anthropic.APIStatusError:
    args = {"model": "claude-3-5-sonnet", "max_tokens": 16, "messages": MSGS, **kw}
    with pytest.raises(anthropic.APIStatusError) as e:
        client(gw, key).messages.create(**args)  # type: ignore[call-overload]
    return e.value


def assert_anthropic_shape(e: anthropic.APIStatusError, type_: str) -> None:
    body = e.body
    assert isinstance(body, dict) and body["type"] == "error", body
    assert body["error"]["type"] == type_ and body["error"]["message"], body
    assert "code" not in body["error"] and "param" not in body["error"]
    assert body["request_id"] == e.response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("case", "cls", "type_"),
    [
        ("no key", anthropic.AuthenticationError, "authentication_error"),
        ("unknown key", anthropic.AuthenticationError, "authentication_error"),
        ("model not allowed", anthropic.PermissionDeniedError, "permission_error"),
        ("unknown model", anthropic.NotFoundError, "not_found_error"),
        ("too large", anthropic.ContentTooLargeError, "request_too_large"),
        ("bad model type", anthropic.BadRequestError, "invalid_request_error"),
    ],
)
def test_refusals_raise_the_sdks_classes(gw: GatewayProcess, case: str, cls, type_: str):
    if case == "no key":
        e = raised(gw, key="sk-ant-not-a-gateway-key")
    elif case == "unknown key":
        e = raised(gw, key=new_secret())
    elif case == "model not allowed":
        e = raised(gw, key=LIMITED, model="gpt-4o")
    elif case == "unknown model":
        e = raised(gw, model="no-route-knows-me")
    elif case == "too large":
        e = raised(gw, messages=[{"role": "user", "content": "x" * 5000}])
    else:
        e = raised(gw, extra_body={"model": 5})  # `model` must be a string
    assert isinstance(e, cls), (type(e), e.body)
    assert_anthropic_shape(e, type_)


def test_rate_limit_raises_rate_limit_error_with_its_wait(gw: GatewayProcess):
    client(gw, LIMITED).messages.create(model="claude-3-5-sonnet", max_tokens=16, messages=MSGS)
    e = raised(gw, key=LIMITED)
    assert isinstance(e, anthropic.RateLimitError)
    assert_anthropic_shape(e, "rate_limit_error")
    assert int(e.response.headers["retry-after"]) >= 1


def test_timeouts_and_unreadable_upstreams(gw: GatewayProcess, fake):
    fake.behaviour = Behaviour(first_byte_delay=5)
    e = raised(gw, model="slow-model")  # first byte 2 s, total 3 s: 504
    assert isinstance(e, anthropic.GatewayTimeoutError)
    assert_anthropic_shape(e, "timeout_error")
    fake.behaviour = Behaviour()
    e = raised(gw, model="broken-model")  # an invalid status line: 502
    assert isinstance(e, anthropic.InternalServerError) and e.status_code == 502
    assert_anthropic_shape(e, "api_error")


def test_translated_upstream_errors_are_anthropic_shaped(gw: GatewayProcess, fake):
    fake.behaviour = Behaviour(status=429)
    e = raised(gw, model="gpt-4o-mini")  # an OpenAI upstream's 429, translated
    assert isinstance(e, anthropic.RateLimitError)
    assert e.body["type"] == "error" and e.body["error"]["type"] == "rate_limit_error"


def test_openai_clients_keep_openai_errors(gw: GatewayProcess):
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="no-route-knows-me", messages=MSGS)  # type: ignore[arg-type]
    assert set(e.value.body) == {"message", "type", "param", "code"}  # the SDK unwraps "error"
    assert e.value.code == "model_not_found"
