"""Unit tests of the pieces of the request path: SSE splitting, observers, pricing, ids."""

from __future__ import annotations

import json
import os
import random
import uuid

import pytest
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import get_snapshot

from gateway.providers.wire import AnthropicObserver, ChatObserver, ResponsesObserver
from gateway.providers.wire.sse import SSESplitter
from gateway.recording.ids import new_request_id, valid_client_id
from gateway.recording.pricing import PRICE_SOURCE_CONFIG, ModelPrice, Pricer, Tokens
from gateway.recording.record import CallRecord, encode_line
from gateway.recording.tokens import estimate_input
from gateway.recording.writer import price_line

STREAM = (
    b'data: {"id":"c1","model":"m-1","choices":[{"delta":{"content":"He"}}],"usage":null}\n\n'
    b": keep-alive\n\n"
    b'data: {"id":"c1","model":"m-1","choices":[{"delta":{"content":"llo"},'
    b'"finish_reason":"length"}],"usage":null}\n\n'
    b'data: {"id":"c1","model":"m-1","choices":[],"usage":{"prompt_tokens":9,'
    b'"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4}}}\n\n'
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("crlf", [False, True])
def test_sse_splitter_any_chunking(crlf: bool):
    data = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    rng = random.Random(7)
    for _ in range(50):
        s = SSESplitter()
        events = []
        i = 0
        while i < len(data):
            n = rng.randint(1, 40)
            events += list(s.feed(data[i : i + n]))
            i += n
        assert s.flush() is None
        datas = [e.data for e in events]
        assert datas[1] == b"" and datas[-1] == b"[DONE]" and len(events) == 5
        assert b"".join(e.raw for e in events) == STREAM


def test_sse_unterminated_tail_and_event_names():
    s = SSESplitter()
    evs = list(s.feed(b'event: message_start\ndata: {"a":1}\n\nevent: ping\ndata: {}'))
    assert [(e.event, e.data) for e in evs] == [("message_start", b'{"a":1}')]
    tail = s.flush()
    assert tail is not None and tail.event == "ping"


def _feed(obs, data: bytes) -> bytes:
    out = b""
    for ev in SSESplitter().feed(data):
        if not obs.event(ev.event, ev.data):
            out += ev.raw
    return out


def test_chat_observer_hides_only_the_injected_usage_chunk():
    rec = CallRecord(request_id="r")
    out = _feed(ChatObserver(rec, drop_usage_chunk=True), STREAM)
    assert b'"choices":[]' not in out and out.endswith(b"data: [DONE]\n\n")
    assert (rec.input_tokens, rec.output_tokens, rec.cache_read_tokens) == (9, 2, 4)
    assert rec.finish_reason == "length" and rec.response_model == "m-1"
    rec2 = CallRecord(request_id="r")
    assert _feed(ChatObserver(rec2, drop_usage_chunk=False), STREAM) == STREAM


def test_chat_observer_keeps_azure_prompt_filter_chunk():
    azure_first = b'data: {"choices":[],"prompt_filter_results":[{"prompt_index":0}]}\n\n'
    rec = CallRecord(request_id="r")
    assert _feed(ChatObserver(rec, drop_usage_chunk=True), azure_first) == azure_first


def test_anthropic_observer_stream_usage():
    rec = CallRecord(request_id="r")
    obs = AnthropicObserver(rec)
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x",
          "usage": {"input_tokens": 10, "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 5, "output_tokens": 1}}}),
        ("content_block_delta", {"type": "content_block_delta",
                                 "delta": {"type": "text_delta", "text": "hey"}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"},
                           "usage": {"output_tokens": 42}}),
    ]  # fmt: skip
    for name, obj in events:
        obs.event(name, json.dumps(obj).encode())
    assert (rec.input_tokens, rec.output_tokens) == (115, 42)
    assert (rec.cache_read_tokens, rec.cache_write_tokens) == (100, 5)
    assert rec.finish_reason == "length" and obs.content_seen


def test_responses_observer_incomplete():
    rec = CallRecord(request_id="r")
    ResponsesObserver(rec).body({"id": "resp_1", "model": "gpt-x", "status": "incomplete",
                                 "incomplete_details": {"reason": "max_output_tokens"},
                                 "usage": {"input_tokens": 3, "output_tokens": 7}})  # fmt: skip
    assert rec.finish_reason == "length" and rec.output_tokens == 7


def test_estimate_input():
    assert estimate_input({"messages": [{"role": "user", "content": "abcdefgh"}]}) == 4 + 2
    assert estimate_input({"input": [[1, 2, 3], [4]]}) == 4
    assert estimate_input({"prompt": "x" * 40}) == 10
    # A client's body can hold anything where a list belongs: no error, nothing counted.
    for odd in (1.5, 7, True, "text", {"role": "user"}):
        assert estimate_input({"messages": odd, "prompt": "x" * 40}) == 10
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "abcd"}]}]}
    assert estimate_input(parts) == 5


def _models_sample() -> list[tuple[str, str]]:
    out = []
    for provider in get_snapshot().providers:
        if provider.id in ("openai", "anthropic", "google", "groq", "mistral", "azure"):
            out += [(provider.id, m.id) for m in provider.models[:15]]
    return out


@pytest.mark.parametrize(("provider", "model"), _models_sample())
def test_fast_pricing_matches_genai_prices(provider: str, model: str):
    pricer = Pricer()
    rng = random.Random(hash(model) & 0xFFFF)
    for _ in range(3):
        inp = rng.randint(0, 400_000)
        t = Tokens(inp, rng.randint(0, 50_000), rng.randint(0, inp // 2), 0)
        try:
            ref = float(calc_price(Usage(input_tokens=t.input, output_tokens=t.output,
                                         cache_read_tokens=t.cache_read),
                                   model, provider_id=provider).total_price)  # fmt: skip
        except Exception:
            ref = None
        got, source = pricer.price(provider, (model,), t)
        if ref is None:
            continue  # genai-prices cannot price it either (e.g. needs other units)
        assert got == pytest.approx(ref, rel=1e-9, abs=1e-12), (provider, model, t)
        assert source == "genai-prices"


def test_price_overrides_and_unknown():
    pricer = Pricer({"my-llama": ModelPrice(input=1.0, output=2.0, cache_read=0.5)})
    cost, source = pricer.price("", ("", "my-llama"), Tokens(1_000_000, 1_000_000, 500_000))
    assert cost == pytest.approx(0.5 + 0.25 + 2.0) and source == PRICE_SOURCE_CONFIG
    assert pricer.price("openai", ("no-such-model-xyz",), Tokens(10, 10)) == (None, "")
    assert pricer.price("", ("gpt-4o",), Tokens(10, 10)) == (None, "")


def test_request_ids():
    a, b = new_request_id(), new_request_id()
    assert a != b and uuid.UUID(a).version == 7 and a[:8] <= b[:8]
    assert valid_client_id("abc-1.2:3_x") and not valid_client_id("a b") and not valid_client_id("")
    assert not valid_client_id("x" * 129)


def test_request_ids_are_unique_past_a_refill_and_across_a_fork():
    ids = {new_request_id() for _ in range(2000)}  # 20 KB of entropy: several refills
    assert len(ids) == 2000
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids come from bytes of its own
        os.write(w, ",".join(new_request_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(w)
    parent = [new_request_id() for _ in range(50)]
    os.waitpid(pid, 0)
    child = os.read(r, 1 << 16).decode().split(",")
    os.close(r)
    # Same millisecond or not, the random parts differ: the child did not inherit the pool.
    assert not {i[-12:] for i in parent} & {i[-12:] for i in child}


def test_price_line_by_field_whatever_the_column_order():
    pricer = Pricer({"my-llama": ModelPrice(input=1.0, output=2.0)})
    rec = CallRecord(
        request_id="r1",
        provider="p",
        request_model="my-llama",
        input_tokens=1_000_000,
        output_tokens=500_000,
        properties={"price_source": "", "cost_usd": "x"},  # look-alikes must stay untouched
        response_body='{"cost_usd":null,"price_source":""}',
    )
    fields = json.loads(encode_line(rec))
    # Columns in another order: cost_usd last, price_source first, bodies between.
    shuffled = {"price_source": "", **{k: v for k, v in fields.items() if "price" not in k
                and k != "cost_usd"}, "cost_usd": None}  # fmt: skip
    for line in (encode_line(rec), json.dumps(shuffled).encode() + b"\n"):
        priced, view, known = price_line(pricer, {}, line)
        out = json.loads(priced)
        assert known and view.cost_usd == out["cost_usd"] == 2.0
        assert out["price_source"] == PRICE_SOURCE_CONFIG
        assert out["properties"] == {"price_source": "", "cost_usd": "x"}
        assert out["response_body"] == rec.response_body
        assert priced.endswith(b"\n") and priced.count(b"\n") == 1
    refused = encode_line(CallRecord(request_id="r2", status_code=400))
    out = json.loads(price_line(pricer, {}, refused)[0])
    assert (out["cost_usd"], out["price_source"]) == (0.0, "not_billed")
