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


def test_a_file_error_names_the_key_file_and_line_and_what_was_meant(tmp_path: Path):
    f = tmp_path / "gw.yaml"
    f.write_text("server:\n  port: 8080\nstore:\n  kind: chdb\n  flush_interval_ms: soon\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, {})
    assert e.value.key == "store.flush_interval_ms"
    assert e.value.where == f"{f}, line 5"
    assert str(e.value) == (
        f"store.flush_interval_ms: must be a number (float), got 'soon' [{f}, line 5]"
    )
    f.write_text(
        "providers:\n  p:\n    kind: openai\n    base_url: http://x/v1\n    timeuots: {}\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(f, {})
    assert e.value.key == "providers.p.timeuots" and e.value.hint == "timeouts"
    assert e.value.where == f"{f}, line 5" and "did you mean 'timeouts'?" in str(e.value)
    f.write_text("routes:\n  - match: gpt-4o\n    provider: opnai\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, {"OPENAI_API_KEY": "k"})
    assert (e.value.key, e.value.hint) == ("routes[0].provider", "openai")
    assert e.value.where == f"{f}, line 3"  # the line of the bad provider
    f.write_text("store:\n  kind: clikhouse\n")
    with pytest.raises(ConfigError, match=r"store.kind: must be one of chdb, clickhouse, "
                       r"disabled; got 'clikhouse' \(did you mean 'clickhouse'\?\)"):  # fmt: skip
        load_config(f, {})


def test_yaml_syntax_and_missing_variables_name_the_file(tmp_path: Path):
    f = tmp_path / "gw.yaml"
    f.write_text("providers: [1, 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, {})
    assert "not valid YAML" in str(e.value) and f"{f}, line 2" in e.value.where
    assert "<unicode string>" not in str(e.value)
    f.write_text("store:\n  kind: chdb\nproviders:\n  p:\n    kind: openai\n"
                 "    api_key: ${NOT_SET_HERE}\n")  # fmt: skip
    with pytest.raises(ConfigError) as e:
        load_config(f, {})
    assert e.value.key == "providers.p.api_key" and e.value.where == f"{f}, line 6"
    assert "NOT_SET_HERE is not set" in e.value.message


def test_errors_never_echo_a_secret():
    with pytest.raises(ConfigError) as e:
        parse_config({"feedback": {"keys": [{"key": "short", "kind": "server"}]}}, {})
    assert e.value.key == "feedback.keys[0].key" and "short" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config({"auth": {"keys": [{"name": "a", "key": "sk-secret-value-0123456789"}]}}, {})
    assert "sk-secret" not in str(e.value)


def test_numbers_where_text_is_expected_and_empty_keys():
    cfg = parse_config(
        {"server": None, "providers": {"az": {"kind": "azure", "base_url": "https://r.x",
                                              "api_version": 20241021, "deployments": {"m": 4}}}},
        {},
    )  # fmt: skip
    assert cfg.server.port == 8080  # `server:` with nothing under it: the defaults
    az = cfg.providers["az"]
    assert az.api_version == "20241021" and az.deployments == {"m": "4"}
    assert az.name == "az"
