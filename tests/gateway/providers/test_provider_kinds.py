"""Provider kinds come from the registry: the `vllm` kind, added in one file, is configured
with its own defaults and serves calls through the gateway."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.providers import KINDS, genai_provider_name, provider_for
from tests.conftest import GatewayProcess

MESSAGES = [{"role": "user", "content": "hi"}]


def test_vllm_kind_defaults_from_its_module():
    cfg = parse_config({"providers": {"v": {"kind": "vllm"}}}, {})
    p = cfg.providers["v"]
    assert p.base_url == "http://localhost:8000/v1"
    assert p.auth == "passthrough" and p.api_key is None
    assert p.price_as == ""  # self-hosted: prices come from the config's prices
    assert p.inject_stream_usage is True
    provider = provider_for(p)
    # No key needed: a call without credentials goes upstream without them.
    assert provider.credentials(b"", b"", b"") == []
    assert provider.credentials(b"Bearer t", b"", b"") == [(b"authorization", b"Bearer t")]
    assert provider.url("/v1/chat/completions", "", "m") == (
        "http://localhost:8000/v1/chat/completions"
    )
    assert genai_provider_name("vllm") == "vllm"


def test_unknown_kind_lists_the_registry():
    with pytest.raises(ConfigError) as e:
        parse_config({"providers": {"p": {"kind": "vlm"}}}, {})
    assert e.value.key == "providers.p.kind"
    for kind in KINDS:
        assert kind in str(e.value)


def test_proxy_through_vllm_without_credentials(gateway: GatewayProcess, fake):
    r = uuid.uuid4().hex
    chunks = []
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        json={"model": "vllm-llama", "stream": True, "messages": MESSAGES},
        headers={"X-Request-Id": r},
        timeout=10,
    ) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    sent = fake.last_request
    assert "authorization" not in sent.headers
    assert sent.json["stream_options"] == {"include_usage": True}
    assert all(c["choices"] for c in chunks)  # the usage chunk asked for is not passed on
    row = gateway.call_row(r)
    assert row["provider"] == "vllm" and row["provider_kind"] == "vllm"
    assert row["status_code"] == 200 and row["outcome"] == "ok"
    assert row["input_tokens"] > 0 and row["usage_estimated"] is False


def test_gemini_kind_defaults_from_its_module():
    cfg = parse_config({"providers": {"g": {"kind": "gemini", "api_key": "k"}}}, {})
    p = cfg.providers["g"]
    assert p.base_url == "https://generativelanguage.googleapis.com/v1beta/openai"
    assert p.price_as == "google" and p.auth == "gateway"
    provider = provider_for(p)
    assert provider.credentials(b"", b"", b"") == [(b"authorization", b"Bearer k")]
    assert provider.url("/v1/chat/completions", "", "gemini-2.0-flash") == (
        "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"
    )
    assert genai_provider_name("gemini") == "gcp.gemini"
    # Routed by the default routes when it is the only provider configured.
    assert cfg.routes[0].match == "gemini*"


def test_gemini_call_priced_by_genai_prices(gateway: GatewayProcess, fake):
    r = uuid.uuid4().hex
    resp = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "gemini-2.0-flash", "messages": MESSAGES},
        headers={"X-Request-Id": r},
        timeout=10,
    )
    assert resp.status_code == 200
    assert fake.last_request.headers["authorization"] == "Bearer gm-secret-4"
    row = gateway.call_row(r)
    assert row["provider_kind"] == "gemini" and row["input_tokens"] > 0
    assert row["cost_usd"] is not None and row["cost_usd"] > 0


def test_bedrock_kind_region_url_and_api_key():
    cfg = parse_config(
        {"providers": {"b": {"kind": "bedrock",
                             "base_url": "https://bedrock-runtime.eu-west-3.amazonaws.com"}}},
        {},
    )  # fmt: skip
    provider = provider_for(cfg.providers["b"])
    assert provider.region == "eu-west-3"  # type: ignore[attr-defined]
    assert cfg.providers["b"].price_as == "aws"
    model = "arn:aws:bedrock:eu-west-3:1:inference-profile/eu.anthropic.claude-v1:0"
    assert provider.url("/converse", "", model) == (
        "https://bedrock-runtime.eu-west-3.amazonaws.com/model/"
        "arn:aws:bedrock:eu-west-3:1:inference-profile%2Feu.anthropic.claude-v1:0/converse"
    )
    assert provider.credentials(b"Bearer client", b"", b"") == []  # never the client's
    # A Bedrock API key replaces SigV4: sent as a bearer token, nothing signed.
    keyed = parse_config({"providers": {"b": {"kind": "bedrock", "api_key": "bk"}}}, {})
    p2 = provider_for(keyed.providers["b"])
    assert p2.credentials(b"", b"", b"") == [(b"authorization", b"Bearer bk")]
    assert p2.sign("POST", "https://x/model/m/converse", b"{}") == []
    assert genai_provider_name("bedrock") == "aws.bedrock"
