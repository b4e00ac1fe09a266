"""The gateway's configuration: one YAML file (`--config` or `$LLM_GATEWAY_CONFIG`) with
`${ENV}` interpolation, validated at start.

Each section is declared beside the component it configures (gateway/sections.py says
how); they are composed here, in `Config`, one line each. With no file at all, the
zero-config gateway: the embedded store (`$LLM_GATEWAY_DATA_DIR`), and OpenAI and
Anthropic from the variables their SDKs read (`OPENAI_BASE_URL`, `OPENAI_API_KEY`, ...).

One precedence for what is set in several places: a command-line flag, then an environment
variable, then the file, then the default (`--port` over `server.port`, `--data-dir` over
`$LLM_GATEWAY_DATA_DIR` over `store.path`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from msgspec.structs import force_setattr, replace

from collectors.drift.config import DriftConfig
from collectors.intake.config import FeedbackConfig
from gateway.access.config import AuthConfig
from gateway.cache.config import CacheConfig
from gateway.errors import ConfigError
from gateway.experiments.spec import Experiment
from gateway.observability.metrics import MetricsConfig
from gateway.providers import ProviderConfig, zero_config
from gateway.recording.capture import CaptureConfig
from gateway.recording.log import LogConfig
from gateway.recording.pricing import ModelPrice
from gateway.recording.store import Store, Views, migrate
from gateway.recording.store.config import StoreConfig
from gateway.request.attempts import RetryConfig
from gateway.request.routing import Route, default_routes
from gateway.sections import FieldError, Section, Source, close, interpolated, load_yaml, read
from gateway.server.config import ServerConfig

DATA_DIR_ENV = "LLM_GATEWAY_DATA_DIR"


class _Unset(tuple[Route, ...]):
    """The `routes` of a file that names none (the default routes), told from `routes: []`."""


_DEFAULT_ROUTES = _Unset()


class Config(Section, frozen=True):
    keyed: ClassVar[tuple[str, ...]] = ("experiments",)

    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    log: LogConfig = LogConfig()
    capture: CaptureConfig = CaptureConfig()
    metrics: MetricsConfig = MetricsConfig()
    feedback: FeedbackConfig = FeedbackConfig()  # collectors/intake
    drift: DriftConfig = DriftConfig()  # collectors/drift
    auth: AuthConfig = AuthConfig()  # gateway keys and limits
    cache: CacheConfig = CacheConfig()  # the response cache
    providers: dict[str, ProviderConfig] = {}  # none: the zero-config providers
    routes: tuple[Route, ...] = _DEFAULT_ROUTES  # none: each kind's models to its provider
    aliases: dict[str, str] = {}
    retries: RetryConfig = RetryConfig()
    prices: dict[str, ModelPrice] = {}
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    experiments: tuple[Experiment, ...] = ()  # a mapping of name to declaration in YAML

    def __post_init__(self) -> None:
        if not self.providers:
            raise FieldError("providers", "must be a non-empty mapping of name to provider")
        for name, p in self.providers.items():
            force_setattr(p, "name", name)
        if self.routes is _DEFAULT_ROUTES:
            force_setattr(self, "routes", default_routes(self.providers))
        for i, route in enumerate(self.routes):
            for j, t in enumerate(route.targets):
                if t.provider not in self.providers:
                    at = f"routes[{i}].provider" if j == 0 else f"routes[{i}].fallbacks[{j - 1}]"
                    if j and not isinstance(route.fallbacks[j - 1], str):
                        at += ".provider"
                    known = ", ".join(sorted(self.providers)) or "none"
                    msg = f"unknown provider {t.provider!r} (known: {known})"
                    raise FieldError(at, msg, close(t.provider, self.providers))
        matches = [r.match for r in self.routes]
        for name in self.cache.routes:
            if name not in matches:
                msg = f"names no route (the routes' match: {', '.join(matches) or 'none'})"
                raise FieldError(f"cache.routes.{name}", msg, close(name, matches))
        if self.store.kind == "chdb" and self.server.workers > 1:
            raise FieldError(
                "server.workers",
                "the embedded store (store.kind: chdb) is a single-process engine: run one "
                "worker, or use a ClickHouse server (store.kind: clickhouse) for several",
            )
        # The record log's defaults follow the store: nothing to keep when nothing is
        # recorded, and the embedded store's log lives in its data directory.
        store, log = self.store, self.log
        default_dir = str(Path(store.path) / "log") if store.kind == "chdb" else "llm-gateway-log"
        enabled = log.enabled if log.enabled is not None else store.kind != "disabled"
        force_setattr(self, "log", replace(log, enabled=enabled, dir=log.dir or default_dir))

    def migrate(
        self,
        store: Store,
        views: Views,
        cluster: str | None = None,
        step: Callable[[str], None] | None = None,
    ) -> list[int]:
        """Apply pending migrations with the settings this config bakes into the DDL, then
        create or replace `views`; `cluster` overrides `store.cluster`; `step` is told the
        name of each migration and view as it starts."""
        return migrate(
            store,
            self.capture.body_ttl_days,
            cluster or self.store.cluster or None,
            views,
            step,
            session_idle_minutes=self.feedback.session_idle_minutes,
        )


def parse_config(
    data: Any,
    env: dict[str, str] | None = None,
    source: Source | None = None,
    data_dir: str | None = None,
) -> Config:
    """Validate a parsed YAML document into a `Config` (`${ENV}` replaced from `env`). The
    embedded store's directory is, first to last: `data_dir` (the CLI's `--data-dir`),
    `$LLM_GATEWAY_DATA_DIR`, the file's `store.path`, the default."""
    env = dict(os.environ) if env is None else env
    data = interpolated(data if data is not None else {}, env, source)
    if not isinstance(data, dict):
        raise ConfigError("<root>", "must be a mapping", source.name if source else "")
    data = dict(data)
    if data.get("providers") is None:
        data["providers"] = zero_config(env)
    chosen = data_dir or env.get(DATA_DIR_ENV)
    if chosen:  # the one precedence: --data-dir, then the variable, then store.path
        store = data.get("store")
        data["store"] = {**(store if isinstance(store, dict) else {}), "path": chosen}
    return read(data, Config, source=source)


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    data_dir: str | None = None,
) -> Config:
    """Load from `path`, else `$LLM_GATEWAY_CONFIG`, else the zero-config defaults;
    `data_dir` (the CLI's `--data-dir`) is the embedded store's directory, whatever else
    says so."""
    env = dict(os.environ) if env is None else env
    path = path or env.get("LLM_GATEWAY_CONFIG")
    if not path:
        return parse_config({}, env, data_dir=data_dir)
    data, source = load_yaml(path)
    return parse_config(data, env, source, data_dir)


def data_dir_origin(
    cfg: Config, data_dir: str | None, config_file: str | None, env: Mapping[str, str]
) -> str:
    """Which setting chose the embedded store's directory, by the precedence above."""
    if data_dir:
        return "from --data-dir"
    if env.get(DATA_DIR_ENV):
        return f"from ${DATA_DIR_ENV}"
    config_file = config_file or env.get("LLM_GATEWAY_CONFIG")
    if config_file and cfg.store.path != StoreConfig().path:
        return f"from store.path in {config_file}"
    return "the default, under the working directory"


__all__ = ["DATA_DIR_ENV", "Config", "data_dir_origin", "load_config", "parse_config"]
