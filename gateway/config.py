"""Declarative gateway configuration: YAML plus `${ENV}` interpolation, validated at start.

Every validation error names the dotted key that is wrong, so an operator can fix the
file without reading code. With no file at all, `default_config()` gives the zero-config
gateway: embedded store, OpenAI and Anthropic providers from the SDKs' own variables.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from gateway.access.config import AuthConfig


class ConfigError(ValueError):
    """A configuration problem; the message starts with the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


PROVIDER_KINDS = ("openai", "azure", "anthropic")
STORE_KINDS = ("chdb", "clickhouse", "disabled")
CAPTURE_MODES = ("metadata", "full")
AUTH_MODES = ("gateway", "passthrough")

DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_ANTHROPIC_URL = "https://api.anthropic.com"


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 10.0
    first_byte: float = 120.0
    total: float = 600.0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str
    api_key: str | None = None
    # "gateway": the configured key is used and the client's is ignored; "passthrough":
    # the client's own credential header goes upstream. Default: gateway when a key is set.
    auth: str = "passthrough"
    timeouts: Timeouts = field(default_factory=Timeouts)
    # OpenAI-compatible servers differ on `stream_options`; some reject it.
    inject_stream_usage: bool = True
    api_version: str | None = None  # azure: api-version; anthropic: anthropic-version
    deployments: dict[str, str] = field(default_factory=dict)  # azure: model -> deployment
    headers: dict[str, str] = field(default_factory=dict)  # extra headers sent upstream
    # genai-prices provider id whose price list applies; "" = none known (cost NULL unless
    # a price override in config names the model).
    price_as: str = ""


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str | None = None  # rewrite the model name sent upstream; None keeps it


@dataclass(frozen=True, slots=True)
class Route:
    match: str  # exact model name or glob pattern
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_attempts: int = 3  # attempts across all targets of a route, the first included
    backoff_ms: float = 50.0


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens, for self-hosted or negotiated prices."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None


@dataclass(frozen=True, slots=True)
class StoreConfig:
    kind: str = "chdb"
    path: str = "llm-gateway-data"
    url: str = "http://localhost:8123"
    username: str = "default"
    password: str = ""
    database: str = "llm_gateway"
    batch_size: int = 1000
    flush_interval_ms: float = 500.0
    queue_limit: int = 100_000
    cluster: str = ""  # ClickHouse cluster name: Replicated + Distributed tables, ON CLUSTER DDL
    async_insert: bool = False  # let the server buffer inserts (async_insert=1, waited for)


@dataclass(frozen=True, slots=True)
class LogConfig:
    """The durable local record log (see gateway/recordlog.py for the exact guarantee)."""

    enabled: bool = True
    dir: str = ""  # default: <store.path>/log for chdb, else ./llm-gateway-log
    max_bytes: int = 1024 * 1024 * 1024
    segment_bytes: int = 64 * 1024 * 1024
    fsync_interval_ms: float = 1000.0  # 0: fsync every record


@dataclass(frozen=True, slots=True)
class FeedbackKey:
    key: str
    kind: str  # server | publishable
    origins: tuple[str, ...] = ()  # publishable: browser origins allowed (CORS)
    rate_per_minute: int = 600  # publishable: per key and client IP
    app: str = ""  # when set, events sent with this key belong to this app


@dataclass(frozen=True, slots=True)
class FeedbackConfig:
    keys: tuple[FeedbackKey, ...] = ()  # none: server-side senders need no key
    max_batch: int = 500
    max_body_bytes: int = 1024 * 1024
    session_idle_minutes: int = 30  # a session quiet this long, not ended, is abandoned


@dataclass(frozen=True, slots=True)
class DriftSettings:
    """The drift job (collectors/drift.py): a periodic task in the gateway when enabled,
    and `llm-gateway drift` for a CronJob either way."""

    enabled: bool = False
    interval_minutes: float = 60.0
    current_window_minutes: float = 60.0
    reference_window_days: float = 7.0
    min_calls: int = 200
    min_feedback_calls: int = 100
    psi_warn: float = 0.1
    psi_alert: float = 0.2
    js_warn: float = 0.05
    js_alert: float = 0.1
    alpha: float = 0.001  # chance per run that unchanged traffic raises any alert
    warn_alpha: float = 0.05


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    enabled: bool = True  # per-call metrics (pipeline gauges are always kept)
    max_models: int = 100  # distinct model label values; more fold into "other"
    max_apps: int = 50
    property_labels: tuple[str, ...] = ()  # X-Gateway-Property-<name>s that become labels


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    mode: str = "metadata"
    max_body_bytes: int = 32_768
    allow_header_override: bool = True
    body_ttl_days: int = 30


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 10 * 1024 * 1024
    workers: int = 1
    shutdown_grace_s: float = 30.0  # in-flight streams get this long after SIGTERM


def _auth_defaults() -> AuthConfig:
    from gateway.access.config import AuthConfig  # imports this module: not at the top

    return AuthConfig()


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    drift: DriftSettings = field(default_factory=DriftSettings)
    auth: AuthConfig = field(default_factory=_auth_defaults)  # gateway keys and limits
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)
    retries: RetryConfig = field(default_factory=RetryConfig)
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    log_level: str = "info"


_ServerConfig_D = ServerConfig()
_StoreConfig_D = StoreConfig()
_CaptureConfig_D = CaptureConfig()
_LogConfig_D = LogConfig()
_RetryConfig_D = RetryConfig()
_Timeouts_D = Timeouts()

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, env: dict[str, str], key: str) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(key, f"environment variable {name} is not set")

        return _ENV_RE.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


class _Section:
    """Reads one mapping of the YAML, type-checking each key and rejecting unknown ones."""

    def __init__(self, data: Any, key: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(key or "<root>", "must be a mapping")
        self.data = dict(data)
        self.key = key

    def _k(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def _get(self, name: str, types: tuple[type, ...], default: Any, what: str) -> Any:
        if name not in self.data or self.data[name] is None:
            self.data.pop(name, None)
            return default
        value = self.data.pop(name)
        if isinstance(value, bool) and bool not in types:
            raise ConfigError(self._k(name), f"must be {what}, got {value!r}")
        if not isinstance(value, types):
            if str in types:
                return str(value)
            raise ConfigError(self._k(name), f"must be {what}, got {value!r}")
        return value

    def str(self, name: str, default: Any = None, choices: tuple[str, ...] | None = None) -> Any:
        value = self._get(name, (str,), default, "a string")
        if choices and value is not None and value not in choices:
            raise ConfigError(self._k(name), f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def num(self, name: str, default: float, minimum: float = 0.0) -> float:
        value = self._get(name, (int, float), default, "a number")
        if isinstance(value, str):
            raise ConfigError(self._k(name), f"must be a number, got {value!r}")
        if value < minimum:
            raise ConfigError(self._k(name), f"must be >= {minimum}, got {value!r}")
        return float(value)

    def int(self, name: str, default: int, minimum: int = 0) -> int:
        value = self._get(name, (int,), default, "an integer")
        if isinstance(value, str):
            raise ConfigError(self._k(name), f"must be an integer, got {value!r}")
        if value < minimum:
            raise ConfigError(self._k(name), f"must be >= {minimum}, got {value!r}")
        return value

    def bool(self, name: str, default: bool) -> bool:
        return self._get(name, (bool,), default, "true or false")

    def str_map(self, name: str) -> dict[str, str]:
        value = self._get(name, (dict,), {}, "a mapping of strings")
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(v, str | int | float) or isinstance(v, bool):
                raise ConfigError(f"{self._k(name)}.{k}", f"must be a string, got {v!r}")
            out[str(k)] = str(v)
        return out

    def section(self, name: str) -> _Section:
        return _Section(self.data.pop(name, None), self._k(name))

    def raw(self, name: str) -> Any:
        return self.data.pop(name, None)

    def done(self) -> None:
        if self.data:
            unknown = sorted(map(str, self.data))[0]
            raise ConfigError(self._k(unknown), "unknown key")


def _provider(name: str, data: Any, env: dict[str, str]) -> ProviderConfig:
    s = _Section(data, f"providers.{name}")
    kind = s.str("kind", None, PROVIDER_KINDS)
    if kind is None:
        raise ConfigError(
            f"providers.{name}.kind", f"is required (one of {', '.join(PROVIDER_KINDS)})"
        )
    default_url = {"openai": DEFAULT_OPENAI_URL, "anthropic": DEFAULT_ANTHROPIC_URL}.get(kind)
    base_url = s.str("base_url", default_url)
    if not base_url:
        raise ConfigError(f"providers.{name}.base_url", f"is required for kind {kind}")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"providers.{name}.base_url", f"must be an http(s) URL, got {base_url!r}")
    api_key = s.str("api_key") or None
    auth = s.str("auth", "gateway" if api_key else "passthrough", AUTH_MODES)
    if auth == "gateway" and not api_key:
        raise ConfigError(f"providers.{name}.api_key", "is required when auth is gateway")
    t = s.section("timeouts")
    timeouts = Timeouts(
        connect=t.num("connect", _Timeouts_D.connect, 0.001),
        first_byte=t.num("first_byte", _Timeouts_D.first_byte, 0.001),
        total=t.num("total", _Timeouts_D.total, 0.001),
    )
    t.done()
    deployments = s.str_map("deployments")
    provider = ProviderConfig(
        name=name,
        kind=kind,
        base_url=base_url.rstrip("/"),
        api_key=api_key,
        auth=auth,
        timeouts=timeouts,
        inject_stream_usage=s.bool("inject_stream_usage", kind != "anthropic"),
        api_version=s.str(
            "api_version", {"azure": "2024-10-21", "anthropic": "2023-06-01"}.get(kind)
        ),
        deployments=deployments,
        headers=s.str_map("headers"),
        price_as=s.str("price_as", _default_price_as(kind, base_url)),
    )
    s.done()
    return provider


def _default_price_as(kind: str, base_url: str) -> str:
    if kind in ("anthropic", "azure"):
        return kind
    if base_url.rstrip("/") == DEFAULT_OPENAI_URL:
        return "openai"
    # An OpenAI-compatible host genai-prices knows (Groq, Together, ...) prices as itself.
    from genai_prices.data_snapshot import get_snapshot

    try:
        return get_snapshot().find_provider(None, None, base_url).id
    except LookupError:
        return ""


def _targets(s: _Section, key: str, providers: dict[str, ProviderConfig]) -> tuple[Target, ...]:
    def one(item: Any, k: str) -> Target:
        if isinstance(item, str):
            item = {"provider": item}
        t = _Section(item, k)
        provider = t.str("provider")
        if provider is None:
            raise ConfigError(f"{k}.provider", "is required")
        if provider not in providers:
            known = ", ".join(sorted(providers)) or "none"
            raise ConfigError(f"{k}.provider", f"unknown provider {provider!r} (known: {known})")
        target = Target(provider=provider, model=t.str("model"))
        t.done()
        return target

    primary = one({"provider": s.str("provider"), "model": s.str("model")}, key)
    fallbacks = s.raw("fallbacks") or []
    if not isinstance(fallbacks, list):
        raise ConfigError(f"{key}.fallbacks", "must be a list")
    return (primary, *(one(f, f"{key}.fallbacks[{i}]") for i, f in enumerate(fallbacks)))


def parse_config(data: Any, env: dict[str, str] | None = None) -> Config:
    """Validate a parsed YAML document (after interpolation) into a `Config`."""
    env = dict(os.environ) if env is None else env
    data = _interpolate(data or {}, env, "")
    root = _Section(data, "")

    srv = root.section("server")
    server = ServerConfig(
        host=srv.str("host", _ServerConfig_D.host),
        port=srv.int("port", _ServerConfig_D.port, 0),
        max_body_bytes=srv.int("max_body_bytes", _ServerConfig_D.max_body_bytes, 1),
        workers=srv.int("workers", 1, 1),
        shutdown_grace_s=srv.num("shutdown_grace_s", _ServerConfig_D.shutdown_grace_s, 0),
    )
    srv.done()

    st = root.section("store")
    store = StoreConfig(
        kind=st.str("kind", _StoreConfig_D.kind, STORE_KINDS),
        path=st.str("path", env.get("LLM_GATEWAY_DATA_DIR", _StoreConfig_D.path)),
        url=st.str("url", _StoreConfig_D.url),
        username=st.str("username", _StoreConfig_D.username),
        password=st.str("password", _StoreConfig_D.password),
        database=st.str("database", _StoreConfig_D.database),
        batch_size=st.int("batch_size", _StoreConfig_D.batch_size, 1),
        flush_interval_ms=st.num("flush_interval_ms", _StoreConfig_D.flush_interval_ms, 1),
        queue_limit=st.int("queue_limit", _StoreConfig_D.queue_limit, 1),
        cluster=st.str("cluster", ""),
        async_insert=st.bool("async_insert", False),
    )
    if store.cluster and store.kind != "clickhouse":
        raise ConfigError("store.cluster", "needs store.kind: clickhouse")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", store.database):
        raise ConfigError("store.database", f"must be a plain identifier, got {store.database!r}")
    st.done()

    if store.kind == "chdb" and server.workers > 1:
        raise ConfigError(
            "server.workers",
            "the embedded store (store.kind: chdb) is a single-process engine: run one "
            "worker, or use a ClickHouse server (store.kind: clickhouse) for several",
        )

    lg = root.section("log")
    log_cfg = LogConfig(
        # Nothing to make durable when nothing is recorded.
        enabled=lg.bool("enabled", store.kind != "disabled"),
        dir=lg.str("dir", "")
        or (str(Path(store.path) / "log") if store.kind == "chdb" else "llm-gateway-log"),
        max_bytes=lg.int("max_bytes", _LogConfig_D.max_bytes, 4096),
        segment_bytes=lg.int("segment_bytes", _LogConfig_D.segment_bytes, 4096),
        fsync_interval_ms=lg.num("fsync_interval_ms", _LogConfig_D.fsync_interval_ms, 0),
    )
    lg.done()

    mt = root.section("metrics")
    labels = mt.raw("property_labels") or []
    if not isinstance(labels, list) or not all(
        isinstance(x, str) and re.fullmatch(r"[a-z0-9_-]{1,32}", x) for x in labels
    ):
        raise ConfigError(
            "metrics.property_labels",
            "must be a list of lower-case property names ([a-z0-9_-], <= 32)",
        )
    metrics_cfg = MetricsConfig(
        enabled=mt.bool("enabled", True),
        max_models=mt.int("max_models", 100, 1),
        max_apps=mt.int("max_apps", 50, 1),
        property_labels=tuple(labels),
    )
    mt.done()

    fb = root.section("feedback")
    raw_keys = fb.raw("keys") or []
    if not isinstance(raw_keys, list):
        raise ConfigError("feedback.keys", "must be a list")
    keys = []
    for i, item in enumerate(raw_keys):
        ks = _Section(item, f"feedback.keys[{i}]")
        key = ks.str("key")
        if not key or len(key) < 8:
            raise ConfigError(f"feedback.keys[{i}].key", "is required (8 characters or more)")
        kind = ks.str("kind", None, ("server", "publishable"))
        if kind is None:
            raise ConfigError(f"feedback.keys[{i}].kind", "is required: server or publishable")
        origins = ks.raw("origins") or []
        if not isinstance(origins, list) or not all(
            isinstance(o, str) and (o == "*" or o.startswith(("http://", "https://")))
            for o in origins
        ):
            raise ConfigError(
                f"feedback.keys[{i}].origins", "must be a list of origins like https://app.example"
            )
        if kind == "publishable" and not origins:
            raise ConfigError(f"feedback.keys[{i}].origins", "a publishable key needs origins")
        keys.append(
            FeedbackKey(
                key=key,
                kind=kind,
                origins=tuple(o.rstrip("/") for o in origins),
                rate_per_minute=ks.int("rate_per_minute", 600, 1),
                app=ks.str("app", ""),
            )
        )
        ks.done()
    feedback_cfg = FeedbackConfig(
        keys=tuple(keys),
        max_batch=fb.int("max_batch", 500, 1),
        max_body_bytes=fb.int("max_body_bytes", 1024 * 1024, 1024),
        session_idle_minutes=fb.int("session_idle_minutes", 30, 1),
    )
    fb.done()

    dr = root.section("drift")
    d0 = DriftSettings()
    drift_cfg = DriftSettings(
        enabled=dr.bool("enabled", False),
        interval_minutes=dr.num("interval_minutes", d0.interval_minutes, 0.1),
        current_window_minutes=dr.num("current_window_minutes", d0.current_window_minutes, 1),
        reference_window_days=dr.num("reference_window_days", d0.reference_window_days, 0.01),
        min_calls=dr.int("min_calls", d0.min_calls, 1),
        min_feedback_calls=dr.int("min_feedback_calls", d0.min_feedback_calls, 1),
        psi_warn=dr.num("psi_warn", d0.psi_warn, 0),
        psi_alert=dr.num("psi_alert", d0.psi_alert, 0),
        js_warn=dr.num("js_warn", d0.js_warn, 0),
        js_alert=dr.num("js_alert", d0.js_alert, 0),
        alpha=dr.num("alpha", d0.alpha, 1e-12),
        warn_alpha=dr.num("warn_alpha", d0.warn_alpha, 1e-12),
    )
    if not drift_cfg.alpha <= drift_cfg.warn_alpha < 1:
        raise ConfigError("drift.alpha", "needs alpha <= warn_alpha < 1")
    if drift_cfg.psi_warn > drift_cfg.psi_alert:
        raise ConfigError("drift.psi_warn", "must not exceed drift.psi_alert")
    dr.done()

    cp = root.section("capture")
    capture = CaptureConfig(
        mode=cp.str("mode", _CaptureConfig_D.mode, CAPTURE_MODES),
        max_body_bytes=cp.int("max_body_bytes", _CaptureConfig_D.max_body_bytes, 0),
        allow_header_override=cp.bool("allow_header_override", True),
        body_ttl_days=cp.int("body_ttl_days", _CaptureConfig_D.body_ttl_days, 1),
    )
    cp.done()

    raw_providers = root.raw("providers")
    if raw_providers is None:
        providers = default_providers(env)
    else:
        if not isinstance(raw_providers, dict) or not raw_providers:
            raise ConfigError("providers", "must be a non-empty mapping of name to provider")
        providers = {str(n): _provider(str(n), p, env) for n, p in raw_providers.items()}

    raw_routes = root.raw("routes")
    if raw_routes is None:
        routes = default_routes(providers)
    else:
        if not isinstance(raw_routes, list):
            raise ConfigError("routes", "must be a list")
        routes_list = []
        for i, r in enumerate(raw_routes):
            rs = _Section(r, f"routes[{i}]")
            match = rs.str("match")
            if not match:
                raise ConfigError(f"routes[{i}].match", "is required (a model name or glob)")
            routes_list.append(Route(match=match, targets=_targets(rs, f"routes[{i}]", providers)))
            rs.done()
        routes = tuple(routes_list)

    aliases = root.section("aliases")
    alias_map = {k: aliases.str(k) for k in list(aliases.data)}
    aliases.done()

    rt = root.section("retries")
    retries = RetryConfig(
        max_attempts=rt.int("max_attempts", _RetryConfig_D.max_attempts, 1),
        backoff_ms=rt.num("backoff_ms", _RetryConfig_D.backoff_ms, 0),
    )
    rt.done()

    pr = root.section("prices")
    prices: dict[str, ModelPrice] = {}
    for model in list(pr.data):
        ps = pr.section(model)
        if "input" not in ps.data or "output" not in ps.data:
            raise ConfigError(f"prices.{model}", "needs input and output (USD per million tokens)")
        prices[model] = ModelPrice(
            input=ps.num("input", 0.0),
            output=ps.num("output", 0.0),
            cache_read=ps.num("cache_read", -1.0, -1.0) if "cache_read" in ps.data else None,
            cache_write=ps.num("cache_write", -1.0, -1.0) if "cache_write" in ps.data else None,
        )
        ps.done()
    pr.done()

    from gateway.access.config import parse_auth

    auth = parse_auth(root.raw("auth"))

    log_level = root.str("log_level", "info", ("debug", "info", "warning", "error"))
    root.done()
    return Config(
        server=server,
        store=store,
        capture=capture,
        log=log_cfg,
        metrics=metrics_cfg,
        feedback=feedback_cfg,
        drift=drift_cfg,
        auth=auth,
        providers=providers,
        routes=routes,
        aliases=alias_map,
        retries=retries,
        prices=prices,
        log_level=log_level,
    )


def default_providers(env: dict[str, str]) -> dict[str, ProviderConfig]:
    """OpenAI and Anthropic, from the variables the official SDKs read."""
    openai_key = env.get("OPENAI_API_KEY") or None
    anthropic_key = env.get("ANTHROPIC_API_KEY") or None
    anthropic_url = (env.get("ANTHROPIC_BASE_URL") or DEFAULT_ANTHROPIC_URL).rstrip("/")
    return {
        "openai": ProviderConfig(
            name="openai",
            kind="openai",
            base_url=(env.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_URL).rstrip("/"),
            api_key=openai_key,
            auth="gateway" if openai_key else "passthrough",
            # The SDK variable may point at a corporate proxy of OpenAI: price as OpenAI
            # (a self-hosted model's name simply finds no OpenAI price).
            price_as="openai",
        ),
        "anthropic": ProviderConfig(
            name="anthropic",
            kind="anthropic",
            base_url=anthropic_url,
            api_key=anthropic_key,
            auth="gateway" if anthropic_key else "passthrough",
            inject_stream_usage=False,
            api_version="2023-06-01",
            price_as="anthropic",
        ),
    }


def default_routes(providers: dict[str, ProviderConfig]) -> tuple[Route, ...]:
    """Claude models to the first Anthropic provider; everything else to the first other one."""
    routes = []
    anthropic = next((p for p in providers.values() if p.kind == "anthropic"), None)
    other = next((p for p in providers.values() if p.kind != "anthropic"), None)
    if anthropic:
        routes.append(Route(match="claude*", targets=(Target(anthropic.name),)))
    if other:
        routes.append(Route(match="*", targets=(Target(other.name),)))
    elif anthropic:
        routes.append(Route(match="*", targets=(Target(anthropic.name),)))
    return tuple(routes)


def load_config(
    path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None
) -> Config:
    """Load from `path`, else `$LLM_GATEWAY_CONFIG`, else the zero-config defaults."""
    env = dict(os.environ) if env is None else env
    path = path or env.get("LLM_GATEWAY_CONFIG")
    if not path:
        return parse_config({}, env)
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError("--config", f"cannot read {p}: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError("--config", f"{p} is not valid YAML: {e}") from e
    return parse_config(data, env)
