"""The `auth:` section: gateway keys, limits backend, and the browser/Host guard.

```yaml
auth:
  require_key: true             # calls without a valid gateway key get 401
  refresh_seconds: 5            # how often keys are re-read from the store (revoke delay)
  redis_url: redis://redis:6379/0   # shared counters for several replicas; "" = in memory
  redis_failure: open           # open: admit while Redis is unreachable; closed: answer 503
  allowed_origins: [https://app.example.com]
  allowed_hosts: [llm.example.com]
  keys:                         # GitOps keys, besides those created with `llm-gateway keys`
    - name: ci
      key: ${CI_GATEWAY_KEY}    # or hash: sha256:<hex of the secret>
      models: [gpt-4o-mini, "claude-*"]
      rpm: 60
      budget_usd: 10
      budget_period: day
```

`parse_auth` validates it into an `AuthConfig`, raising `ConfigError` that names the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.access.keys import (
    BUDGET_PERIODS,
    GatewayKey,
    Limits,
    hash_secret,
    hint_of,
    looks_like_key,
    valid_hash,
)
from gateway.config import ConfigError

FAILURE_MODES = ("open", "closed")


@dataclass(frozen=True, slots=True)
class AuthConfig:
    require_key: bool = False
    keys: tuple[GatewayKey, ...] = ()  # declared in the config file
    refresh_seconds: float = 5.0
    redis_url: str = ""  # "": counters in this process's memory
    redis_failure: str = "open"
    # Generous: the wait includes this process's own pauses, which are not Redis's fault.
    redis_timeout_ms: float = 1000.0
    allowed_origins: tuple[str, ...] = ()  # browser origins that may call; "*" any
    allowed_hosts: tuple[str, ...] = ()  # Host names besides the always-safe ones; "*" any


class _KeySpec(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    id: str = ""
    key: str = ""
    hash: str = ""
    app: str = ""
    team: str = ""
    models: list[str] = []
    rpm: int = 0
    tpm: int = 0
    concurrency: int = 0
    budget_usd: float = 0.0
    budget_period: str = "month"
    user_rpm: int = 0
    user_tpm: int = 0


_D = AuthConfig()


class _AuthSpec(msgspec.Struct, forbid_unknown_fields=True):
    require_key: bool = _D.require_key
    keys: list[_KeySpec] = []
    refresh_seconds: float = _D.refresh_seconds
    redis_url: str = _D.redis_url
    redis_failure: str = _D.redis_failure
    redis_timeout_ms: float = _D.redis_timeout_ms
    allowed_origins: list[str] = []
    allowed_hosts: list[str] = []


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `([^`]*)`")
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _config_error(e: msgspec.ValidationError, root: str) -> ConfigError:
    m = _AT.match(str(e))
    assert m is not None
    msg, path = m.group("msg"), m.group("path") or ""
    key = root + path
    unknown = _UNKNOWN.match(msg)
    if unknown:
        return ConfigError(f"{key}.{unknown.group(1)}", "unknown key")
    return ConfigError(key, msg[0].lower() + msg[1:])


def limits_from(
    at: str,
    models: list[str] | tuple[str, ...] = (),
    rpm: int = 0,
    tpm: int = 0,
    concurrency: int = 0,
    budget_usd: float = 0.0,
    budget_period: str = "month",
    user_rpm: int = 0,
    user_tpm: int = 0,
) -> Limits:
    """Validated limits; `at` prefixes the key named in errors (the config file and
    `llm-gateway keys create` share these rules)."""
    pre = f"{at}." if at else ""
    numbers = {"rpm": rpm, "tpm": tpm, "concurrency": concurrency, "budget_usd": budget_usd,
               "user_rpm": user_rpm, "user_tpm": user_tpm}  # fmt: skip
    for name, value in numbers.items():
        if value < 0:
            raise ConfigError(pre + name, f"must be >= 0, got {value!r}")
    if budget_period not in BUDGET_PERIODS:
        raise ConfigError(
            pre + "budget_period",
            f"must be one of {', '.join(BUDGET_PERIODS)}; got {budget_period!r}",
        )
    for i, m in enumerate(models):
        if not m or len(m) > 256:
            raise ConfigError(f"{pre}models[{i}]", "must be a model name or glob")
    return Limits(
        models=tuple(models),
        rpm=rpm,
        tpm=tpm,
        concurrency=concurrency,
        budget_usd=float(budget_usd),
        budget_period=budget_period,
        user_rpm=user_rpm,
        user_tpm=user_tpm,
    )


def _key(k: _KeySpec, at: str) -> GatewayKey:
    if not _NAME.fullmatch(k.name):
        raise ConfigError(f"{at}.name", "must be 1-64 characters of [A-Za-z0-9_.:-]")
    if bool(k.key) == bool(k.hash):
        raise ConfigError(at, "needs exactly one of key (the secret, e.g. ${ENV}) or hash")
    if k.key and not (looks_like_key(k.key) and len(k.key) >= 36):
        # Never echo the value: it is a secret.
        raise ConfigError(f"{at}.key", "must be a gateway key (lgw_ and 32+ characters)")
    if k.hash and not valid_hash(k.hash):
        raise ConfigError(f"{at}.hash", "must be sha256:<64 lower-case hex digits>")
    key_id = k.id or f"cfg_{k.name}"
    if not _NAME.fullmatch(key_id):
        raise ConfigError(f"{at}.id", "must be 1-64 characters of [A-Za-z0-9_.:-]")
    return GatewayKey(
        key_id=key_id,
        name=k.name,
        key_hash=hash_secret(k.key) if k.key else k.hash,
        app=k.app[:128],
        team=k.team[:128],
        hint=hint_of(k.key) if k.key else "",
        limits=limits_from(
            at,
            k.models,
            k.rpm,
            k.tpm,
            k.concurrency,
            k.budget_usd,
            k.budget_period,
            k.user_rpm,
            k.user_tpm,
        ),
        source="config",
    )


def parse_auth(data: Any, root: str = "auth") -> AuthConfig:
    """The `auth:` section (already `${ENV}`-interpolated) as an `AuthConfig`."""
    try:
        spec = msgspec.convert(data or {}, _AuthSpec)
    except msgspec.ValidationError as e:
        raise _config_error(e, root) from None
    if spec.redis_failure not in FAILURE_MODES:
        raise ConfigError(
            f"{root}.redis_failure", f"must be open or closed; got {spec.redis_failure!r}"
        )
    if spec.redis_url and not spec.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{root}.redis_url", "must be a redis://, rediss:// or unix:// URL")
    if spec.refresh_seconds < 0.1:
        raise ConfigError(f"{root}.refresh_seconds", "must be >= 0.1")
    if spec.redis_timeout_ms <= 0:
        raise ConfigError(f"{root}.redis_timeout_ms", "must be > 0")
    for i, o in enumerate(spec.allowed_origins):
        if o != "*" and not o.startswith(("http://", "https://")):
            raise ConfigError(
                f"{root}.allowed_origins[{i}]", "must be an origin like https://app.example"
            )
    keys = [_key(k, f"{root}.keys[{i}]") for i, k in enumerate(spec.keys)]
    seen: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k.key_id in seen:
            raise ConfigError(f"{root}.keys[{i}].id", f"duplicates keys[{seen[k.key_id]}]")
        seen[k.key_id] = i
    return AuthConfig(
        require_key=spec.require_key,
        keys=tuple(keys),
        refresh_seconds=spec.refresh_seconds,
        redis_url=spec.redis_url,
        redis_failure=spec.redis_failure,
        redis_timeout_ms=spec.redis_timeout_ms,
        allowed_origins=tuple(o.rstrip("/").lower() for o in spec.allowed_origins),
        allowed_hosts=tuple(h.lower() for h in spec.allowed_hosts),
    )
