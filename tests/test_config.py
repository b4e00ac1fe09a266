"""Configuration: validation names the bad key; zero-config follows the SDK variables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_config, parse_config
from gateway.errors import ConfigError, MissingCredentials
from gateway.providers import provider_for
from gateway.request.routing import Router


def test_zero_config_uses_sdk_variables():
    env = {"OPENAI_API_KEY": "sk-a", "OPENAI_BASE_URL": "http://h:1/v1/",
           "ANTHROPIC_BASE_URL": "http://a:2"}  # fmt: skip
    cfg = parse_config({}, env)
    assert cfg.store.kind == "chdb" and cfg.store.path == "llm-gateway-data"
    oa, an = cfg.providers["openai"], cfg.providers["anthropic"]
    assert (oa.base_url, oa.api_key, oa.auth) == ("http://h:1/v1", "sk-a", "gateway")
    assert (an.base_url, an.api_key, an.auth) == ("http://a:2", None, "passthrough")
    router = Router(cfg, {n: provider_for(p) for n, p in cfg.providers.items()})
    assert router.resolve("claude-3-haiku").hops[0].provider.name == "anthropic"
    assert router.resolve("anything-else").hops[0].provider.name == "openai"


def test_data_dir_from_env():
    assert parse_config({}, {"LLM_GATEWAY_DATA_DIR": "/tmp/x"}).store.path == "/tmp/x"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"sever": {}}, "sever"),
        ({"server": {"port": "eighty"}}, "server.port"),
        ({"server": {"port": -1}}, "server.port"),
        ({"store": {"kind": "postgres"}}, "store.kind"),
        ({"store": {"database": "bad-name;"}}, "store.database"),
        ({"capture": {"mode": "everything"}}, "capture.mode"),
        ({"providers": {"p": {"kind": "azur"}}}, "providers.p.kind"),
        ({"providers": {"p": {"kind": "azure"}}}, "providers.p.base_url"),
        ({"providers": {"p": {"kind": "openai", "base_url": "ftp://x"}}}, "providers.p.base_url"),
        ({"providers": {"p": {"kind": "openai", "auth": "gateway"}}}, "providers.p.api_key"),
        ({"providers": {"p": {"kind": "openai", "timeouts": {"first": 1}}}},
         "providers.p.timeouts.first"),
        ({"providers": {"p": {"kind": "openai", "colour": "red"}}}, "providers.p.colour"),
        ({"routes": [{"match": "x", "provider": "nope"}]}, "routes[0].provider"),
        ({"routes": [{"provider": "openai"}]}, "routes[0].match"),
        ({"routes": [{"match": "x", "provider": "openai", "fallbacks": [{"provider": "zz"}]}]},
         "routes[0].fallbacks[0].provider"),
        ({"prices": {"m": {"input": 1}}}, "prices.m"),
        ({"retries": {"max_attempts": 0}}, "retries.max_attempts"),
        ({"server": {"workers": 2}}, "server.workers"),  # chDB: one process only
        ({"log": {"max_bytes": 10}}, "log.max_bytes"),
        ({"server": {"trusted_proxies": "10.0.0.1"}}, "server.trusted_proxies"),
        ({"server": {"trusted_proxies": ["10.0.0.0/8", "proxy.local"]}},
         "server.trusted_proxies[1]"),
        ({"server": {"header_timeout_s": 0}}, "server.header_timeout_s"),
        ({"server": {"max_connections": 0}}, "server.max_connections"),
        ({"providers": {"p": {"kind": "openai", "api_key": "${NOT_SET_ANYWHERE}"}}},
         "providers.p.api_key"),
    ],
)  # fmt: skip
def test_bad_config_names_the_key(data, key):
    with pytest.raises(ConfigError) as e:
        parse_config(data, {})
    assert e.value.key == key
    assert str(e.value).startswith(key + ":")


def test_env_interpolation_and_defaults():
    cfg = parse_config(
        {"providers": {"p": {"kind": "openai", "base_url": "${URL:-http://d/v1}",
                             "api_key": "${KEY}"}}},
        {"KEY": "k1"},
    )  # fmt: skip
    p = cfg.providers["p"]
    assert (p.base_url, p.api_key, p.auth) == ("http://d/v1", "k1", "gateway")


def test_routes_exact_glob_alias_and_order():
    cfg = parse_config(
        {
            "providers": {
                "a": {"kind": "openai", "base_url": "http://a/v1"},
                "b": {"kind": "openai", "base_url": "http://b/v1"},
            },
            "routes": [
                {"match": "gpt-4o", "provider": "b", "model": "gpt-4o-2024-11-20",
                 "fallbacks": ["a"]},
                {"match": "gpt-*", "provider": "a"},
            ],
            "aliases": {"best": "gpt-4o", "loop1": "loop2", "loop2": "loop1"},
        },
        {},
    )  # fmt: skip
    router = Router(cfg, {n: provider_for(p) for n, p in cfg.providers.items()})
    r = router.resolve("best")
    assert r is not None and r.model == "gpt-4o"
    assert [(h.provider.name, h.model) for h in r.hops] == [("b", "gpt-4o-2024-11-20"),
                                                           ("a", "gpt-4o")]  # fmt: skip
    assert router.resolve("gpt-4o-mini").hops[0].provider.name == "a"
    assert router.resolve("claude") is None
    assert router.resolve("loop1") is None  # alias cycles end, no hang


def test_provider_urls_and_credentials():
    cfg = parse_config(
        {"providers": {
            "az": {"kind": "azure", "base_url": "https://r.openai.azure.com", "api_key": "k",
                   "deployments": {"gpt-4o": "dep 1"}},
            "an": {"kind": "anthropic"},
            "oa": {"kind": "openai", "base_url": "http://h/v1"},
        }},
        {},
    )  # fmt: skip
    az, an, oa = (provider_for(cfg.providers[n]) for n in ("az", "an", "oa"))
    assert az.url("/v1/chat/completions", "", "gpt-4o") == (
        "https://r.openai.azure.com/openai/deployments/dep%201/chat/completions"
        "?api-version=2024-10-21"
    )
    assert az.credentials(b"Bearer c", b"", b"") == [(b"api-key", b"k")]
    assert (
        an.url("/v1/messages", "beta=true", "m")
        == "https://api.anthropic.com/v1/messages?beta=true"
    )
    assert an.credentials(b"", b"", b"ck") == [(b"x-api-key", b"ck")]
    assert an.credentials(b"Bearer ck2", b"", b"") == [(b"x-api-key", b"ck2")]
    assert oa.url("/v1/embeddings", "", "m") == "http://h/v1/embeddings"
    assert oa.credentials(b"Bearer c", b"", b"") == [(b"authorization", b"Bearer c")]
    with pytest.raises(MissingCredentials):
        oa.credentials(b"", b"", b"")


def test_serve_with_bad_config_exits_nonzero_naming_key(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("store:\n  kind: chdb\n  flush_interval_ms: soon\n")
    p = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", str(bad)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert p.returncode == 2
    assert "store.flush_interval_ms" in p.stderr
    bad.write_text("providers: [1, 2\n")
    p = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", str(bad)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert p.returncode == 2 and "not valid YAML" in p.stderr


def test_load_config_missing_file():
    with pytest.raises(ConfigError, match="cannot read"):
        load_config("/nonexistent/gw.yaml", {})
