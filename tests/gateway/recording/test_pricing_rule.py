"""One pricing rule whether a provider comes from the SDK variables (zero config) or from a
config file: a provider is priced by its kind's list at the kind's own public API, by the
host's list when genai-prices knows the host, else only when the config sets `price_as`."""

from __future__ import annotations

import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError

CASES = [  # (kind, base URL, price_as by default)
    ("openai", "https://api.openai.com/v1", "openai"),
    ("openai", "http://127.0.0.1:11434/v1", ""),  # a local server (Ollama, vLLM, a fake)
    ("openai", "https://llm-proxy.corp.example/v1", ""),  # an unknown proxy
    ("openai", "https://api.groq.com/openai/v1", "groq"),  # a host genai-prices knows
    ("anthropic", "https://api.anthropic.com", "anthropic"),
    ("anthropic", "http://127.0.0.1:9000", ""),
]
ENV = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL"}


@pytest.mark.parametrize(("kind", "url", "price_as"), CASES)
def test_zero_config_and_config_file_price_alike(kind: str, url: str, price_as: str):
    zero = parse_config({}, {ENV[kind]: url}).providers[kind]
    declared = parse_config({"providers": {kind: {"kind": kind, "base_url": url}}}, {})
    assert zero.price_as == declared.providers[kind].price_as == price_as
    # The config says what to price it as: that wins.
    told = {"providers": {kind: {"kind": kind, "base_url": url, "price_as": "openai"}}}
    assert parse_config(told, {}).providers[kind].price_as == "openai"


def test_azure_per_resource_urls_price_as_azure():
    cfg = {"providers": {"az": {"kind": "azure", "base_url": "https://r.openai.azure.com"}}}
    assert parse_config(cfg, {}).providers["az"].price_as == "azure"


def test_a_bad_sdk_variable_is_named():
    with pytest.raises(ConfigError) as e:
        parse_config({}, {"OPENAI_BASE_URL": "localhost:8000"})
    assert e.value.key == "OPENAI_BASE_URL" and "http(s) URL" in str(e.value)
