"""The Anthropic SDK calling an OpenAI-kind model: the gateway translates Messages into
chat completions and the answer back, plain and streamed, with tools, tool results and
images; each answer checked field by field against what the fake OpenAI sent, each row
with its tokens, cost, latency, ttft and both dialects."""

from __future__ import annotations

import json
import uuid

import anthropic
import pytest

from tests.conftest import GatewayProcess
from tests.fakes import Behaviour

MODEL = "gpt-4o-mini"
# The tool call of OpenAI's documented function-calling example.
CALL = {"id": "call_12345xyz", "name": "get_weather", "arguments": '{"location":"Paris, France"}'}
TOOL = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}
USAGE = {"prompt_tokens": 20, "completion_tokens": 7, "cached_tokens": 4}


def _client(gateway: GatewayProcess, rid: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=gateway.url,
        api_key="client-key",
        default_headers={"X-Request-Id": rid},
        max_retries=0,
    )


def _row_checks(row: dict, stream: bool) -> None:
    assert row["provider"] == "openai" and row["provider_kind"] == "openai"
    assert row["client_api"] == "anthropic" and row["upstream_api"] == "openai"
    assert row["stream"] is stream and row["operation"] == "chat"
    assert row["input_tokens"] == 20 and row["output_tokens"] == 7
    assert row["cache_read_tokens"] == 4 and row["usage_estimated"] is False
    assert row["cost_usd"] is not None and row["cost_usd"] > 0
    assert row["latency_ms"] > 0
    assert (row["ttft_ms"] is not None) is stream


def test_plain_call_field_by_field(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(**USAGE)
    rid = uuid.uuid4().hex
    out = _client(gateway, rid).messages.create(
        model=MODEL,
        max_tokens=300,
        system="Be brief.",
        messages=[
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi!"}]},
            {"role": "user", "content": "How are you?"},
        ],
        stop_sequences=["END"],
        extra_body={"temperature": 0.2},  # not a named argument of the newest SDKs
        metadata={"user_id": "u-7"},
    )
    sent = fake.last_request
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-gw-secret-1"
    assert "x-api-key" not in sent.headers and "anthropic-version" not in sent.headers
    assert sent.json == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "How are you?"},
        ],
        "max_tokens": 300,
        "temperature": 0.2,
        "stop": ["END"],
        "user": "u-7",
    }
    assert out.type == "message" and out.role == "assistant"
    assert out.id.startswith("chatcmpl-") and out.model == MODEL + "-2024-08-06"
    assert [b.type for b in out.content] == ["text"]
    assert out.content[0].text == "Hello from the fake upstream!"
    assert out.stop_reason == "end_turn"
    assert out.usage.input_tokens == 16 and out.usage.output_tokens == 7
    assert out.usage.cache_read_input_tokens == 4
    row = gateway.call_row(rid)
    _row_checks(row, stream=False)
    assert row["response_id"] == out.id and row["finish_reason"] == "stop"


def test_streamed_call(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(**USAGE)
    rid = uuid.uuid4().hex
    with _client(gateway, rid).messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Hello"}]
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    sent = fake.last_request.json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_start" in events and "message_delta" in events
    assert final.content[0].text == "Hello from the fake upstream!"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 7 and final.usage.input_tokens == 16
    assert final.usage.cache_read_input_tokens == 4
    _row_checks(gateway.call_row(rid), stream=True)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call(gateway: GatewayProcess, fake, stream: bool):
    fake.behaviour = Behaviour(openai_tool_call=CALL, **USAGE)
    rid = uuid.uuid4().hex
    kw = {
        "model": MODEL,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [TOOL],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    }
    client = _client(gateway, rid)
    if stream:
        with client.messages.stream(**kw) as s:
            out = s.get_final_message()
    else:
        out = client.messages.create(**kw)
    sent = fake.last_request.json
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": TOOL["input_schema"],
                "description": TOOL["description"],
            },
        }
    ]
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False
    assert [b.type for b in out.content] == ["text", "tool_use"]
    assert out.content[0].text == "Hello from the fake upstream!"
    use = out.content[1]
    assert (use.id, use.name) == (CALL["id"], CALL["name"])
    assert use.input == json.loads(CALL["arguments"])
    assert out.stop_reason == "tool_use"
    row = gateway.call_row(rid)
    _row_checks(row, stream=stream)
    assert row["finish_reason"] == "tool_calls"


def test_tool_results_and_images(gateway: GatewayProcess, fake):
    rid = uuid.uuid4().hex
    out = _client(gateway, rid).messages.create(
        model=MODEL,
        max_tokens=100,
        tools=[TOOL],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image",
                     "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
                    {"type": "image", "source": {"type": "url", "url": "https://ex.com/a.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                     "input": {"location": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
    )  # fmt: skip
    assert out.content[0].text == "Hello from the fake upstream!"
    assert fake.last_request.json["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                {"type": "image_url", "image_url": {"url": "https://ex.com/a.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "toolu_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18 C"},
        {"role": "user", "content": "And tomorrow?"},
    ]  # fmt: skip
    assert gateway.call_row(rid)["status_code"] == 200


def test_what_cannot_be_carried_is_a_400_naming_it(gateway: GatewayProcess, fake):
    n_before = len(fake.requests)
    with pytest.raises(anthropic.BadRequestError) as e:
        _client(gateway, uuid.uuid4().hex).messages.create(
            model=MODEL,
            max_tokens=10,
            messages=[{"role": "user", "content": "x"}],
            extra_body={"top_k": 5},
        )
    assert e.value.status_code == 400 and "`top_k`" in str(e.value)
    assert len(fake.requests) == n_before


def test_upstream_error_in_the_clients_shape(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(status=401)
    rid = uuid.uuid4().hex
    with pytest.raises(anthropic.AuthenticationError) as e:
        _client(gateway, rid).messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    body = e.value.body
    assert body["type"] == "error"  # type: ignore[index]
    assert body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert gateway.call_row(rid)["status_code"] == 401


def test_native_anthropic_call_is_untouched(gateway: GatewayProcess, fake):
    rid = uuid.uuid4().hex
    out = _client(gateway, rid).messages.create(
        model="claude-sonnet-4-6",
        max_tokens=10,
        messages=[{"role": "user", "content": "x"}],
    )
    assert fake.last_request.path == "/v1/messages" and out.content[0].text
    row = gateway.call_row(rid)
    assert row["client_api"] == "anthropic" and row["upstream_api"] == "anthropic"


@pytest.mark.parametrize("stream", [False, True])
def test_no_usage_upstream_the_client_gets_the_recorded_estimate(
    gateway: GatewayProcess, stream: bool
):
    """An OpenAI-compatible server that sends no usage (and rejects stream_options): the
    gateway estimates the tokens, records them as estimated, and tells the Anthropic client
    the same figures, not zeros."""
    rid = uuid.uuid4().hex
    kw: dict = dict(
        model="llama-3-8b",
        max_tokens=100,
        messages=[{"role": "user", "content": "How long is a piece of string?"}],
    )
    if stream:
        with _client(gateway, rid).messages.stream(**kw) as s:
            start = next(e for e in s if e.type == "message_start")
            list(s)
            out = s.get_final_message()
        assert start.message.usage.input_tokens == out.usage.input_tokens  # known at start
    else:
        out = _client(gateway, rid).messages.create(**kw)
    row = gateway.call_row(rid)
    assert row["usage_estimated"] is True and row["upstream_api"] == "openai"
    assert row["input_tokens"] > 0 and row["output_tokens"] > 0
    assert (out.usage.input_tokens, out.usage.output_tokens) == (
        row["input_tokens"],
        row["output_tokens"],
    )
