"""Gateway keys end to end: the real gateway process (embedded store) with `auth.require_key`,
the official OpenAI and Anthropic SDKs holding gateway keys, a fake upstream; keys made
with `llm-gateway keys` through the running gateway; and the browser guard."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from gateway.access.keys import new_secret
from tests.conftest import GatewayProcess, gateway_config
from tests.fakes import Behaviour, FakeUpstream
from tests.gateway.test_cli import cli

CONFIG_SECRET = new_secret()
SECRETS: list[str] = [CONFIG_SECRET]  # every secret this module handed out


@pytest.fixture(scope="module")
def gw(fake: FakeUpstream, selfhosted: FakeUpstream, tmp_path_factory) -> Iterator[GatewayProcess]:
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["auth"] = {
        "require_key": True,
        "refresh_seconds": 0.3,
        "keys": [{"name": "ci", "key": "${GW_CI_KEY}", "models": ["gpt-4o-mini", "claude-*"]}],
    }
    cfg["routes"].insert(0, {"match": "budget-*", "provider": "openai"})
    # 1 USD per 20,000 tokens: a chat call of the fake (10 + 5 tokens) costs 0.75 USD.
    cfg["prices"]["budget-model"] = {"input": 50_000, "output": 50_000}
    g = GatewayProcess(cfg, tmp_path_factory.mktemp("keys"), {"GW_CI_KEY": CONFIG_SECRET})
    g.start()
    # Migrations run once the gateway listens: the tables exist when /readyz says so.
    wait_for(lambda: httpx.get(g.url + "/readyz").status_code == 200)
    yield g
    g.stop()


def keys_cli(gw: GatewayProcess, *args: str) -> Any:
    """`llm-gateway keys ...` run beside the gateway, with its config (and its environment)."""
    return cli("keys", *args, "--config", str(gw.config_path), cwd=gw.workdir,
               env={"GW_CI_KEY": CONFIG_SECRET})  # fmt: skip


def make_key(gw: GatewayProcess, *flags: str) -> dict[str, Any]:
    """`llm-gateway keys create --json` through the running gateway; waits until it works."""
    p = keys_cli(gw, "create", "--name", "k-" + uuid.uuid4().hex[:8], "--json", *flags)
    assert p.returncode == 0, p.stderr
    created = json.loads(p.stdout)
    SECRETS.append(created["key"])
    wait_for(lambda: status(gw, created["key"]) != 401)
    return created


def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.1)


def status(gw: GatewayProcess, key: str, model: str = "gpt-4o-mini") -> int:
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "ping"}],
              "max_tokens": 5},  # the fake answers 5 tokens: the reservation is exact
    )  # fmt: skip
    return r.status_code


def oai(gw: GatewayProcess, key: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, **kw)


def chat(client: openai.OpenAI, model: str = "gpt-4o-mini", rid: str | None = None) -> Any:
    # max_tokens 5: the fake's answers have 5 output tokens, so budgets and TPM reserve
    # about what a call uses (see test_reservations for what they reserve without it)
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5,
        extra_headers={"X-Request-Id": rid} if rid else None,
    )  # fmt: skip


def test_valid_key_openai_and_anthropic_sdks(gw: GatewayProcess, fake: FakeUpstream):
    rid = "k-" + uuid.uuid4().hex
    raw = chat(oai(gw, CONFIG_SECRET), rid=rid)
    assert raw.parse().choices[0].message.content
    # The gateway key is consumed: the upstream gets the gateway's own provider key.
    assert fake.requests[-1].headers["authorization"] == "Bearer sk-gw-secret-1"
    row = gw.call_row(rid)
    assert (row["key_id"], row["key_name"], row["outcome"]) == ("cfg_ci", "ci", "ok")

    msg = anthropic.Anthropic(base_url=gw.url, api_key=CONFIG_SECRET, max_retries=0)
    out = msg.messages.create(model="claude-3-5-haiku", max_tokens=20,
                              messages=[{"role": "user", "content": "hi"}])  # fmt: skip
    assert out.content[0].text
    assert fake.requests[-1].headers["x-api-key"] == "ant-secret-3"

    # Azure clients send `api-key`; the key may use any model (no allowlist).
    any_model = make_key(gw)["key"]
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        headers={"api-key": any_model},
        json={"model": "gpt-4o-azure", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 200, r.text
    assert fake.requests[-1].headers["api-key"] == "az-secret-2"
    # A passthrough provider forwards the client's credential: never the gateway key.
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {any_model}"},
        json={"model": "pt-x", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    assert all(any_model not in json.dumps(q.headers) for q in fake.requests)


def test_missing_and_wrong_keys_get_401(gw: GatewayProcess, fake: FakeUpstream):
    fake.reset()
    # A provider's key is told it is no gateway key; a gateway key nobody issued, that it
    # is unknown. Either way the refusal is recorded under the model the body named.
    cases = (
        ("sk-some-provider-key", "invalid_api_key", "The key provided is not a gateway key"),
        (new_secret(), "invalid_api_key", "Incorrect gateway key provided"),
    )
    for key, code, says in cases:
        rid = "k-" + uuid.uuid4().hex
        with pytest.raises(openai.AuthenticationError) as e:
            chat(oai(gw, key), rid=rid)
        assert e.value.status_code == 401 and e.value.code == code
        assert says in e.value.message and "didn't provide" not in e.value.message
        assert key not in e.value.message
        row = gw.call_row(rid)
        assert (row["outcome"], row["request_model"]) == ("refused_key", "gpt-4o-mini")
    rid = "k-" + uuid.uuid4().hex
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "gpt-4o-mini"},
                   headers={"x-request-id": rid})  # fmt: skip
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    assert "didn't provide a gateway key" in r.json()["error"]["message"]
    assert gw.call_row(rid)["request_model"] == "gpt-4o-mini"
    # A Claude client with a provider's key: the same, in the body of /v1/messages.
    rid = "k-" + uuid.uuid4().hex
    claude = anthropic.Anthropic(base_url=gw.url, api_key="sk-ant-provider", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        claude.messages.create(model="claude-3-5-haiku", max_tokens=5, extra_headers={
            "x-request-id": rid}, messages=[{"role": "user", "content": "x"}])  # fmt: skip
    assert gw.call_row(rid)["request_model"] == "claude-3-5-haiku"
    assert fake.requests == []  # nothing reached the upstream


def test_model_outside_the_allowlist_is_403(gw: GatewayProcess):
    client = oai(gw, CONFIG_SECRET)
    with pytest.raises(openai.PermissionDeniedError) as e:
        chat(client, "gpt-4o")
    assert e.value.status_code == 403 and e.value.code == "model_not_allowed"
    chat(client, "fast")  # an alias of gpt-4o-mini: checked after aliases, allowed


def test_cli_created_key_works_and_revoke_takes_effect(gw: GatewayProcess):
    created = make_key(gw, "--models", "gpt-4o*", "--app", "search")
    rid = "k-" + uuid.uuid4().hex
    chat(oai(gw, created["key"]), rid=rid)
    row = gw.call_row(rid)
    assert (row["key_id"], row["app"]) == (created["key_id"], "search")
    p = keys_cli(gw, "list", "--json")
    listed = {d["key_id"]: d for d in json.loads(p.stdout)}
    assert created["key_id"] in listed and "key" not in listed[created["key_id"]]
    p = keys_cli(gw, "revoke", created["key_id"])
    assert p.returncode == 0, p.stderr
    # Refused within the refresh interval (0.3 s here; the wait is bounded, not asserted).
    wait_for(lambda: status(gw, created["key"]) == 401)


def test_rotate_replaces_the_secret(gw: GatewayProcess):
    created = make_key(gw)
    p = keys_cli(gw, "rotate", created["name"], "--json")
    new = json.loads(p.stdout)["key"]
    SECRETS.append(new)
    wait_for(lambda: status(gw, created["key"]) == 401 and status(gw, new) == 200)


def test_rpm_limit_sdk_sees_429_and_headers(gw: GatewayProcess):
    created = make_key(gw, "--rpm", "3")  # make_key's probe took one request
    client = oai(gw, created["key"])
    ok = chat(client)
    assert ok.headers["x-ratelimit-limit-requests"] == "3"
    assert ok.headers["x-ratelimit-remaining-requests"] == "1"
    assert ok.headers["x-ratelimit-reset-requests"].endswith("s")
    chat(client)
    with pytest.raises(openai.RateLimitError) as e:
        chat(client)
    h = e.value.response.headers
    assert e.value.status_code == 429 and e.value.code == "rate_limit_exceeded"
    assert int(h["retry-after"]) >= 1 and h["x-ratelimit-remaining-requests"] == "0"
    rows = gw.wait_rows(f"key_id = '{created['key_id']}' AND outcome = 'refused_rpm'", 1)
    assert rows[0]["status_code"] == 429


def test_tpm_limit_counts_reported_usage(gw: GatewayProcess, fake: FakeUpstream):
    fake.behaviour = Behaviour(prompt_tokens=100)
    created = make_key(gw, "--tpm", "120")  # the probe: ~5 tokens estimated, 105 reported
    client = oai(gw, created["key"])
    ok = chat(client)  # 15 tokens left: enough for this call's estimate, not its usage
    assert int(ok.headers["x-ratelimit-remaining-tokens"]) <= 15
    with pytest.raises(openai.RateLimitError) as e:
        chat(client)
    h = e.value.response.headers
    assert h["x-ratelimit-limit-tokens"] == "120" and int(h["x-ratelimit-remaining-tokens"]) < 20
    assert "tokens per minute" in e.value.message


def test_budget_runs_out_mid_traffic(gw: GatewayProcess):
    created = make_key(gw, "--budget-usd", "2", "--budget-period", "day",
                       "--models", "budget-*")  # fmt: skip
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=created["key"])  # SDK retries on
    outcomes = []
    for _ in range(6):
        try:
            chat(client, "budget-model")
            outcomes.append("ok")
        except openai.RateLimitError as e:
            assert e.code == "insufficient_quota" and e.type == "insufficient_quota"
            outcomes.append("quota")
    # 0.75 USD a call, 0.5 reserved (10 tokens): admitted while spend + 0.5 fits in 2 USD.
    assert outcomes == ["ok"] * 3 + ["quota"] * 3
    # x-should-retry: false: the SDK did not retry a spent budget (one row per refusal).
    rows = gw.wait_rows(f"key_id = '{created['key_id']}' AND outcome = 'refused_budget'", 3)
    assert len(rows) == 3
    usage = gw.sql(f"SELECT sum(cost_usd) AS usd, sum(requests) AS n, sum(refused) AS refused "
                   f"FROM llm_key_usage_hourly WHERE key_id = '{created['key_id']}' "
                   "AND request_model = 'budget-model'")  # fmt: skip
    assert usage == [{"usd": pytest.approx(2.25), "n": 6, "refused": 3}]
    # The report shows the key's spend against its budget (the probe added one refusal).
    p = cli("report", "keys", "--config", str(gw.config_path), cwd=gw.workdir,
            env={"GW_CI_KEY": CONFIG_SECRET})  # fmt: skip
    assert p.returncode == 0, p.stderr
    line = next(ln for ln in p.stdout.splitlines() if created["key_id"] in ln).split()
    assert line[3:] == ["day", "2.25", "2", "112%", "7", "4"]


def test_a_small_budget_is_told_in_dollars_not_in_scientific_notation(gw: GatewayProcess):
    created = make_key(gw, "--budget-usd", "0.00001", "--models", "budget-*")
    client = oai(gw, created["key"])
    with pytest.raises(openai.RateLimitError) as e:
        chat(client, "budget-model")  # what it reserves (0.75 USD or more) exceeds the budget
    assert e.value.code == "insufficient_quota"
    assert "budget of $0.00001 for this month" in e.value.message, e.value.message
    assert "e-05" not in e.value.message
    listed = keys_cli(gw, "list").stdout
    assert "budget_usd=0.00001/month" in listed and "e-05" not in listed


def test_cross_site_and_wrong_host_never_reach_the_upstream(gw: GatewayProcess, fake: FakeUpstream):
    fake.reset()
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    hdrs = {"content-type": "text/plain", "authorization": f"Bearer {CONFIG_SECRET}"}
    r = httpx.post(gw.url + "/v1/chat/completions", content=body,
                   headers={**hdrs, "origin": "http://attacker.example"})  # fmt: skip
    assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
    r = httpx.post(gw.url + "/v1/chat/completions", content=body,
                   headers={**hdrs, "host": "attacker.example"})  # fmt: skip
    assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed"
    assert fake.requests == []


def test_guard_holds_without_keys_too(gateway: GatewayProcess, fake: FakeUpstream):
    """The session gateway has no `auth:` section: its provider keys are still not for web
    pages (the CSRF of issue 10: a text/plain POST from any page)."""
    fake.reset()
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    for extra in ({"origin": "http://attacker.example"},
                  {"host": "attacker.example", "origin": "http://attacker.example"}):  # fmt: skip
        r = httpx.post(gateway.url + "/v1/chat/completions", content=body,
                       headers={"content-type": "text/plain", **extra})  # fmt: skip
        assert r.status_code == 403, r.text
    assert fake.requests == []


def test_refusals_are_a_bounded_metric(gw: GatewayProcess):
    text = urllib.request.urlopen(gw.url + "/metrics").read().decode()
    reasons = {
        line.split('reason="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("gateway_access_refusals_total{")
    }
    assert {"key", "model", "rpm", "tpm", "budget", "origin", "host"} <= reasons


def test_raw_keys_are_nowhere(gw: GatewayProcess):
    rid = "k-" + uuid.uuid4().hex
    chat(oai(gw, make_key(gw)["key"]), rid=rid)  # at least one key of its own, used
    gw.call_row(rid)  # written: the rows, the log and the store are all on disk
    metrics = urllib.request.urlopen(gw.url + "/metrics").read()
    blobs = [metrics, gw.log_path.read_bytes()]
    blobs += [p.read_bytes() for p in Path(gw.workdir).rglob("*") if p.is_file()]
    assert len(SECRETS) >= 2
    for secret in SECRETS:
        for blob in blobs:
            assert secret.encode() not in blob
            assert secret[4:].encode() not in blob
