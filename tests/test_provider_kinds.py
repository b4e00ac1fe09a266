"""Provider kinds come from the registry: the `vllm` kind, added in one file, is configured
with its own defaults and serves calls through the gateway."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from gateway.config import ConfigError, parse_config
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
