"""The response cache end to end: the real gateway process (embedded store), the official
OpenAI and Anthropic SDKs, streamed and not, the fake upstream counting what reaches it."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from gateway.access.keys import new_secret
from tests.conftest import GatewayProcess, gateway_config
from tests.fakes import Behaviour, FakeUpstream

KEY_A, KEY_B, KEY_RPM, KEY_BUDGET = (new_secret() for _ in range(4))
ANTHROPIC_VERSION = "2023-06-01"  # the gateway's default: what a translated call sends


@pytest.fixture(scope="module")
def gw(fake: FakeUpstream, selfhosted: FakeUpstream, tmp_path_factory) -> Iterator[GatewayProcess]:
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["auth"] = {"keys": [
        {"name": "cache-a", "key": KEY_A}, {"name": "cache-b", "key": KEY_B},
        {"name": "cache-rpm", "key": KEY_RPM, "rpm": 3},
        {"name": "cache-budget", "key": KEY_BUDGET, "budget_usd": 2},
    ]}  # fmt: skip
    cfg["routes"].insert(0, {"match": "budget-*", "provider": "openai"})
    # 1 USD per 20,000 tokens: a chat call of the fake (10 + 5 tokens) costs 0.75 USD.
    cfg["prices"]["budget-model"] = {"input": 50_000, "output": 50_000}
    cfg["cache"] = {
        "enabled": True,
        "max_entry_bytes": 16384,
        "apps": {
            "cache-team": {"scope": "app"},
            "cache-everyone": {"scope": "global"},
            "cache-sampled": {"sampled": True},
            "cache-off": {"enabled": False},
        },
    }
    g = GatewayProcess(cfg, tmp_path_factory.mktemp("cache")).start()
    g.wait_ready()
    yield g
    g.stop()


def ask() -> list[dict[str, str]]:
    """A question no other call asked."""
    return [{"role": "user", "content": f"Say hello ({uuid.uuid4().hex[:12]})."}]


def rid() -> str:
    return f"cache-{uuid.uuid4()}"


def oai(gw: GatewayProcess, key: str = "client-key", **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0,
                         default_headers=headers)  # fmt: skip


def claude(gw: GatewayProcess, **headers: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="client-key", max_retries=0,
                               default_headers=headers)  # fmt: skip


def chat(client: openai.OpenAI, messages: list[dict[str, str]], **kw: Any) -> tuple[str, str]:
    """(X-Gateway-Cache, the answer's text) of a non-streamed chat call."""
    kw = {"model": "gpt-4o", "temperature": 0, **kw}
    r = client.chat.completions.with_raw_response.create(messages=messages, **kw)
    return r.headers.get("x-gateway-cache", ""), r.parse().choices[0].message.content or ""


def post(gw: GatewayProcess, messages: list[dict[str, str]], headers: dict[str, str] | None = None,
         model: str = "gpt-4o", **body: Any) -> httpx.Response:  # fmt: skip
    body = {"model": model, "messages": messages, "temperature": 0, **body}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers or {})


def status_of(r: httpx.Response) -> str:
    return r.headers.get("x-gateway-cache", "")


# ------------------------------------------------------------------ hits, as recorded
def test_a_hit_is_served_without_the_upstream_and_recorded(gw: GatewayProcess, fake):
    fake.behaviour = Behaviour(cached_tokens=4)
    client, q = oai(gw), ask()
    first, second = rid(), rid()
    r1 = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=q, temperature=0, extra_headers={"X-Request-Id": first}
    )
    n = len(fake.requests)
    r2 = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=q, temperature=0.0, extra_headers={"X-Request-Id": second}
    )
    assert len(fake.requests) == n  # the upstream never saw the second call
    assert (r1.headers["x-gateway-cache"], r2.headers["x-gateway-cache"]) == ("MISS", "HIT")
    assert int(r2.headers["age"]) >= 0 and r2.headers["x-request-id"] == second
    assert r2.parse().model_dump() == r1.parse().model_dump()
    miss, hit = gw.call_row(first), gw.call_row(second)
    assert (miss["cache_status"], hit["cache_status"]) == ("miss", "hit")
    assert miss["cost_usd"] > 0 and miss["cost_saved_usd"] == 0
    assert hit["cost_usd"] == 0 and hit["cost_saved_usd"] == pytest.approx(miss["cost_usd"])
    assert (hit["attempts"], hit["upstream_ms"], hit["status_code"]) == (0, 0, 200)
    for col in ("provider", "upstream_model", "response_model", "input_tokens", "output_tokens",
                "cache_read_tokens", "finish_reason", "app", "upstream_api"):  # fmt: skip
        assert hit[col] == miss[col], col
    assert hit["latency_ms"] == pytest.approx(hit["overhead_ms"])


def test_chat_streamed_from_a_whole_answer_and_the_reverse(gw: GatewayProcess, fake):
    client, q = oai(gw), ask()
    assert chat(client, q) == ("MISS", "Hello from the fake upstream!")
    n = len(fake.requests)
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=q, temperature=0, stream=True
    ) as resp:
        chunks = list(resp.parse())
    assert resp.headers["x-gateway-cache"] == "HIT"
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Hello from the fake upstream!"
    )
    assert all(c.usage is None for c in chunks)  # not asked for
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o",
        messages=q,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ) as resp:
        usage = [c.usage for c in resp.parse() if c.usage is not None]
    assert [(u.prompt_tokens, u.completion_tokens) for u in usage] == [(10, 5)]
    assert len(fake.requests) == n

    # A stream first (a tool call in it), then the whole answer gathered from it.
    fake.behaviour = Behaviour(openai_tool_call={"id": "call_1", "name": "lookup",
                                                 "arguments": '{"city": "Paris"}'})  # fmt: skip
    q = ask()
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=q, temperature=0, stream=True
    ) as resp:
        streamed = list(resp.parse())
    assert resp.headers["x-gateway-cache"] == "MISS"
    n = len(fake.requests)
    r = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=q, temperature=0)
    assert r.headers["x-gateway-cache"] == "HIT" and len(fake.requests) == n
    whole = r.parse()
    assert whole.id == streamed[0].id and whole.model == streamed[0].model
    msg = whole.choices[0].message
    assert msg.content == "Hello from the fake upstream!"
    assert msg.tool_calls is not None
    call = msg.tool_calls[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "call_1", "lookup", {"city": "Paris"})  # fmt: skip
    assert whole.choices[0].finish_reason == "tool_calls"
    assert whole.usage is not None and whole.usage.total_tokens == 15


def test_anthropic_sdk_streamed_and_not(gw: GatewayProcess, fake):
    client = claude(gw)
    for first_streamed in (False, True):
        q = ask()
        kw: dict[str, Any] = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": q,
                              "extra_body": {"temperature": 0}}  # fmt: skip
        if first_streamed:
            with client.messages.with_streaming_response.create(**kw, stream=True) as resp:
                assert resp.headers["x-gateway-cache"] == "MISS"
                list(resp.parse())
        else:
            r = client.messages.with_raw_response.create(**kw)
            assert r.headers["x-gateway-cache"] == "MISS"
        n = len(fake.requests)
        whole = client.messages.with_raw_response.create(**kw)
        with client.messages.stream(**kw) as stream:
            final = stream.get_final_message()
            assert stream.response.headers["x-gateway-cache"] == "HIT"
        assert len(fake.requests) == n
        assert whole.headers["x-gateway-cache"] == "HIT"
        message = whole.parse()
        assert [b.model_dump() for b in final.content] == [b.model_dump() for b in message.content]
        assert final.content[0].text == "Hello from the fake upstream!"  # type: ignore[union-attr]
        assert (final.usage.input_tokens, final.usage.output_tokens) == (10, 5)
        assert final.stop_reason == message.stop_reason == "end_turn"


def test_a_translated_call_caches_the_upstream_answer_once(gw: GatewayProcess, fake):
    """An OpenAI client asking a Claude model: the upstream's (Anthropic) answer is stored,
    and serves the OpenAI client, streamed or not, and an Anthropic client asking the same."""
    client, q = oai(gw), ask()
    with client.chat.completions.with_streaming_response.create(
        model="claude-haiku-4-5", messages=q, temperature=0, max_tokens=64, stream=True
    ) as resp:
        text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
    assert resp.headers["x-gateway-cache"] == "MISS" and text == "Hello from the fake upstream!"
    n = len(fake.requests)
    assert chat(client, q, model="claude-haiku-4-5", max_tokens=64) == ("HIT", text)
    native = claude(gw, **{"anthropic-version": ANTHROPIC_VERSION})
    r = native.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=64, messages=q, extra_body={"temperature": 0}
    )
    assert r.headers["x-gateway-cache"] == "HIT"
    assert r.parse().content[0].text == text  # type: ignore[union-attr]
    assert len(fake.requests) == n
    # Another API version may answer otherwise: not the same entry.
    other = claude(gw, **{"anthropic-version": "2024-01-01"})
    r = other.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=64, messages=q, extra_body={"temperature": 0}
    )
    assert r.headers["x-gateway-cache"] == "MISS"


def test_responses_api_streamed_and_not(gw: GatewayProcess, fake):
    client = oai(gw)
    q = f"Say hello ({uuid.uuid4().hex[:8]})."
    r = client.responses.with_raw_response.create(model="gpt-4o", input=q, temperature=0)
    assert r.headers["x-gateway-cache"] == "MISS"
    whole = r.parse()
    n = len(fake.requests)
    with client.responses.with_streaming_response.create(
        model="gpt-4o", input=q, temperature=0, stream=True
    ) as resp:
        events = list(resp.parse())
    assert resp.headers["x-gateway-cache"] == "HIT" and len(fake.requests) == n
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text == "Hello from the fake upstream!"
    assert events[-1].response.model_dump() == whole.model_dump()  # type: ignore[union-attr]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    # And a stream first, the whole answer then.
    q = f"Say hello ({uuid.uuid4().hex[:8]})."
    with client.responses.with_streaming_response.create(
        model="gpt-4o", input=q, temperature=0, stream=True
    ) as resp:
        final = next(e for e in resp.parse() if e.type == "response.completed")
    n = len(fake.requests)
    r = client.responses.with_raw_response.create(model="gpt-4o", input=q, temperature=0)
    assert r.headers["x-gateway-cache"] == "HIT" and len(fake.requests) == n
    assert r.parse().model_dump() == final.response.model_dump()  # type: ignore[union-attr]


def test_completions_and_embeddings(gw: GatewayProcess, fake):
    client = oai(gw)
    prompt = f"Once upon a time ({uuid.uuid4().hex[:8]})"
    texts = []
    for want in ("MISS", "HIT"):
        r = client.completions.with_raw_response.create(
            model="gpt-4o-mini", prompt=prompt, temperature=0)  # fmt: skip
        assert r.headers["x-gateway-cache"] == want
        texts.append(r.parse().choices[0].text)
    with client.completions.with_streaming_response.create(
        model="gpt-4o-mini", prompt=prompt, temperature=0, stream=True
    ) as resp:
        streamed = "".join(c.choices[0].text for c in resp.parse() if c.choices)
    assert resp.headers["x-gateway-cache"] == "HIT" and streamed == texts[0] == texts[1]
    text = f"embed me ({uuid.uuid4().hex[:8]})"  # no temperature: embeddings are not sampled
    vectors = []
    for want in ("MISS", "HIT"):
        r = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=text)
        assert r.headers["x-gateway-cache"] == want
        vectors.append(r.parse().data[0].embedding)
    assert vectors[0] == vectors[1]


# ------------------------------------------------------------------------ what is cached
def test_sampled_calls_only_when_the_config_or_header_says(gw: GatewayProcess, fake):
    q = ask()
    # No temperature: the APIs default to 1, a sampled answer.
    assert [status_of(post(gw, q, temperature=None)) for _ in range(2)] == ["BYPASS", "BYPASS"]
    assert [status_of(post(gw, q, temperature=0.7)) for _ in range(2)] == ["BYPASS", "BYPASS"]
    on = {"X-Gateway-Cache": "on"}
    assert [status_of(post(gw, q, on, temperature=0.7)) for _ in range(2)] == ["MISS", "HIT"]
    sampled_app = {"X-Gateway-App": "cache-sampled"}
    assert [status_of(post(gw, q, sampled_app, temperature=1)) for _ in range(2)] == [
        "MISS", "HIT"]  # fmt: skip
    # An app the config leaves out: no part in the cache, unless a call asks.
    off = {"X-Gateway-App": "cache-off"}
    r = post(gw, q, off)
    assert "x-gateway-cache" not in r.headers
    assert [status_of(post(gw, q, {**off, **on})) for _ in range(2)] == ["MISS", "HIT"]


def test_endpoints_the_cache_does_not_serve(gw: GatewayProcess, fake):
    assert "x-gateway-cache" not in httpx.get(gw.url + "/v1/models").headers
    asked = httpx.get(gw.url + "/v1/models", headers={"X-Gateway-Cache": "on"})
    assert asked.status_code == 200 and asked.headers["x-gateway-cache"] == "BYPASS"


def test_per_call_directives(gw: GatewayProcess, fake):
    q = ask()
    assert status_of(post(gw, q)) == "MISS"
    n = len(fake.requests)
    assert status_of(post(gw, q, {"X-Gateway-Cache": "off"})) == "BYPASS"
    assert len(fake.requests) == n + 1
    assert status_of(post(gw, q, {"Cache-Control": "max-age=3600"})) == "HIT"
    assert status_of(post(gw, q, {"Cache-Control": "max-age=0"})) == "MISS"  # too old
    # refresh: asked again, and the new answer replaces the stored one
    fake.behaviour = Behaviour(reply_text="A fresher answer.")
    r = post(gw, q, {"X-Gateway-Cache": "refresh"})
    assert status_of(r) == "REFRESH" and "fresher" in r.json()["choices"][0]["message"]["content"]
    assert status_of(post(gw, q, {"Cache-Control": "no-cache"})) == "REFRESH"
    fake.behaviour = Behaviour()
    r = post(gw, q)
    assert status_of(r) == "HIT" and "fresher" in r.json()["choices"][0]["message"]["content"]
    # read-only and no-store look up, and never store
    for headers in ({"X-Gateway-Cache": "read-only"}, {"Cache-Control": "no-store"}):
        q = ask()
        assert [status_of(post(gw, q, headers)) for _ in range(2)] == ["MISS", "MISS"]
        assert status_of(post(gw, q)) == "MISS"
    q = ask()
    r = post(gw, q, {"Cache-Control": "no-cache, no-store"})
    assert status_of(r) == "BYPASS" and status_of(post(gw, q)) == "MISS"


def test_a_directive_that_means_nothing_is_a_400(gw: GatewayProcess, fake):
    n = len(fake.requests)
    with pytest.raises(openai.BadRequestError) as e:
        oai(gw).chat.completions.create(model="gpt-4o", messages=ask(),
                                        extra_headers={"X-Gateway-Cache": "maybe"})  # fmt: skip
    body = e.value.body
    assert isinstance(body, dict) and body["code"] == "invalid_cache_directive"
    assert "X-Gateway-Cache" in body["message"] and len(fake.requests) == n
    r = post(gw, ask(), {"Cache-Control": "max-age=tomorrow", "X-Request-Id": (r_id := rid())})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    row = gw.call_row(r_id)
    assert (row["status_code"], row["error_type"]) == (400, "invalid_cache_directive")


@pytest.mark.parametrize(
    "behaviour",
    [
        Behaviour(status=400),
        Behaviour(fail_times=2, fail_status=500),  # both attempts fail
        Behaviour(finish_reason="content_filter"),
        Behaviour(refusal="I can't help with that."),
        Behaviour(abort_after_chunks=3),  # a stream cut short
        Behaviour(stream_error_after_chunks=3),
    ],
    ids=["client-error", "server-error", "content-filter", "refusal", "cut", "stream-error"],
)
def test_errors_refusals_and_broken_streams_are_never_stored(gw: GatewayProcess, fake, behaviour):
    q = ask()
    fake.behaviour = behaviour
    stream = behaviour.abort_after_chunks is not None or behaviour.stream_error_after_chunks
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json={
        "model": "gpt-4o", "messages": q, "temperature": 0, "stream": bool(stream)
    }) as r:  # fmt: skip
        r.read()
        assert r.headers["x-gateway-cache"] == "MISS"
    fake.behaviour = Behaviour()
    n = len(fake.requests)
    assert status_of(post(gw, q)) == "MISS" and len(fake.requests) == n + 1
    assert status_of(post(gw, q)) == "HIT"


def test_a_fallbacks_answer_and_a_large_answer_are_not_stored(gw: GatewayProcess, fake):
    q = ask()
    assert [status_of(post(gw, q, model="fallback-model")) for _ in range(2)] == ["MISS", "MISS"]
    fake.behaviour = Behaviour(reply_text="x" * 20000)  # over max_entry_bytes
    q = ask()
    assert [status_of(post(gw, q)) for _ in range(2)] == ["MISS", "MISS"]


# ----------------------------------------------------------------------------- scopes
def test_one_keys_answers_never_reach_another(gw: GatewayProcess, fake):
    q = ask()
    a, b = (oai(gw, k) for k in (KEY_A, KEY_B))
    assert [chat(a, q)[0], chat(a, q)[0]] == ["MISS", "HIT"]
    assert [chat(b, q)[0], chat(b, q)[0]] == ["MISS", "HIT"]
    assert chat(oai(gw), q)[0] == "MISS"  # without a key: the anonymous scope
    assert chat(a, q, model="gpt-4o-mini")[0] == "MISS"  # another model


def test_app_scope_shares_within_an_app_only(gw: GatewayProcess, fake):
    q = ask()
    team = {"X-Gateway-App": "cache-team"}
    assert chat(oai(gw, KEY_A, **team), q)[0] == "MISS"
    assert chat(oai(gw, KEY_B, **team), q)[0] == "HIT"  # another key, the same app
    assert chat(oai(gw, KEY_B, **{"X-Gateway-App": "cache-other"}), q)[0] == "MISS"
    everyone = {"X-Gateway-App": "cache-everyone"}
    q = ask()
    assert chat(oai(gw, KEY_A, **everyone), q)[0] == "MISS"
    assert chat(oai(gw, KEY_B, **everyone), q)[0] == "HIT"
    assert chat(oai(gw, **everyone), q)[0] == "HIT"


def test_a_passthrough_credential_is_a_scope_of_its_own(gw: GatewayProcess, fake):
    """A provider that takes the caller's own key: an answer never reaches a caller the
    upstream would have refused, whatever the scope."""
    q = ask()
    everyone = {"X-Gateway-App": "cache-everyone"}
    one, two = oai(gw, "sk-one", **everyone), oai(gw, "sk-two", **everyone)
    assert [chat(one, q, model="pt-any")[0], chat(one, q, model="pt-any")[0]] == ["MISS", "HIT"]
    assert chat(two, q, model="pt-any")[0] == "MISS"
    assert fake.requests[-1].headers["authorization"] == "Bearer sk-two"


# ------------------------------------------------------------------------- limits, rows
def test_a_hit_counts_towards_rpm(gw: GatewayProcess, fake):
    q = ask()
    limited = oai(gw, KEY_RPM)
    assert [chat(limited, q)[0] for _ in range(3)] == ["MISS", "HIT", "HIT"]
    with pytest.raises(openai.RateLimitError):
        chat(limited, q)


def test_a_hit_costs_the_budget_nothing(gw: GatewayProcess, fake):
    # A call costs 0.75 USD (15 tokens at 0.05) and reserves its estimated input and its
    # max_tokens (11 + 5 tokens, 0.80) while it runs: of a 2 USD budget, a second 0.75
    # charged would leave too little for the next reservation.
    client = oai(gw, KEY_BUDGET)
    q = ask()
    statuses = []
    for _ in range(5):  # 0.75 USD, then hits: were they charged, the third would be refused
        r = client.chat.completions.with_raw_response.create(
            model="budget-model", messages=q, temperature=0, max_tokens=5)  # fmt: skip
        statuses.append(r.headers["x-gateway-cache"])
    assert statuses == ["MISS", "HIT", "HIT", "HIT", "HIT"]
    assert chat(client, ask(), model="budget-model", max_tokens=5)[0] == "MISS"  # 1.50 spent
    with pytest.raises(openai.RateLimitError) as e:
        chat(client, q, model="budget-model", max_tokens=5)  # refused before the cache is asked
    assert e.value.code == "insufficient_quota"
    rows = gw.wait_rows("key_name = 'cache-budget' AND status_code = 200", 6)
    assert sorted(r["cost_usd"] for r in rows) == [0, 0, 0, 0, 0.75, 0.75]
    assert sum(r["cost_saved_usd"] for r in rows) == pytest.approx(4 * 0.75)
    hourly = gw.sql("SELECT sum(requests) AS calls, sum(cache_hits) AS hits, sum(cost_usd) AS "
                    "spent, sum(cost_saved_usd) AS saved FROM llm_key_usage_hourly "
                    "WHERE key_name = 'cache-budget'")  # fmt: skip
    assert hourly[0]["hits"] == 4 and hourly[0]["calls"] >= 6
    assert hourly[0]["spent"] == pytest.approx(1.5) and hourly[0]["saved"] == pytest.approx(3.0)


def test_metrics_and_the_usage_rollup(gw: GatewayProcess, fake):
    app = f"cache-m-{uuid.uuid4().hex[:6]}"
    client, q = oai(gw, **{"X-Gateway-App": app}), ask()
    assert [chat(client, q)[0] for _ in range(3)] == ["MISS", "HIT", "HIT"]
    rows = gw.wait_rows(f"app = '{app}' AND cache_status = 'hit' AND cost_saved_usd > 0", 2)
    assert len(rows) == 2
    with urllib.request.urlopen(gw.url + "/metrics") as r:
        text = r.read().decode()
    lines = [ln for ln in text.splitlines() if ln.startswith("gateway_cache_") and app in ln]
    hit = [
        ln for ln in lines if ln.startswith("gateway_cache_calls_total") and 'status="hit"' in ln
    ]
    assert len(hit) == 1 and 'model="gpt-4o"' in hit[0] and hit[0].endswith(" 2.0"), lines
    saved = [ln for ln in lines if ln.startswith("gateway_cache_saved_usd_total")]
    assert saved and float(saved[0].split()[-1]) == pytest.approx(2 * rows[0]["cost_saved_usd"])
    hourly = gw.sql(f"SELECT upstream_model, provider, sum(requests) AS calls, sum(cache_hits) "
                    f"AS hits, sum(cost_saved_usd) AS saved FROM llm_usage_hourly WHERE app = "
                    f"'{app}' GROUP BY upstream_model, provider")  # fmt: skip
    assert [(h["upstream_model"], h["provider"], h["calls"], h["hits"]) for h in hourly] == [
        ("gpt-4o", "openai", 3, 2)]  # fmt: skip
    assert hourly[0]["saved"] == pytest.approx(2 * rows[0]["cost_saved_usd"])


def test_a_stream_is_stored_at_its_terminal_event(gw: GatewayProcess, fake):
    """A client has its whole answer at `[DONE]` and may ask again at once, while the
    upstream still holds the stream open: the answer is in the cache by then."""
    fake.behaviour = Behaviour(hold_after_end=2.0)
    q = ask()
    body = {"model": "gpt-4o", "messages": q, "temperature": 0, "stream": True}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as r:
        assert status_of(r) == "MISS"
        for line in r.iter_lines():
            if line == "data: [DONE]":
                break
        n = len(fake.requests)
        again = post(gw, q)  # the stream's connection still open upstream
    assert status_of(again) == "HIT" and len(fake.requests) == n
    assert again.json()["choices"][0]["message"]["content"] == "Hello from the fake upstream!"
