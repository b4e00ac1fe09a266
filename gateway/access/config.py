"""The `auth:` section: gateway keys, limits backend, and the browser/Host guard.

```yaml
auth:
  require_key: true             # calls without a valid gateway key get 401
  refresh_seconds: 5            # how often keys are re-read from the store (revoke delay)
  redis_url: redis://redis:6379/0   # shared counters for several replicas; "" = in memory
  redis_failure: open           # open: admit while Redis is unreachable; closed: answer 503
  redis_leases: true            # busy keys admitted from shares of their limits (lease.py)
  allowed_origins: [https://app.example.com]
  allowed_hosts: [llm.example.com]
  reserve:                      # what a call holds of a budget and a TPM limit until it ends
    output_tokens: 1024         # output reserved when a call names no max_tokens
    models: {"claude-*": 4096}  # the same per model (exact name or glob)
  keys:                         # GitOps keys, besides those created with `llm-gateway keys`
    - name: ci
      key: ${CI_GATEWAY_KEY}    # or hash: sha256:<hex of the secret>
      models: [gpt-4o-mini, "claude-*"]
      rpm: 60
      budget_usd: 10
      budget_period: day
```
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from msgspec import Meta
from msgspec.structs import force_setattr

from gateway.access.keys import GatewayKey, Limits, hash_secret, hint_of, looks_like_key, valid_hash
from gateway.access.reserve import ReserveConfig
from gateway.sections import FieldError, Section, read

_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_NAMED = "must be 1-64 characters of [A-Za-z0-9_.:-]"


class DeclaredKey(Limits, frozen=True, kw_only=True):
    """A key declared in the config file, by its secret or its hash; the secret is hashed
    when read and not kept."""

    name: str
    id: str = ""  # default: cfg_<name>
    key: str = ""  # the secret (lgw_...), usually ${ENV}
    hash: str = ""  # or its hash: sha256:<hex>
    app: str = ""
    team: str = ""
    hint: str = ""  # set from the secret

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise FieldError("name", _NAMED)
        if bool(self.key) == bool(self.hash):
            raise FieldError("", "needs exactly one of key (the secret, e.g. ${ENV}) or hash")
        if self.key and not (looks_like_key(self.key) and len(self.key) >= 36):
            # Never echo the value: it is a secret.
            raise FieldError("key", "must be a gateway key (lgw_ and 32+ characters)")
        if self.hash and not valid_hash(self.hash):
            raise FieldError("hash", "must be sha256:<64 lower-case hex digits>")
        if self.id and not _NAME.fullmatch(self.id):
            raise FieldError("id", _NAMED)
        if self.key:
            force_setattr(self, "hint", hint_of(self.key))
            force_setattr(self, "hash", hash_secret(self.key))
            force_setattr(self, "key", "")

    @property
    def key_id(self) -> str:
        return self.id or f"cfg_{self.name}"

    @property
    def key_hash(self) -> str:
        return self.hash

    @property
    def limits(self) -> Limits:
        return self.only()

    def gateway_key(self) -> GatewayKey:
        return GatewayKey(
            key_id=self.key_id,
            name=self.name,
            key_hash=self.hash,
            app=self.app[:128],
            team=self.team[:128],
            hint=self.hint,
            limits=self.limits,
            source="config",
        )


class AuthConfig(Section, frozen=True):
    require_key: bool = False
    keys: tuple[DeclaredKey, ...] = ()  # declared in the config file
    refresh_seconds: Annotated[float, Meta(ge=0.1)] = 5.0
    redis_url: str = ""  # "": counters in this process's memory
    redis_failure: Literal["open", "closed"] = "open"
    # a Redis Cluster or one server: asked of the server at the first command unless set
    redis_mode: Literal["auto", "standalone", "cluster"] = "auto"
    # Generous: the wait includes this process's own pauses, which are not Redis's fault.
    redis_timeout_ms: Annotated[float, Meta(gt=0)] = 1000.0
    # Busy keys with large limits admitted from shares taken once a second (lease.py);
    # false: every call of every key checked in Redis.
    redis_leases: bool = True
    allowed_origins: tuple[str, ...] = ()  # browser origins that may call; "*" any
    allowed_hosts: tuple[str, ...] = ()  # Host names besides the always-safe ones; "*" any
    reserve: ReserveConfig = ReserveConfig()  # what a call reserves of budgets and TPM

    def __post_init__(self) -> None:
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise FieldError("redis_url", "must be a redis://, rediss:// or unix:// URL")
        for i, o in enumerate(self.allowed_origins):
            if o != "*" and not o.startswith(("http://", "https://")):
                raise FieldError(
                    f"allowed_origins[{i}]", "must be an origin like https://app.example"
                )
        seen: dict[str, int] = {}
        for i, k in enumerate(self.keys):
            if k.key_id in seen:
                raise FieldError(f"keys[{i}].id", f"duplicates keys[{seen[k.key_id]}]")
            seen[k.key_id] = i
        force_setattr(
            self, "allowed_origins", tuple(o.rstrip("/").lower() for o in self.allowed_origins)
        )
        force_setattr(self, "allowed_hosts", tuple(h.lower() for h in self.allowed_hosts))


def parse_auth(data: Any) -> AuthConfig:
    """The `auth:` section (already `${ENV}`-interpolated) alone."""
    return read(data, AuthConfig, ("auth",))


def limits_from(at: str, **limits: Any) -> Limits:
    """Validated limits; `at` prefixes the key named in errors (the config file, `llm-gateway
    keys create` and the key table share these rules)."""
    return read(limits, Limits, (at,) if at else ())
