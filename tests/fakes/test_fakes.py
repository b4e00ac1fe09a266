"""The official SDKs, pointed straight at tests/fakes/, parse what the fakes answer."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tests.fakes import Behaviour, FakeUpstream

MSGS: list[dict[str, str]] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi"},
]
TEXT = "Hello from the fake upstream!"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


@pytest.fixture(autouse=True)
def _reset(fake: FakeUpstream) -> None:
    fake.reset()


@pytest.fixture
def oai(fake: FakeUpstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0)


@pytest.fixture
def ant(fake: FakeUpstream) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.url, api_key="x", max_retries=0)


def test_chat_non_stream(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.behaviour = Behaviour(cached_tokens=4, reasoning_tokens=2)
    r = oai.chat.completions.create(model="gpt-4o", messages=MSGS)  # type: ignore[arg-type]
    assert r.model == "gpt-4o-2024-08-06" and r.system_fingerprint == "fp_fake1"
    assert r.choices[0].message.content == TEXT and r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (24, 7, 31)
    assert r.usage.prompt_tokens_details and r.usage.prompt_tokens_details.cached_tokens == 4
    assert r.usage.completion_tokens_details
    assert r.usage.completion_tokens_details.reasoning_tokens == 2
    req = fake.last_request
    assert req.path == "/v1/chat/completions" and req.json["model"] == "gpt-4o"
    assert req.headers["authorization"] == "Bearer x"


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream(oai: openai.OpenAI, include_usage: bool) -> None:
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o",
            messages=MSGS,  # type: ignore[arg-type]
            stream=True,
            **extra,  # type: ignore[arg-type]
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == TEXT
    assert chunks[0].choices[0].delta.role == "assistant"
    usage = [c.usage for c in chunks if c.usage]
    if include_usage:
        assert chunks[-1].choices == [] and len(usage) == 1
        assert (usage[0].prompt_tokens, usage[0].completion_tokens) == (20, 5)
    else:
        assert usage == []


def test_chat_stream_abort(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.behaviour = Behaviour(abort_after_chunks=2)
    seen: list[str] = []
    with pytest.raises((httpx.HTTPError, openai.APIError)):
        for c in oai.chat.completions.create(model="m", messages=MSGS, stream=True):  # type: ignore[arg-type]
            seen.append(c.choices[0].delta.content or "")
    assert len(seen) == 2


def test_errors_and_fail_times(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.behaviour = Behaviour(fail_times=1, fail_status=503)
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="m", messages=MSGS)  # type: ignore[arg-type]
    assert oai.chat.completions.create(model="m", messages=MSGS).choices  # type: ignore[arg-type]
    fake.behaviour = Behaviour(status=429)
    with pytest.raises(openai.RateLimitError) as ei:
        oai.chat.completions.create(model="m", messages=MSGS)  # type: ignore[arg-type]
    assert ei.value.type == "rate_limit_exceeded"
    fake.behaviour = Behaviour(reject_stream_options=True)
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(
            model="m",
            messages=MSGS,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    fake.behaviour = Behaviour(stream_error_after_chunks=3)
    with pytest.raises(openai.APIError):
        list(oai.chat.completions.create(model="m", messages=MSGS, stream=True))  # type: ignore[arg-type]


def test_completions_embeddings_models(oai: openai.OpenAI) -> None:
    c = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi")
    assert c.choices[0].text == TEXT and c.usage and c.usage.prompt_tokens == 10
    chunks = list(
        oai.completions.create(
            model="m", prompt="hi", stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == TEXT
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens == 5
    e = oai.embeddings.create(model="text-embedding-3-small", input=["a", "b"])  # base64
    assert len(e.data) == 2 and len(e.data[1].embedding) == 8
    assert e.usage.prompt_tokens == 20
    f = oai.embeddings.create(model="m", input="a", encoding_format="float", dimensions=4)
    assert len(f.data[0].embedding) == 4
    assert "gpt-4o" in [m.id for m in oai.models.list()]


def test_responses(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.behaviour = Behaviour(cached_tokens=3)
    r = oai.responses.create(model="gpt-4o", input="hi", instructions="be brief")
    assert r.output_text == TEXT and r.status == "completed" and r.usage
    assert (r.usage.input_tokens, r.usage.output_tokens) == (23, 5)
    assert r.usage.input_tokens_details.cached_tokens == 3
    events = list(oai.responses.create(model="gpt-4o", input="hi", stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == TEXT
    last = events[-1]
    assert last.type == "response.completed" and last.response.usage
    assert last.response.usage.total_tokens == 18
    with oai.responses.stream(model="gpt-4o", input="hi") as s:
        assert s.get_final_response().output_text == TEXT


def test_azure(fake: FakeUpstream) -> None:
    az = openai.AzureOpenAI(
        azure_endpoint=fake.url, api_key="x", api_version="2024-10-21", max_retries=0
    )
    fake.behaviour = Behaviour(finish_reason="content_filter")
    r = az.chat.completions.create(model="my-dep", messages=MSGS)  # type: ignore[arg-type]
    assert r.choices[0].finish_reason == "content_filter"
    assert fake.last_request.deployment == "my-dep"
    assert fake.last_request.query["api-version"] == "2024-10-21"
    chunks = list(az.chat.completions.create(model="my-dep", messages=MSGS, stream=True))  # type: ignore[arg-type]
    assert chunks[0].choices == []
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT


def test_anthropic(fake: FakeUpstream, ant: anthropic.Anthropic) -> None:
    fake.behaviour = Behaviour(cached_tokens=7, cache_write_tokens=5)
    kw = {"model": "claude-x", "max_tokens": 50, "system": "be brief"}
    m = ant.messages.create(messages=[{"role": "user", "content": "hi"}], **kw)  # type: ignore[arg-type]
    assert m.content[0].type == "text" and m.content[0].text == TEXT
    assert m.stop_reason == "end_turn"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (20, 5)
    assert (m.usage.cache_read_input_tokens, m.usage.cache_creation_input_tokens) == (7, 5)
    with ant.messages.stream(messages=[{"role": "user", "content": "hi"}], **kw) as s:  # type: ignore[arg-type]
        assert "".join(s.text_stream) == TEXT
        final = s.get_final_message()
    assert final.usage.output_tokens == 5 and final.stop_reason == "end_turn"
    assert "anthropic-version" in fake.last_request.headers

    fake.behaviour = Behaviour(stream_error_after_chunks=4)
    msgs = [{"role": "user", "content": "hi"}]
    with (
        pytest.raises(anthropic.APIStatusError) as ei,
        ant.messages.stream(messages=msgs, **kw) as s,  # type: ignore[arg-type]
    ):
        list(s.text_stream)
    assert "Overloaded" in str(ei.value)

    fake.behaviour = Behaviour(status=529)
    with pytest.raises(anthropic.APIStatusError) as ei2:
        ant.messages.create(messages=[{"role": "user", "content": "hi"}], **kw)  # type: ignore[arg-type]
    assert ei2.value.status_code == 529
    assert ei2.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Fake upstream error (HTTP 529)"},
    }

    fake.behaviour = Behaviour(abort_after_chunks=3)
    # anthropic may ship its own httpx fork (httpx2), so match the error by name
    with (
        pytest.raises(Exception) as ei3,
        ant.messages.stream(messages=msgs, **kw) as s,  # type: ignore[arg-type]
    ):
        list(s.text_stream)
    assert type(ei3.value).__name__ in ("RemoteProtocolError", "APIConnectionError")


async def test_async_clients_and_echo(fake: FakeUpstream) -> None:
    fake.behaviour = Behaviour(chunk_delay=0.01, first_byte_delay=0.05)
    client = openai.AsyncOpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0)
    stream = await client.chat.completions.create(model="m", messages=MSGS, stream=True)  # type: ignore[arg-type]
    assert "".join([c.choices[0].delta.content or "" async for c in stream]) == TEXT
    await client.close()
    async with httpx.AsyncClient() as h:
        r = await h.get(fake.url + "/some/other/path?x=1")
    assert r.json() == {"echo": "/some/other/path"}
