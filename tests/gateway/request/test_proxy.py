"""End to end: official SDKs → the gateway (a real subprocess) → fake upstreams; rows in chDB."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid

import anthropic
import httpx
import openai
import pytest
from genai_prices import Usage, calc_price

from tests.conftest import GatewayProcess
from tests.fakes import Behaviour, FakeUpstream

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello."},
]


def rid() -> str:
    return f"test-{uuid.uuid4()}"


def oai(gw: GatewayProcess, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0, **kw)


def expected_cost(model: str, inp: int, out: int, cached: int = 0) -> float:
    usage = Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=cached)
    return float(calc_price(usage, model, provider_id="openai").total_price)


# ---------------------------------------------------------------------------- chat
def test_chat_non_stream_one_row_with_usage_cost_latency(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(cached_tokens=6, reasoning_tokens=2)
    r = rid()
    resp = oai(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"X-Request-Id": r}
    )
    assert resp.headers["x-request-id"] == r
    completion = resp.parse()
    assert completion.choices[0].message.content == "Hello from the fake upstream!"
    row = gateway.call_row(r)
    assert row["provider"] == "openai" and row["provider_kind"] == "openai"
    assert row["operation"] == "chat" and row["endpoint"] == "/v1/chat/completions"
    assert row["request_model"] == "gpt-4o"
    assert row["response_model"] == "gpt-4o-2024-08-06"
    assert row["system_fingerprint"] == "fp_fake1"
    assert row["status_code"] == 200 and row["outcome"] == "ok"
    assert row["finish_reason"] == "stop"
    assert row["stream"] is False
    assert (row["input_tokens"], row["output_tokens"]) == (26, 7)
    assert (row["cache_read_tokens"], row["reasoning_tokens"]) == (6, 2)
    assert row["usage_estimated"] is False
    assert row["cost_usd"] == pytest.approx(expected_cost("gpt-4o-2024-08-06", 26, 7, 6), rel=1e-9)
    assert row["price_source"] == "genai-prices"
    assert row["latency_ms"] > 0 and row["ttft_ms"] is None
    assert 0 <= row["overhead_ms"] <= row["latency_ms"]
    assert row["turn_index"] == 1
    # The gateway's key went upstream, never the client's.
    sent = fake.requests[-1]
    assert sent.headers["authorization"] == "Bearer sk-gw-secret-1"


def test_chat_stream_usage_injected_but_hidden(gateway: GatewayProcess, fake):
    r = rid()
    client = oai(gateway)
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers={"X-Request-Id": r}
    ) as resp:
        chunks = list(resp.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream!"
    # The client did not ask for usage: it must not see the usage-only chunk.
    assert all(c.choices for c in chunks)
    assert fake.requests[-1].json["stream_options"] == {"include_usage": True}
    row = gateway.call_row(r)
    assert row["stream"] is True
    assert (row["input_tokens"], row["output_tokens"]) == (20, 5)
    assert row["usage_estimated"] is False
    assert row["ttft_ms"] is not None and 0 < row["ttft_ms"] <= row["latency_ms"]
    assert row["finish_reason"] == "stop"
    assert row["cost_usd"] == pytest.approx(expected_cost("gpt-4o-mini", 20, 5))


def test_chat_stream_client_asked_for_usage_sees_it(gateway: GatewayProcess, fake):
    r = rid()
    stream = oai(gateway).chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Request-Id": r},
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert gateway.call_row(r)["output_tokens"] == 5


async def test_async_sdk_stream_and_non_stream(gateway: GatewayProcess, fake):
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    r1, r2 = rid(), rid()
    c = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"X-Request-Id": r1}
    )
    assert c.usage.prompt_tokens == 20
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, extra_headers={"X-Request-Id": r2}
    )
    text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert text == "Hello from the fake upstream!"
    await client.close()
    rows = await asyncio.to_thread(gateway.wait_rows, f"request_id IN ('{r1}', '{r2}')", 2)
    assert sorted(r["stream"] for r in rows) == [False, True]


def test_stream_ttft_reflects_slow_first_token(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(first_byte_delay=0.3, chunk_delay=0.05)
    r = rid()
    list(
        oai(gateway).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_headers={"X-Request-Id": r}
        )
    )
    row = gateway.call_row(r)
    assert row["ttft_ms"] >= 300
    assert row["latency_ms"] >= row["ttft_ms"] + 4 * 50 - 20


# ---------------------------------------------------------------------------- other APIs
def test_completions_embeddings_models(gateway: GatewayProcess, fake):
    client = oai(gateway)
    r1, r2, r3 = rid(), rid(), rid()
    c = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Hi", extra_headers={"X-Request-Id": r1}
    )
    assert c.choices[0].text == "Hello from the fake upstream!"
    e = client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], extra_headers={"X-Request-Id": r2}
    )
    assert len(e.data) == 2
    models = client.models.with_raw_response.list(extra_headers={"X-Request-Id": r3})
    assert "gpt-4o" in [m.id for m in models.parse().data]
    row = gateway.call_row(r1)
    assert row["operation"] == "text_completion" and row["output_tokens"] == 5
    row = gateway.call_row(r2)
    assert row["operation"] == "embeddings" and row["input_tokens"] == 20
    assert row["output_tokens"] == 0
    assert row["cost_usd"] == pytest.approx(
        float(
            calc_price(
                Usage(input_tokens=20), "text-embedding-3-small", provider_id="openai"
            ).total_price
        )
    )
    row = gateway.call_row(r3)
    assert row["operation"] == "models" and row["status_code"] == 200


def test_responses_api_stream_and_not(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(cached_tokens=3, reasoning_tokens=4)
    client = oai(gateway)
    r1, r2 = rid(), rid()
    out = client.responses.create(model="gpt-4o", input="Hello", extra_headers={"X-Request-Id": r1})
    assert out.output_text == "Hello from the fake upstream!"
    events = list(
        client.responses.create(
            model="gpt-4o", input="Hello", stream=True, extra_headers={"X-Request-Id": r2}
        )
    )
    assert events[-1].type == "response.completed"
    for r, stream in ((r1, False), (r2, True)):
        row = gateway.call_row(r)
        assert row["operation"] == "responses" and row["stream"] is stream
        assert (row["input_tokens"], row["output_tokens"]) == (13, 9)
        assert (row["cache_read_tokens"], row["reasoning_tokens"]) == (3, 4)
        assert row["finish_reason"] == "stop" and row["turn_index"] == 1
        assert row["cost_usd"] is not None and row["cost_usd"] > 0


def test_anthropic_sdk_native_stream_and_not(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(cached_tokens=100, cache_write_tokens=50)
    client = anthropic.Anthropic(base_url=gateway.url, api_key="client-key", max_retries=0)
    r1, r2 = rid(), rid()
    msg = client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=50,
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"X-Request-Id": r1},
    )
    assert msg.content[0].text == "Hello from the fake upstream!"
    with client.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=50,
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"X-Request-Id": r2},
    ) as s:
        assert s.get_final_text() == "Hello from the fake upstream!"
    sent = fake.requests[-1]
    assert sent.headers["x-api-key"] == "ant-secret-3" and sent.headers["anthropic-version"]
    for r, stream in ((r1, False), (r2, True)):
        row = gateway.call_row(r)
        assert row["provider"] == "anthropic" and row["stream"] is stream
        # input = uncached + cache read + cache write (OTel convention)
        assert (row["input_tokens"], row["output_tokens"]) == (160, 5)
        assert (row["cache_read_tokens"], row["cache_write_tokens"]) == (100, 50)
        assert row["finish_reason"] == "stop"
        expected = float(
            calc_price(
                Usage(
                    input_tokens=160, output_tokens=5, cache_read_tokens=100, cache_write_tokens=50
                ),
                "claude-haiku-4-5",
                provider_id="anthropic",
            ).total_price
        )
        assert row["cost_usd"] == pytest.approx(expected)
    assert gateway.call_row(r2)["ttft_ms"] is not None


def test_anthropic_stream_error_event_recorded(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(stream_error_after_chunks=4)
    client = anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0)
    r = rid()
    with (
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=50,
            messages=[{"role": "user", "content": "Hi"}],
            extra_headers={"X-Request-Id": r},
        ) as s,
    ):
        s.get_final_text()
    row = gateway.call_row(r)
    assert row["outcome"] == "upstream_error" and row["error_type"] == "overloaded_error"


def test_azure_deployment_url_and_api_key(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(finish_reason="content_filter")
    r = rid()
    stream = oai(gateway).chat.completions.create(
        model="gpt-4o-azure", messages=MESSAGES, stream=True, extra_headers={"X-Request-Id": r}
    )
    chunks = list(stream)
    assert chunks[0].choices == []  # Azure's prompt_filter_results chunk is passed through
    sent = fake.requests[-1]
    assert sent.deployment == "my-deploy" and sent.query["api-version"]
    assert sent.headers["api-key"] == "az-secret-2" and "authorization" not in sent.headers
    row = gateway.call_row(r)
    assert row["provider"] == "azure" and row["finish_reason"] == "content_filter"
    assert row["output_tokens"] == 5 and row["usage_estimated"] is False


def test_unknown_v1_path_forwarded_and_recorded(gateway: GatewayProcess, fake):
    r = rid()
    resp = httpx.post(
        gateway.url + "/v1/some/new/thing?x=1",
        json={"model": "gpt-4o"},
        headers={"X-Request-Id": r},
    )
    assert resp.status_code == 200 and resp.json() == {"echo": "/v1/some/new/thing"}
    assert fake.requests[-1].query == {"x": "1"}
    row = gateway.call_row(r)
    assert row["operation"] == "other" and row["endpoint"] == "/v1/some/new/thing"
    assert row["request_model"] == "gpt-4o" and row["provider"] == "openai"


# ---------------------------------------------------------------------------- routing
def test_alias_and_route_rewrite(gateway: GatewayProcess, fake):
    r = rid()
    oai(gateway).chat.completions.create(
        model="fast", messages=MESSAGES, extra_headers={"X-Request-Id": r}
    )
    assert fake.requests[-1].json["model"] == "gpt-4o-mini"
    row = gateway.call_row(r)
    assert row["request_model"] == "fast" and row["upstream_model"] == "gpt-4o-mini"


def test_fallback_on_connection_error(gateway: GatewayProcess, fake):
    r = rid()
    c = oai(gateway).chat.completions.create(
        model="fallback-model", messages=MESSAGES, extra_headers={"X-Request-Id": r}
    )
    assert c.model == "gpt-4o-2024-08-06"
    row = gateway.call_row(r)
    assert row["provider"] == "openai" and row["fallback_used"] is True
    assert row["attempts"] == 2 and row["outcome"] == "ok"


def test_retry_on_503_then_success(gateway: GatewayProcess, fake):
    fake.reset(Behaviour(fail_times=1, fail_status=503))
    r = rid()
    c = oai(gateway).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"X-Request-Id": r}
    )
    assert c.choices[0].message.content
    row = gateway.call_row(r)
    assert row["attempts"] == 2 and row["status_code"] == 200


def test_upstream_error_passed_through_as_sent(gateway: GatewayProcess, fake):
    body = {
        "error": {
            "message": "Rate limit reached",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    fake.behaviour = Behaviour(status=429, error_body=body)
    r = rid()
    resp = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"X-Request-Id": r},
        json={"model": "gpt-4o", "messages": MESSAGES},
    )
    assert resp.status_code == 429 and resp.json() == body
    row = gateway.call_row(r)
    assert row["status_code"] == 429 and row["outcome"] == "upstream_error"
    # a 429 is not retried by default (`retries.on_429`): the client's SDK decides
    assert row["error_type"] == "requests" and row["attempts"] == 1
    assert row["cost_usd"] == 0.0


def test_passthrough_credentials(gateway: GatewayProcess, fake):
    r = rid()
    oai(gateway).chat.completions.create(
        model="pt-anything", messages=MESSAGES, extra_headers={"X-Request-Id": r}
    )
    assert fake.requests[-1].headers["authorization"] == "Bearer client-key"
    resp = httpx.post(
        gateway.url + "/v1/chat/completions", json={"model": "pt-anything", "messages": MESSAGES}
    )
    assert resp.status_code == 401
    assert resp.json()["error"]["type"] == "authentication_error"
    assert gateway.call_row(resp.headers["x-request-id"])["status_code"] == 401


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"model": "gpt-4o", "messages": [', 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"messages": []}', 400, "missing_model"),
        (b'{"model": "no-such-model", "messages": []}', 404, "model_not_found"),
    ],
)
def test_bad_requests_get_openai_errors_and_rows(gateway: GatewayProcess, body, status, code):
    resp = httpx.post(
        gateway.url + "/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == status
    err = resp.json()["error"]
    assert err["code"] == code and err["message"] and "type" in err and "param" in err
    row = gateway.call_row(resp.headers["x-request-id"])
    assert row["status_code"] == status and row["outcome"] == "rejected"
    assert row["error_type"] == code


def test_body_over_limit_is_413(gateway: GatewayProcess):
    big = (
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "' + b"x" * 300_000 + b'"}]}'
    )
    resp = httpx.post(gateway.url + "/v1/chat/completions", content=big)
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "request_too_large"
    assert gateway.call_row(resp.headers["x-request-id"])["status_code"] == 413
    # Chunked (no Content-Length): caught while reading.
    resp = httpx.post(
        gateway.url + "/v1/chat/completions", content=iter([big[:200_000], big[200_000:]])
    )
    assert resp.status_code == 413


def test_anthropic_messages_for_openai_model_is_400(gateway: GatewayProcess):
    # /v1/messages to an OpenAI-kind model is translated; a request the translation cannot
    # carry (no messages) is refused by it, naming the parameter, before anything is sent,
    # in Anthropic's error shape (the client's dialect).
    r = rid()
    resp = httpx.post(gateway.url + "/v1/messages", json={"model": "gpt-4o", "messages": []},
                      headers={"X-Request-Id": r})  # fmt: skip
    assert resp.status_code == 400
    body = resp.json()
    assert body["type"] == "error" and body["request_id"] == r, body
    error = body["error"]
    assert error["type"] == "invalid_request_error", error
    assert error["message"].startswith("`messages` must be a non-empty list"), error
    row = gateway.call_row(r)
    assert row["status_code"] == 400 and row["outcome"] == "rejected", row


# ---------------------------------------------------------------------------- timeouts and cuts
def test_first_byte_timeout_gives_504_and_a_row(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(first_byte_delay=3.0)
    r = rid()
    t = time.monotonic()
    resp = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"X-Request-Id": r},
        json={"model": "gpt-4o", "messages": MESSAGES},
        timeout=20,
    )
    assert resp.status_code == 504 and resp.json()["error"]["type"] == "timeout_error"
    assert time.monotonic() - t < 2 * 1.5 + 1  # two attempts of a 1.5 s first-byte budget
    row = gateway.call_row(r)
    assert row["outcome"] == "timeout" and row["status_code"] == 504


def test_total_timeout_mid_stream(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(chunk_delay=1.0, n_chunks=10)
    r = rid()
    with pytest.raises(openai.APIError):
        list(
            oai(gateway).chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True, extra_headers={"X-Request-Id": r}
            )
        )
    row = gateway.call_row(r, timeout=15)
    assert row["outcome"] == "timeout" and row["status_code"] == 504
    assert row["ttft_ms"] is not None and row["output_tokens"] >= 1


def test_upstream_dies_mid_stream(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(abort_after_chunks=3)
    r = rid()
    got = []
    with pytest.raises(openai.APIError):
        for chunk in oai(gateway).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_headers={"X-Request-Id": r}
        ):
            got.append(chunk)
    assert got  # what arrived before the cut reached the client
    row = gateway.call_row(r)
    assert row["outcome"] == "upstream_disconnected" and row["status_code"] == 502
    assert row["usage_estimated"] is True and row["output_tokens"] > 0


def test_client_disconnect_cancels_upstream(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(chunk_delay=0.2, n_chunks=20)
    r = rid()
    body = json.dumps({"model": "gpt-4o", "messages": MESSAGES, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", gateway.port)) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"X-Request-Id: {r}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        got = b""
        while b'"content":"H' not in got:  # the first token has arrived: now leave
            got += s.recv(65536)
    row = gateway.call_row(r)
    assert row["outcome"] == "client_disconnected" and row["status_code"] == 499
    assert row["latency_ms"] < 20 * 200  # did not wait for the whole stream
    assert row["ttft_ms"] is not None


# ---------------------------------------------------------------------------- usage estimation
def test_no_usage_upstream_is_estimated(gateway: GatewayProcess, selfhosted: FakeUpstream):
    r1, r2 = rid(), rid()
    client = oai(gateway)
    list(
        client.chat.completions.create(
            model="llama-3-8b", messages=MESSAGES, stream=True, extra_headers={"X-Request-Id": r1}
        )
    )
    # inject_stream_usage: false for this provider, which rejects stream_options
    assert "stream_options" not in selfhosted.requests[-1].json
    client.chat.completions.create(
        model="llama-3-8b", messages=MESSAGES, extra_headers={"X-Request-Id": r2}
    )
    for r in (r1, r2):
        row = gateway.call_row(r)
        assert row["usage_estimated"] is True
        assert row["output_tokens"] == 8  # 29 characters / 4, rounded up
        assert row["input_tokens"] > 0
        # the config's price override for a self-hosted model
        expected = (row["input_tokens"] * 0.1 + 8 * 0.2) / 1e6
        assert row["cost_usd"] == pytest.approx(expected) and row["price_source"] == "config"


def test_unknown_price_is_null_not_zero(gateway: GatewayProcess, selfhosted: FakeUpstream):
    r = rid()
    oai(gateway).chat.completions.create(
        model="llama-unknown", messages=MESSAGES, extra_headers={"X-Request-Id": r}
    )
    row = gateway.call_row(r)
    assert row["output_tokens"] > 0 and row["cost_usd"] is None and row["price_source"] == ""


# ---------------------------------------------------------------------------- the record's context
def test_headers_fill_app_user_session_properties(gateway: GatewayProcess, fake):
    r = rid()
    oai(gateway).chat.completions.create(
        model="gpt-4o",
        messages=[
            *MESSAGES,
            {"role": "assistant", "content": "Hi"},
            {"role": "user", "content": "Again"},
        ],
        user="sdk-user",
        extra_headers={
            "X-Request-Id": r,
            "X-Gateway-App": "support-bot",
            "X-Gateway-Session": "s-1",
            "X-Gateway-Property-Prompt": "greeting-v2",
            "X-Gateway-Property-Tier": "gold",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        },
    )
    row = gateway.call_row(r)
    assert row["app"] == "support-bot" and row["session_id"] == "s-1"
    assert row["end_user"] == "sdk-user"  # the OpenAI `user` field when no header says
    assert row["turn_index"] == 2
    assert row["properties"] == {"prompt": "greeting-v2", "tier": "gold"}
    assert row["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    sent = fake.requests[-1].headers
    assert not any(k.startswith("x-gateway-") for k in sent)
    r2 = rid()
    oai(gateway).chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        user="sdk-user",
        extra_headers={"X-Request-Id": r2, "X-Gateway-User": "header-user"},
    )
    assert gateway.call_row(r2)["end_user"] == "header-user"


def test_capture_policy_and_no_secrets_stored(gateway: GatewayProcess, fake):
    r1, r2 = rid(), rid()
    client = oai(gateway)
    client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"X-Request-Id": r1}
    )
    client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        extra_headers={"X-Request-Id": r2, "X-Gateway-Capture": "full", "Cookie": "session=abc"},
    )
    row = gateway.call_row(r1)
    assert row["request_body"] == "" and row["response_body"] == ""  # metadata only by default
    row = gateway.call_row(r2)
    assert json.loads(row["request_body"])["messages"] == MESSAGES
    assert "Hello from the fake upstream!" in row["response_body"]
    assert "cookie" not in fake.requests[-1].headers
    everything = json.dumps(gateway.sql("SELECT * FROM llm_calls"))
    for secret in ("client-key", "sk-gw-secret-1", "az-secret-2", "ant-secret-3", "session=abc"):
        assert secret not in everything
    assert not any(s in gateway.log() for s in ("client-key", "sk-gw-secret-1", "ant-secret-3"))


def test_exactly_one_row_per_call_under_concurrency(gateway: GatewayProcess, fake):
    app = f"conc-{uuid.uuid4().hex[:8]}"

    async def go() -> None:
        async with openai.AsyncOpenAI(
            base_url=gateway.url + "/v1",
            api_key="k",
            max_retries=0,
            default_headers={"X-Gateway-App": app},
        ) as client:

            async def one(i: int) -> None:
                if i % 2:
                    s = await client.chat.completions.create(
                        model="gpt-4o", messages=MESSAGES, stream=True
                    )
                    async for _ in s:
                        pass
                else:
                    await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

            await asyncio.gather(*(one(i) for i in range(60)))

    asyncio.run(go())
    rows = gateway.wait_rows(f"app = '{app}'", 60)
    assert len(rows) == 60 and len({r["request_id"] for r in rows}) == 60
    assert all(r["status_code"] == 200 and r["output_tokens"] == 5 for r in rows)
