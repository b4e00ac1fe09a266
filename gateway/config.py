"""Declarative gateway configuration: YAML plus `${ENV}` interpolation, validated at start.

Every validation error names the dotted key that is wrong, so an operator can fix the
file without reading code. Each section is a dataclass whose fields are its keys, with
their defaults and limits (`metadata`: `min`, `choices`) written there once; `_read`
turns a YAML mapping into one. With no file at all the zero-config gateway: embedded
store, OpenAI and Anthropic providers from the SDKs' own variables.
"""

from __future__ import annotations

import builtins
import ipaddress
import os
import re
from dataclasses import MISSING, dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from gateway.providers import KINDS, ProviderConfig, Timeouts
from gateway.recording.log import LogConfig as LogConfig  # re-exported: a config section

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

if TYPE_CHECKING:
    from gateway.experiments.spec import Experiment
from gateway.providers.base import DEFAULT_MAX_TOKENS

if TYPE_CHECKING:
    from gateway.access.config import AuthConfig


class ConfigError(ValueError):
    """A configuration problem; the message starts with the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


STORE_KINDS = ("chdb", "clickhouse", "disabled")
CAPTURE_MODES = ("metadata", "full")
AUTH_MODES = ("gateway", "passthrough")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _at_least(n: float) -> dict[str, Any]:
    return {"min": n}


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
    # attempts across all targets of a route, the first included
    max_attempts: int = field(default=3, metadata=_at_least(1))
    # first wait before the same provider is tried again; doubled per retry, jittered
    backoff_ms: float = 50.0
    # an upstream 429 is retried only when this is on (the client's SDK retries by itself),
    # and then only when its Retry-After fits in the call's deadline
    on_429: bool = False


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens, for self-hosted or negotiated prices."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None


@dataclass(frozen=True, slots=True)
class StoreConfig:
    kind: str = field(default="chdb", metadata={"choices": STORE_KINDS})
    path: str = "llm-gateway-data"  # or $LLM_GATEWAY_DATA_DIR
    url: str = "http://localhost:8123"
    username: str = "default"
    password: str = ""
    database: str = "llm_gateway"
    batch_size: int = field(default=1000, metadata=_at_least(1))
    flush_interval_ms: float = field(default=500.0, metadata=_at_least(1))
    queue_limit: int = field(default=100_000, metadata=_at_least(1))
    cluster: str = ""  # ClickHouse cluster name: Replicated + Distributed tables, ON CLUSTER DDL
    async_insert: bool = False  # let the server buffer inserts (async_insert=1, waited for)


@dataclass(frozen=True, slots=True)
class FeedbackKey:
    key: str
    kind: str  # server | publishable
    origins: tuple[str, ...] = ()  # publishable: browser origins allowed (CORS)
    # publishable: per key and client IP
    rate_per_minute: int = field(default=600, metadata=_at_least(1))
    app: str = ""  # when set, events sent with this key belong to this app


@dataclass(frozen=True, slots=True)
class FeedbackConfig:
    keys: tuple[FeedbackKey, ...] = ()  # none: server-side senders need no key
    max_batch: int = field(default=500, metadata=_at_least(1))
    max_body_bytes: int = field(default=1024 * 1024, metadata=_at_least(1024))
    # a session quiet this long, not ended, is abandoned
    session_idle_minutes: int = field(default=30, metadata=_at_least(1))


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """The drift job (collectors/drift): a periodic task in the gateway when enabled,
    and `llm-gateway drift` for a CronJob either way."""

    enabled: bool = False
    interval_minutes: float = field(default=60.0, metadata=_at_least(0.1))
    current_window: timedelta = field(
        default=timedelta(hours=1),
        metadata={"key": "current_window_minutes", "unit": timedelta(minutes=1), "min": 1},
    )
    reference_window: timedelta = field(
        default=timedelta(days=7),
        metadata={"key": "reference_window_days", "unit": timedelta(days=1), "min": 0.01},
    )
    # per window, for a group (and for each distribution's values)
    min_calls: int = field(default=200, metadata=_at_least(1))
    # per window, for acceptance_rate and share_rate
    min_feedback_calls: int = field(default=100, metadata=_at_least(1))
    psi_warn: float = 0.1
    psi_alert: float = 0.2
    # floor of a bin's proportion (an empty bin), for PSI; not a config key
    psi_epsilon: float = field(default=1e-4, metadata={"fixed": True})
    js_warn: float = 0.05
    js_alert: float = 0.1
    # Family-wise error rates per run, spread over the run's tests (Bonferroni): the chance
    # that traffic that did not change raises any alert (warning) in a run.
    alpha: float = field(default=0.001, metadata=_at_least(1e-12))
    warn_alpha: float = field(default=0.05, metadata=_at_least(1e-12))

    def __post_init__(self) -> None:
        if self.current_window <= timedelta(0) or self.reference_window <= timedelta(0):
            raise ConfigError("drift", "drift windows must be positive durations")
        if not 0 < self.alpha <= self.warn_alpha < 1:
            raise ConfigError("drift.alpha", "needs alpha <= warn_alpha < 1")
        if self.psi_warn > self.psi_alert:
            raise ConfigError("drift.psi_warn", "must not exceed drift.psi_alert")
        if self.min_calls < 1 or self.min_feedback_calls < 1:
            raise ConfigError("drift.min_calls", "min_calls and min_feedback_calls must be >= 1")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    enabled: bool = True  # per-call metrics (pipeline gauges are always kept)
    # distinct model label values; more fold into "other"
    max_models: int = field(default=100, metadata=_at_least(1))
    max_apps: int = field(default=50, metadata=_at_least(1))
    property_labels: tuple[str, ...] = ()  # X-Gateway-Property-<name>s that become labels


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    mode: str = field(default="metadata", metadata={"choices": CAPTURE_MODES})
    max_body_bytes: int = 32_768
    allow_header_override: bool = True
    body_ttl_days: int = field(default=30, metadata=_at_least(1))


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = field(default=10 * 1024 * 1024, metadata=_at_least(1))
    workers: int = field(default=1, metadata=_at_least(1))
    shutdown_grace_s: float = 30.0  # in-flight streams get this long after SIGTERM
    # from a request's first byte to the end of its head
    header_timeout_s: float = field(default=10.0, metadata=_at_least(0.1))
    # from the end of the head to the end of the body
    body_timeout_s: float = field(default=60.0, metadata=_at_least(0.1))
    # a connection with no request in flight
    idle_timeout_s: float = field(default=5.0, metadata=_at_least(0.1))
    max_connections: int = field(default=1024, metadata=_at_least(1))
    trusted_proxies: tuple[str, ...] = ()  # whose X-Forwarded-For counts; IPs or networks


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
    drift: DriftConfig = field(default_factory=DriftConfig)
    auth: AuthConfig = field(default_factory=_auth_defaults)  # gateway keys and limits
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)
    retries: RetryConfig = field(default_factory=RetryConfig)
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    log_level: str = field(default="info", metadata={"choices": LOG_LEVELS})
    experiments: tuple[Experiment, ...] = ()  # gateway/experiments/spec.py


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

    def num(self, name: builtins.str, default: float, minimum: float = 0.0) -> float:
        value = self._get(name, (int, float), default, "a number")
        if isinstance(value, str):
            raise ConfigError(self._k(name), f"must be a number, got {value!r}")
        if value < minimum:
            raise ConfigError(self._k(name), f"must be >= {minimum}, got {value!r}")
        return float(value)

    def int(
        self, name: builtins.str, default: builtins.int, minimum: builtins.int = 0
    ) -> builtins.int:
        value = self._get(name, (int,), default, "an integer")
        if isinstance(value, str):
            raise ConfigError(self._k(name), f"must be an integer, got {value!r}")
        if value < minimum:
            raise ConfigError(self._k(name), f"must be >= {minimum}, got {value!r}")
        return int(value)

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        return bool(self._get(name, (bool,), default, "true or false"))

    def str_map(self, name: builtins.str) -> dict[builtins.str, builtins.str]:
        value = self._get(name, (dict,), {}, "a mapping of strings")
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(v, str | int | float) or isinstance(v, bool):
                raise ConfigError(f"{self._k(name)}.{k}", f"must be a string, got {v!r}")
            out[str(k)] = str(v)
        return out

    def section(self, name: builtins.str) -> _Section:
        return _Section(self.data.pop(name, None), self._k(name))

    def raw(self, name: builtins.str) -> Any:
        return self.data.pop(name, None)

    def done(self) -> None:
        if self.data:
            unknown = sorted(map(str, self.data))[0]
            raise ConfigError(self._k(unknown), "unknown key")


_T = TypeVar("_T", bound="DataclassInstance")


def _read(cls: type[_T], s: _Section, **given: Any) -> _T:
    """A section's dataclass from its mapping: each field is read by its type with the
    default and limits written on the field; `given` supplies fields read otherwise."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in given:
            values[f.name] = given[f.name]
            continue
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
        m = f.metadata
        if m.get("fixed"):
            continue
        if f.type == "bool":
            values[f.name] = s.bool(f.name, default)
        elif f.type == "int":
            values[f.name] = s.int(f.name, default, m.get("min", 0))
        elif f.type == "float":
            values[f.name] = s.num(f.name, default, m.get("min", 0.0))
        elif f.type == "str":
            values[f.name] = s.str(f.name, default, m.get("choices"))
        elif f.type == "timedelta":  # read as a number of `unit`s under its own key
            unit = m["unit"]
            values[f.name] = unit * s.num(m["key"], default / unit, m["min"])
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: read it and pass it in `given`")
    s.done()
    return cls(**values)


def _names(s: _Section, name: str) -> frozenset[str]:
    value = s.raw(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{s.key}.{name}", "must be a list of parameter names")
    return frozenset(value)


def _provider(name: str, data: Any, env: dict[str, str]) -> ProviderConfig:
    """One provider; its kind (from the registry) supplies every default."""
    s = _Section(data, f"providers.{name}")
    kind_name = s.str("kind", None, tuple(KINDS))
    if kind_name is None:
        raise ConfigError(f"providers.{name}.kind", f"is required (one of {', '.join(KINDS)})")
    kind = KINDS[kind_name]
    base_url = s.str("base_url", kind.default_base_url)
    if not base_url:
        raise ConfigError(f"providers.{name}.base_url", f"is required for kind {kind_name}")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"providers.{name}.base_url", f"must be an http(s) URL, got {base_url!r}")
    api_key = s.str("api_key") or None
    auth = s.str("auth", "gateway" if api_key else "passthrough", AUTH_MODES)
    if auth == "gateway" and not api_key:
        raise ConfigError(f"providers.{name}.api_key", "is required when auth is gateway")
    timeouts = _read(Timeouts, s.section("timeouts"))
    provider = ProviderConfig(
        name=name,
        kind=kind_name,
        base_url=base_url.rstrip("/"),
        api_key=api_key,
        auth=auth,
        timeouts=timeouts,
        inject_stream_usage=s.bool("inject_stream_usage", kind.inject_stream_usage),
        api_version=s.str("api_version", kind.default_api_version),
        deployments=s.str_map("deployments"),
        headers=s.str_map("headers"),
        price_as=s.str("price_as", kind.default_price_as(base_url)),
        max_tokens=s.int("max_tokens", DEFAULT_MAX_TOKENS, 1),
        drop_params=_names(s, "drop_params"),
    )
    s.done()
    return provider


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


def _trusted_proxies(value: Any) -> tuple[str, ...]:
    key = "server.trusted_proxies"
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(key, "must be a list of IP addresses or networks")
    for i, item in enumerate(value):
        try:
            ipaddress.ip_network(item if isinstance(item, str) else "?", strict=False)
        except ValueError:
            msg = f"must be an IP address or network, got {item!r}"
            raise ConfigError(f"{key}[{i}]", msg) from None
    return tuple(value)


_DEFAULT_STORE = StoreConfig()


def _store(s: _Section, env: dict[str, str]) -> StoreConfig:
    store = _read(
        StoreConfig, s, path=s.str("path", env.get("LLM_GATEWAY_DATA_DIR", _DEFAULT_STORE.path))
    )
    if store.cluster and store.kind != "clickhouse":
        raise ConfigError("store.cluster", "needs store.kind: clickhouse")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", store.database):
        raise ConfigError("store.database", f"must be a plain identifier, got {store.database!r}")
    return store


def _log(s: _Section, store: StoreConfig) -> LogConfig:
    default_dir = str(Path(store.path) / "log") if store.kind == "chdb" else "llm-gateway-log"
    return _read(
        LogConfig,
        s,
        # Nothing to make durable when nothing is recorded.
        enabled=s.bool("enabled", store.kind != "disabled"),
        dir=s.str("dir", "") or default_dir,
    )


def _metrics(s: _Section) -> MetricsConfig:
    labels = s.raw("property_labels") or []
    if not isinstance(labels, list) or not all(
        isinstance(x, str) and re.fullmatch(r"[a-z0-9_-]{1,32}", x) for x in labels
    ):
        raise ConfigError(
            "metrics.property_labels",
            "must be a list of lower-case property names ([a-z0-9_-], <= 32)",
        )
    return _read(MetricsConfig, s, property_labels=tuple(labels))


def _feedback_key(item: Any, k: str) -> FeedbackKey:
    ks = _Section(item, k)
    key = ks.str("key")
    if not key or len(key) < 8:
        raise ConfigError(f"{k}.key", "is required (8 characters or more)")
    kind = ks.str("kind", None, ("server", "publishable"))
    if kind is None:
        raise ConfigError(f"{k}.kind", "is required: server or publishable")
    origins = ks.raw("origins") or []
    if not isinstance(origins, list) or not all(
        isinstance(o, str) and (o == "*" or o.startswith(("http://", "https://"))) for o in origins
    ):
        raise ConfigError(f"{k}.origins", "must be a list of origins like https://app.example")
    if kind == "publishable" and not origins:
        raise ConfigError(f"{k}.origins", "a publishable key needs origins")
    return _read(FeedbackKey, ks, key=key, kind=kind, origins=tuple(o.rstrip("/") for o in origins))


def _feedback(s: _Section) -> FeedbackConfig:
    raw_keys = s.raw("keys") or []
    if not isinstance(raw_keys, list):
        raise ConfigError("feedback.keys", "must be a list")
    keys = tuple(_feedback_key(item, f"feedback.keys[{i}]") for i, item in enumerate(raw_keys))
    return _read(FeedbackConfig, s, keys=keys)


def _providers(raw: Any, env: dict[str, str]) -> dict[str, ProviderConfig]:
    if raw is None:
        return default_providers(env)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("providers", "must be a non-empty mapping of name to provider")
    return {str(n): _provider(str(n), p, env) for n, p in raw.items()}


def _routes(raw: Any, providers: dict[str, ProviderConfig]) -> tuple[Route, ...]:
    if raw is None:
        return default_routes(providers)
    if not isinstance(raw, list):
        raise ConfigError("routes", "must be a list")
    routes = []
    for i, r in enumerate(raw):
        rs = _Section(r, f"routes[{i}]")
        match = rs.str("match")
        if not match:
            raise ConfigError(f"routes[{i}].match", "is required (a model name or glob)")
        routes.append(Route(match=match, targets=_targets(rs, f"routes[{i}]", providers)))
        rs.done()
    return tuple(routes)


def _aliases(s: _Section) -> dict[str, str]:
    aliases = {k: s.str(k) for k in list(s.data)}
    s.done()
    return aliases


def _prices(s: _Section) -> dict[str, ModelPrice]:
    prices: dict[str, ModelPrice] = {}
    for model in list(s.data):
        ps = s.section(model)
        if "input" not in ps.data or "output" not in ps.data:
            raise ConfigError(f"prices.{model}", "needs input and output (USD per million tokens)")
        prices[model] = ModelPrice(
            input=ps.num("input", 0.0),
            output=ps.num("output", 0.0),
            cache_read=ps.num("cache_read", -1.0, -1.0) if "cache_read" in ps.data else None,
            cache_write=ps.num("cache_write", -1.0, -1.0) if "cache_write" in ps.data else None,
        )
        ps.done()
    s.done()
    return prices


def parse_config(data: Any, env: dict[str, str] | None = None) -> Config:
    """Validate a parsed YAML document (after interpolation) into a `Config`."""
    from gateway.experiments.spec import parse_experiments  # it imports ConfigError

    env = dict(os.environ) if env is None else env
    root = _Section(_interpolate(data or {}, env, ""), "")
    srv = root.section("server")
    server = _read(ServerConfig, srv, trusted_proxies=_trusted_proxies(srv.raw("trusted_proxies")))
    store = _store(root.section("store"), env)
    if store.kind == "chdb" and server.workers > 1:
        raise ConfigError(
            "server.workers",
            "the embedded store (store.kind: chdb) is a single-process engine: run one "
            "worker, or use a ClickHouse server (store.kind: clickhouse) for several",
        )
    providers = _providers(root.raw("providers"), env)
    from gateway.access.config import parse_auth  # imports this module: not at the top

    return _read(
        Config,
        root,
        server=server,
        store=store,
        log=_log(root.section("log"), store),
        metrics=_metrics(root.section("metrics")),
        feedback=_feedback(root.section("feedback")),
        drift=_read(DriftConfig, root.section("drift")),
        capture=_read(CaptureConfig, root.section("capture")),
        auth=parse_auth(root.raw("auth")),
        providers=providers,
        routes=_routes(root.raw("routes"), providers),
        aliases=_aliases(root.section("aliases")),
        retries=_read(RetryConfig, root.section("retries")),
        prices=_prices(root.section("prices")),
        experiments=parse_experiments(root.raw("experiments")),
    )


def default_providers(env: dict[str, str]) -> dict[str, ProviderConfig]:
    """The zero-config kinds (OpenAI and Anthropic), from the variables their SDKs read;
    read as a config file declaring them would be, so the same defaults apply (price_as)."""
    providers = {}
    for kind in KINDS.values():
        if not kind.zero_config:
            continue
        declared = {"kind": kind.kind, "base_url": env.get(kind.base_url_env) or None,
                    "api_key": env.get(kind.api_key_env) or None}  # fmt: skip
        try:
            providers[kind.kind] = _provider(kind.kind, declared, env)
        except ConfigError as e:
            raise ConfigError(kind.base_url_env, str(e).partition(": ")[2]) from None
    return providers


def default_routes(providers: dict[str, ProviderConfig]) -> tuple[Route, ...]:
    """Each kind's own model names (e.g. claude*) to its first provider; everything else to
    the first provider of a kind without such names, else to the first one routed."""
    routes: list[Route] = []
    catch_all = None
    for p in providers.values():
        models = KINDS[p.kind].default_models
        if models and not any(r.match == models for r in routes):
            routes.append(Route(match=models, targets=(Target(p.name),)))
        elif not models and catch_all is None:
            catch_all = p
    if catch_all is None and routes:
        catch_all = providers[routes[0].targets[0].provider]
    if catch_all is not None:
        routes.append(Route(match="*", targets=(Target(catch_all.name),)))
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
