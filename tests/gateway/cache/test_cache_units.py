"""The response cache's parts on their own: the per-call directives, the canonical key, the
in-process store, the config, pricing a hit's row, and the shapes a stored answer takes."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from gateway.cache.config import CacheConfig
from gateway.cache.directives import directive
from gateway.cache.entry import Entry, decode, encode
from gateway.cache.key import canonical, digest, sampled
from gateway.cache.memory import MemoryStore
from gateway.cache.shapes import SHAPES
from gateway.config import parse_config
from gateway.errors import ApiError, ConfigError
from gateway.providers.wire.sse import SSESplitter
from gateway.recording.pricing import ModelPrice, Pricer
from gateway.recording.record import CallRecord, encode_line
from gateway.recording.writer import price_line
from gateway.sections import read


# ------------------------------------------------------------------------- directives
@pytest.mark.parametrize(
    ("mode", "control", "lookup", "store", "forced"),
    [
        ("", "", True, True, False),
        ("on", "", True, True, True),
        ("ON ", "", True, True, True),  # as HTTP headers are: case and blanks do not matter
        ("off", "", False, False, False),
        ("refresh", "", False, True, True),
        ("read-only", "", True, False, True),
        ("", "no-cache", False, True, False),
        ("", "no-store", True, False, False),
        ("on", "no-cache, no-store", False, False, True),
        ("", "no-transform, private", True, True, False),  # others ignored, as caches do
    ],
)
def test_directives(mode: str, control: str, lookup: bool, store: bool, forced: bool):
    d = directive(mode, control)
    assert (d.lookup, d.store, d.forced, d.asked) == (lookup, store, forced, bool(mode))


def test_max_age_takes_the_smallest():
    assert directive("", "max-age=60, max-age=5").max_age == 5
    assert directive("", 'max-age="0"').max_age == 0
    assert directive("", "").max_age is None


@pytest.mark.parametrize(
    ("mode", "control", "named"),
    [
        ("yes", "", "X-Gateway-Cache"),
        ("", "max-age=soon", "max-age"),
        ("", "max-age=-1", "max-age"),
    ],
)
def test_a_directive_that_means_nothing_is_a_400(mode: str, control: str, named: str):
    with pytest.raises(ApiError) as e:
        directive(mode, control)
    assert e.value.status == 400 and e.value.code == "invalid_cache_directive"
    assert named in e.value.message


# ------------------------------------------------------------------------------- key
def test_canonical_form_ignores_order_whitespace_and_who_asks():
    a = json.loads('{"model": "m", "messages": [{"role": "user", "content": "hi"}], '
                   '"temperature": 0.0, "user": "alice", "stream": true}')  # fmt: skip
    b = msgspec.json.decode(
        b'{"stream_options":{"include_usage":true},"temperature":0,"messages":[{"content":"hi",'
        b'"role":"user"}],"model":"m","metadata":{"x":"y"},"safety_identifier":"s"}'
    )
    assert canonical(a, "openai") == canonical(b, "openai")
    assert canonical({**a, "temperature": 0.5}, "openai") != canonical(a, "openai")
    assert canonical({**a, "seed": 1}, "openai") != canonical(a, "openai")
    # A nested number is as sent: tools' JSON schemas are the client's business.
    assert canonical({**a, "tools": [{"x": 1.0}]}, "openai") != canonical(
        {**a, "tools": [{"x": 1}]}, "openai"
    )


def test_anthropic_text_content_is_one_form():
    short = {"model": "c", "messages": [{"role": "user", "content": "hi"}]}
    block = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    blocks = {"model": "c", "messages": [block]}
    assert canonical(short, "anthropic") == canonical(blocks, "anthropic")
    assert canonical(short, "openai") != canonical(blocks, "openai")


def test_sampled_calls():
    assert sampled("chat", {}) and sampled("chat", {"temperature": 0.7})
    assert not sampled("chat", {"temperature": 0}) and not sampled("chat", {"temperature": 0.0})
    assert not sampled("embeddings", {}) and sampled("chat", {"temperature": "0"})


def test_digest_parts_do_not_run_together():
    assert digest(b"ab", b"c") != digest(b"a", b"bc")
    assert len(digest(b"x")) == 40


# ------------------------------------------------------------------------------ store
def entry(n: int, at: float = 0.0, ttl: float = 100.0) -> Entry:
    return Entry(at, at + ttl, False, "application/json", [b"x" * n])


def test_memory_store_evicts_least_recently_used_by_bytes():
    size = entry(1000).size
    m = MemoryStore(3 * size)
    for k in "abc":
        m.put(k, entry(1000), 100.0)
    assert m.get("a", 1.0) is not None  # a is now the most recent
    m.put("d", entry(1000), 100.0)
    assert m.get("b", 1.0) is None and {k for k in "acd" if m.get(k, 1.0)} == set("acd")
    assert m.bytes == 3 * size and len(m) == 3
    m.put("big", entry(4 * 1000), 100.0)  # larger than the whole store: not kept
    assert m.get("big", 1.0) is None and m.bytes == 3 * size
    m.put("a", entry(10), 100.0)  # replaced: its bytes counted once
    assert m.bytes == 2 * size + entry(10).size


def test_memory_store_forgets_what_expired():
    m = MemoryStore(10_000)
    m.put("a", entry(10), 50.0)
    assert m.get("a", 49.9) is not None and m.get("a", 50.0) is None
    assert m.bytes == 0 and len(m) == 0


def test_entries_round_trip_and_foreign_bytes_are_none():
    e = Entry(1.5, 2.5, True, "text/event-stream", [b"data: 1\n\n", b"data: [DONE]\n\n"])
    assert decode(encode(e)) == e
    assert decode(b"\x93not an entry") is None and decode(b"") is None


# ----------------------------------------------------------------------------- config
def test_overrides_app_over_route_over_defaults():
    cfg = read(
        {"enabled": False, "ttl_s": 60, "routes": {"gpt-*": {"enabled": True, "ttl_s": 10}},
         "apps": {"search": {"scope": "app", "ttl_s": 5}, "off": {"enabled": False}}},
        CacheConfig,
    )  # fmt: skip
    assert cfg.settings("other", "x").enabled is False
    s = cfg.settings("gpt-*", "x")
    assert (s.enabled, s.ttl_s, s.scope) == (True, 10, "key")
    s = cfg.settings("gpt-*", "search")
    assert (s.enabled, s.ttl_s, s.scope) == (True, 5, "app")
    assert cfg.settings("gpt-*", "off").enabled is False


@pytest.mark.parametrize(
    ("cache", "key"),
    [
        ({"scope": "team"}, "cache.scope"),
        ({"ttl_s": 0}, "cache.ttl_s"),
        ({"redis_url": "localhost:6379"}, "cache.redis_url"),
        ({"routes": {"gpt*": {}}}, "cache.routes.gpt*"),  # no route matches "gpt*"
        ({"apps": {"a": {"scope": "all"}}}, "cache.apps.a.scope"),
        ({"enable": True}, "cache.enable"),
    ],
)
def test_bad_cache_config_names_the_key(cache: dict[str, Any], key: str):
    cfg = {"providers": {"o": {"kind": "openai", "api_key": "x"}},
           "routes": [{"match": "gpt-*", "provider": "o"}], "cache": cache}  # fmt: skip
    with pytest.raises(ConfigError) as e:
        parse_config(cfg, {})
    assert e.value.key == key, e.value


# ---------------------------------------------------------------------------- pricing
def test_a_hit_costs_nothing_and_saves_its_price():
    pricer = Pricer({"my-llama": ModelPrice(input=1.0, output=2.0)})
    hit = CallRecord(request_id="h", provider="p", request_model="my-llama", cache_status="hit",
                     input_tokens=1_000_000, output_tokens=500_000, cost_saved_usd=None,
                     properties={"price_source": "", "cost_saved_usd": "x"})  # fmt: skip
    priced, view, known = price_line(pricer, {}, encode_line(hit))
    out = json.loads(priced)
    assert known and (out["cost_usd"], out["cost_saved_usd"]) == (0.0, 2.0)
    assert (view.cost_usd, view.cost_saved_usd) == (0.0, 2.0)
    assert out["price_source"] == "config"
    assert out["properties"] == {"price_source": "", "cost_saved_usd": "x"}
    # A miss pays and saves nothing; a hit of a model without a price saves what is unknown.
    miss = CallRecord(request_id="m", provider="p", request_model="my-llama", cache_status="miss",
                      input_tokens=1_000_000, output_tokens=500_000)  # fmt: skip
    out = json.loads(price_line(pricer, {}, encode_line(miss))[0])
    assert (out["cost_usd"], out["cost_saved_usd"]) == (2.0, 0.0)
    unknown = CallRecord(request_id="u", request_model="nobody-knows", cache_status="hit",
                         input_tokens=10, cost_saved_usd=None)  # fmt: skip
    priced, view, known = price_line(pricer, {}, encode_line(unknown))
    out = json.loads(priced)
    assert not known and (out["cost_usd"], out["cost_saved_usd"]) == (0.0, None)


# ----------------------------------------------------------------------------- shapes
def events(sse: bytes) -> list[tuple[str, bytes]]:
    return [(ev.event, ev.data) for ev in SSESplitter().feed(sse)]


CHAT = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "gpt-4o",
    "system_fingerprint": "fp", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": None, "refusal": None,
                                 "tool_calls": [{"id": "c1", "type": "function",
                                                 "function": {"name": "f", "arguments": "{}"}}]},
         "logprobs": None, "finish_reason": "tool_calls"},
        {"index": 1, "message": {"role": "assistant", "content": "two", "refusal": None},
         "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
}  # fmt: skip
COMPLETION = {
    "id": "cmpl-1", "object": "text_completion", "created": 7, "model": "gpt-3.5-turbo-instruct",
    "choices": [{"index": 0, "text": "hello", "logprobs": None, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
}  # fmt: skip
MESSAGE = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
    "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "hi"},
                {"type": "tool_use", "id": "tu", "name": "f", "input": {"a": [1, 2]}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 5, "cache_read_input_tokens": 2, "output_tokens": 9},
}  # fmt: skip
RESPONSE = {
    "id": "resp_1", "object": "response", "status": "completed", "model": "gpt-4o",
    "output": [{"type": "message", "id": "m1", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": "hi", "annotations": []}]},
               {"type": "function_call", "id": "fc1", "call_id": "c", "name": "f",
                "arguments": "{\"x\":1}", "status": "completed"}],
    "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
}  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION),
     ("/v1/messages", MESSAGE), ("/v1/responses", RESPONSE)],
)  # fmt: skip
def test_a_body_told_as_a_stream_gathers_back_to_itself(path: str, body: dict[str, Any]):
    shape = SHAPES[path]
    sse = shape.to_stream(body, True)
    assert shape.to_body(events(sse)) == body


def test_the_usage_chunk_only_when_asked():
    shape = SHAPES["/v1/chat/completions"]
    without = events(shape.to_stream(CHAT, False))
    assert without[-1][1] == b"[DONE]"
    assert all(b'"usage"' not in data for _, data in without)
    assert "usage" not in shape.to_body(without)  # type: ignore[operator]
    assert json.loads(events(shape.to_stream(CHAT, True))[-2][1])["choices"] == []


def test_a_stream_without_choices_gathers_to_nothing():
    assert SHAPES["/v1/chat/completions"].to_body(events(b"data: [DONE]\n\n")) is None
    assert SHAPES["/v1/responses"].to_body([]) is None
    assert SHAPES["/v1/messages"].to_body([]) is None
