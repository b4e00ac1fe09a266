"""The OpenAI SDK calling a Claude model: the gateway translates chat completions into
Anthropic Messages and the answer back, plain and streamed, with tools, tool results and
images; each answer is checked field by field against what the fake Anthropic sent, and
each row has its tokens, cost, latency, ttft and both dialects."""

from __future__ import annotations

import json
import uuid

import openai
import pytest

from tests.conftest import GatewayProcess
from tests.fakes import Behaviour

MODEL = "claude-3-5-sonnet-20241022"
# The tool call of Anthropic's documented tool-use example.
WEATHER = {
    "id": "toolu_01A09q90qw90lq917835lq9",
    "name": "get_weather",
    "input": {"location": "San Francisco, CA", "unit": "celsius"},
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["location"],
        },
    },
}
USAGE = Behaviour(prompt_tokens=20, completion_tokens=7, cached_tokens=3, cache_write_tokens=2)


def _client(gateway: GatewayProcess, rid: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key="client-key",
        default_headers={"X-Request-Id": rid},
        max_retries=0,
    )


def _row_checks(row: dict, stream: bool) -> None:
    assert row["provider"] == "anthropic" and row["provider_kind"] == "anthropic"
    assert row["client_api"] == "openai" and row["upstream_api"] == "anthropic"
    assert row["operation"] == "chat" and row["stream"] is stream
    assert row["input_tokens"] == 25 and row["output_tokens"] == 7
    assert row["cache_read_tokens"] == 3 and row["cache_write_tokens"] == 2
    assert row["usage_estimated"] is False
    assert row["cost_usd"] is not None and row["cost_usd"] > 0
    assert row["latency_ms"] > 0
    assert (row["ttft_ms"] is not None) is stream


def test_plain_call_field_by_field(gateway: GatewayProcess, fake):
    fake.behaviour = USAGE
    rid = uuid.uuid4().hex
    out = _client(gateway, rid).chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
        ],
        stop=["END"],
        temperature=0.5,
        user="u-42",
        seed=7,  # dropped: the provider's drop_params lists it
    )
    sent = fake.last_request
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "ant-secret-3"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.json == {
        "model": MODEL,
        "max_tokens": 4096,  # the provider's default: Anthropic requires one
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi!"}]},
            {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
        ],
        "system": "Be brief.",
        "temperature": 0.5,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-42"},
    }
    assert out.object == "chat.completion"
    assert out.id.startswith("msg_") and out.model == MODEL + "-2024-08-06"
    choice = out.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello from the fake upstream!"
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (25, 7)
    assert out.usage.total_tokens == 32
    assert out.usage.prompt_tokens_details.cached_tokens == 3
    row = gateway.call_row(rid)
    _row_checks(row, stream=False)
    assert row["response_id"] == out.id and row["finish_reason"] == "stop"


def test_streamed_call_with_usage(gateway: GatewayProcess, fake):
    fake.behaviour = USAGE
    rid = uuid.uuid4().hex
    chunks = list(
        _client(gateway, rid).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=100,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert fake.last_request.json["stream"] is True
    assert fake.last_request.json["max_tokens"] == 100
    assert "stream_options" not in fake.last_request.json
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("msg_")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream!"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and not any(finishes[:-1])
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (25, 7)
    assert last.usage.prompt_tokens_details.cached_tokens == 3
    _row_checks(gateway.call_row(rid), stream=True)


def test_stream_without_include_usage_has_no_usage_chunk(gateway: GatewayProcess, fake):
    rid = uuid.uuid4().hex
    chunks = list(
        _client(gateway, rid).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello"}], stream=True
        )
    )
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    row = gateway.call_row(rid)
    assert row["output_tokens"] > 0 and row["usage_estimated"] is False


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call(gateway: GatewayProcess, fake, stream: bool):
    fake.behaviour = Behaviour(anthropic_tool_use=WEATHER, **_usage_kw())
    rid = uuid.uuid4().hex
    kw = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Weather in SF?"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    client = _client(gateway, rid)
    if not stream:
        out = client.chat.completions.create(**kw)
        msg, finish = out.choices[0].message, out.choices[0].finish_reason
        text, calls = (
            msg.content,
            [(c.id, c.function.name, c.function.arguments) for c in msg.tool_calls],
        )
    else:
        chunks = list(client.chat.completions.create(**kw, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        by_index: dict[int, list] = {}
        for c in chunks:
            for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
                slot = by_index.setdefault(tc.index, [None, None, ""])
                if tc.id:
                    slot[0], slot[1] = tc.id, tc.function.name
                slot[2] += tc.function.arguments or ""
        calls = [tuple(v) for _, v in sorted(by_index.items())]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    sent = fake.last_request.json
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
            "description": "Get the current weather in a given location",
        }
    ]
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert text == "Hello from the fake upstream!"
    assert len(calls) == 1
    assert calls[0][:2] == (WEATHER["id"], "get_weather")
    assert json.loads(calls[0][2]) == WEATHER["input"]
    assert finish == "tool_calls"
    row = gateway.call_row(rid)
    _row_checks(row, stream=stream)
    assert row["finish_reason"] == "tool_calls"


def _usage_kw() -> dict:
    return {
        "prompt_tokens": 20,
        "completion_tokens": 7,
        "cached_tokens": 3,
        "cache_write_tokens": 2,
    }


def test_tool_results_and_images(gateway: GatewayProcess, fake):
    rid = uuid.uuid4().hex
    png = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5E"
        "rkJggg=="
    )
    out = _client(gateway, rid).chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": WEATHER["id"],
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "SF"}'},
                    },
                    {
                        "id": "toolu_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "LA"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": WEATHER["id"], "content": "15 degrees"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "25 degrees"},
        ],
        tools=[WEATHER_TOOL],
    )
    assert out.choices[0].message.content == "Hello from the fake upstream!"
    assert fake.last_request.json["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": png},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": WEATHER["id"], "name": "get_weather",
                 "input": {"location": "SF"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather",
                 "input": {"location": "LA"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": WEATHER["id"], "content": "15 degrees"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "25 degrees"},
            ],
        },
    ]  # fmt: skip
    assert gateway.call_row(rid)["turn_index"] == 1


def test_json_mode_is_an_instruction(gateway: GatewayProcess, fake):
    _client(gateway, uuid.uuid4().hex).chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "developer", "content": "You list fruit."},
            {"role": "user", "content": "3"},
        ],
        response_format={"type": "json_object"},
    )
    assert fake.last_request.json["system"] == (
        "You list fruit.\n\nRespond with a single valid JSON object and nothing else."
    )


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"temperature": 1.5}, "temperature"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
         "response_format"),
    ],
)  # fmt: skip
def test_what_cannot_be_carried_is_a_400_naming_it(gateway: GatewayProcess, fake, extra, param):
    rid = uuid.uuid4().hex
    n_before = len(fake.requests)
    with pytest.raises(openai.BadRequestError) as e:
        _client(gateway, rid).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], **extra
        )
    err = e.value.body
    assert err["param"] == param and err["code"] == "unsupported_parameter"  # type: ignore[index]
    assert param in err["message"]  # type: ignore[index]
    assert len(fake.requests) == n_before  # nothing went upstream
    row = gateway.call_row(rid)
    assert row["status_code"] == 400 and row["outcome"] == "rejected"


def test_upstream_error_in_the_clients_shape(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(status=400, error_body={
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: too large"},
    })  # fmt: skip
    rid = uuid.uuid4().hex
    with pytest.raises(openai.BadRequestError) as e:
        _client(gateway, rid).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.body == {
        "message": "max_tokens: too large",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_request_error",
    }
    row = gateway.call_row(rid)
    assert row["status_code"] == 400 and row["error_type"] == "invalid_request_error"


def test_stream_error_event_in_the_clients_shape(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(stream_error_after_chunks=3)
    rid = uuid.uuid4().hex
    with pytest.raises(openai.APIError) as e:
        list(
            _client(gateway, rid).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
            )
        )
    assert "Overloaded" in str(e.value)
    row = gateway.call_row(rid)
    assert row["outcome"] == "upstream_error" and row["error_type"] == "overloaded_error"
