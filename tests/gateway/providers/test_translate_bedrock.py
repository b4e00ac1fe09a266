"""The OpenAI SDK calling a model on AWS Bedrock: chat completions translated into
Converse (ConverseStream when streamed, in the AWS event-stream framing), signed with SigV4
by botocore from the environment's credentials; answers checked field by field against
what the fake Bedrock sent, rows with tokens, cost, latency and ttft."""

from __future__ import annotations

import json
import uuid

import openai
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.errors import MalformedStream
from gateway.providers.wire.converse import EventStreamSplitter
from tests.conftest import AWS_ENV, GatewayProcess
from tests.fakes import Behaviour, RecordedRequest
from tests.fakes import bedrock as fake_bedrock

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
TOOL_USE = {"id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song", "input": {"sign": "WZPZ"}}
TOOL = {
    "type": "function",
    "function": {
        "name": "top_song",
        "description": "Get the most popular song played on a radio station.",
        "parameters": {
            "type": "object",
            "properties": {"sign": {"type": "string"}},
            "required": ["sign"],
        },
    },
}


def _client(gateway: GatewayProcess, rid: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key="unused",
        default_headers={"X-Request-Id": rid},
        max_retries=0,
    )


def _check_signature(sent: RecordedRequest, fake_url: str) -> None:
    """Recompute the SigV4 signature over what the fake received."""
    auth = sent.headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-west-2/bedrock/aws4_request" in auth
    assert sent.headers["x-amz-security-token"] == AWS_ENV["AWS_SESSION_TOKEN"]
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    creds = Credentials(AWS_ENV["AWS_ACCESS_KEY_ID"], AWS_ENV["AWS_SECRET_ACCESS_KEY"],
                        AWS_ENV["AWS_SESSION_TOKEN"])  # fmt: skip
    # The path as sent (the model id's ":" percent-encoded), as SigV4 canonicalises it.
    url = fake_url + sent.raw_path
    req = AWSRequest(sent.method, url, data=sent.body, headers={h: sent.headers[h] for h in signed})
    signer = SigV4Auth(creds, "bedrock", "us-west-2")
    req.context["timestamp"] = sent.headers["x-amz-date"]
    expected = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
    assert auth.endswith("Signature=" + expected)


def _row_checks(row: dict, stream: bool) -> None:
    assert row["provider"] == "bedrock" and row["provider_kind"] == "bedrock"
    assert row["client_api"] == "openai" and row["upstream_api"] == "bedrock"
    assert row["input_tokens"] == 25 and row["output_tokens"] == 7
    assert row["cache_read_tokens"] == 3 and row["cache_write_tokens"] == 2
    assert row["usage_estimated"] is False and row["stream"] is stream
    assert row["cost_usd"] is not None and row["cost_usd"] > 0
    assert row["latency_ms"] > 0 and (row["ttft_ms"] is not None) is stream


USAGE = {"prompt_tokens": 20, "completion_tokens": 7, "cached_tokens": 3, "cache_write_tokens": 2}


def test_converse_plain_signed(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(**USAGE)
    rid = uuid.uuid4().hex
    out = _client(gateway, rid).chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
        ],
        max_tokens=200,
        stop="END",
    )
    sent = fake.last_request
    assert sent.path == f"/model/{MODEL}/converse"
    _check_signature(sent, fake.url)
    assert sent.json == {
        "messages": [{"role": "user", "content": [{"text": "Hello"}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 200, "stopSequences": ["END"]},
    }
    assert out.choices[0].message.content == "Hello from the fake upstream!"
    assert out.choices[0].finish_reason == "stop"
    assert out.model == MODEL and out.id.startswith("chatcmpl-")
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (25, 7)
    assert out.usage.prompt_tokens_details.cached_tokens == 3
    _row_checks(gateway.call_row(rid), stream=False)


def test_converse_stream_with_tool_call(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(anthropic_tool_use=TOOL_USE, **USAGE)
    rid = uuid.uuid4().hex
    chunks = list(
        _client(gateway, rid).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "What is the top song on WZPZ?"}],
            tools=[TOOL],
            tool_choice={"type": "function", "function": {"name": "top_song"}},
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    sent = fake.last_request
    assert sent.path == f"/model/{MODEL}/converse-stream"
    _check_signature(sent, fake.url)
    assert sent.json["toolConfig"] == {
        "tools": [{"toolSpec": {"name": "top_song",
                                "description": TOOL["function"]["description"],
                                "inputSchema": {"json": TOOL["function"]["parameters"]}}}],
        "toolChoice": {"tool": {"name": "top_song"}},
    }  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream!"
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].id == TOOL_USE["id"] and calls[0].function.name == "top_song"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == TOOL_USE["input"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage.prompt_tokens == 25 and chunks[-1].usage.completion_tokens == 7
    row = gateway.call_row(rid)
    _row_checks(row, stream=True)
    assert row["finish_reason"] == "tool_calls"


def test_converse_errors_in_the_clients_shape(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(status=400)
    with pytest.raises(openai.BadRequestError) as e:
        _client(gateway, uuid.uuid4().hex).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.body["message"] == "Fake Bedrock error (HTTP 400)"  # type: ignore[index]
    # An http image URL cannot be carried: Converse takes bytes only.
    with pytest.raises(openai.BadRequestError) as e:
        _client(gateway, uuid.uuid4().hex).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://ex.com/a.png"}}]}],
        )  # fmt: skip
    assert e.value.body["code"] == "unsupported_parameter"  # type: ignore[index]


def test_converse_stream_exception_frame(gateway: GatewayProcess, fake):
    fake.behaviour = Behaviour(stream_error_after_chunks=3)
    rid = uuid.uuid4().hex
    with pytest.raises(openai.APIError) as e:
        list(_client(gateway, rid).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True))  # fmt: skip
    assert "Too many requests" in str(e.value)
    row = gateway.call_row(rid)
    assert row["outcome"] == "upstream_error" and row["error_type"] == "throttlingException"


def test_event_stream_decoder_checks_crcs_and_joins_pieces():
    frames = fake_bedrock.event("messageStart", {"role": "assistant"}) + fake_bedrock.event(
        "metadata", {"usage": {"inputTokens": 1}}
    )
    splitter = EventStreamSplitter()
    got = [ev for i in range(0, len(frames), 5) for ev in splitter.feed(frames[i : i + 5])]
    assert [ev.event for ev in got] == ["messageStart", "metadata"]
    assert json.loads(got[1].data)["usage"] == {"inputTokens": 1}
    broken = bytearray(frames)
    broken[20] ^= 1
    with pytest.raises(MalformedStream):
        list(EventStreamSplitter().feed(bytes(broken)))
