"""The `cache:` section: the response cache's defaults, and overrides per route and per app.

```yaml
cache:
  enabled: true          # calls without an X-Gateway-Cache header are cached (default false)
  ttl_s: 3600            # how long an answer is served
  scope: key             # key (default) | app | global: whose calls share answers
  sampled: false         # also calls with a temperature above 0 (or none: the APIs default to 1)
  max_bytes: 67108864    # the in-process store, least recently used evicted first
  max_entry_bytes: 1048576  # a larger answer is not stored
  redis_url: ""          # default: auth.redis_url; set, every replica shares the answers
  routes:                # by a route's `match`, as written under routes:
    "gpt-4o*": {ttl_s: 600}
  apps:                  # by app (X-Gateway-App, or the app of the caller's gateway key)
    search: {enabled: true, scope: app, sampled: true}
```

An app's override wins over its route's, which wins over the defaults, key by key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from msgspec import Meta

from gateway.sections import Count, FieldError, Positive, Section

Scope = Literal["key", "app", "global"]
Seconds = Annotated[float, Meta(gt=0)]


class CacheRule(Section, frozen=True):
    """An override under `cache.routes` or `cache.apps`: the keys it sets, the rest
    inherited."""

    enabled: bool | None = None
    ttl_s: Seconds | None = None
    scope: Scope | None = None
    sampled: bool | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """What applies to one call, overrides resolved."""

    enabled: bool
    ttl_s: float
    scope: Scope
    sampled: bool


class CacheConfig(Section, frozen=True):
    enabled: bool = False
    ttl_s: Seconds = 3600.0
    scope: Scope = "key"
    sampled: bool = False
    max_bytes: Count = 64 * 1024 * 1024
    max_entry_bytes: Positive = 1024 * 1024
    redis_url: str = ""  # "": auth.redis_url, if any
    # A read from Redis slower than this is a failure: the cache is off for a moment.
    redis_timeout_ms: Seconds = 250.0
    # With Redis, how long a replica keeps its own copy of an answer (so that a refresh on
    # another replica reaches it within this).
    local_ttl_s: Seconds = 60.0
    routes: dict[str, CacheRule] = {}
    apps: dict[str, CacheRule] = {}

    def __post_init__(self) -> None:
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise FieldError("redis_url", "must be a redis://, rediss:// or unix:// URL")

    def settings(self, route: str, app: str) -> Settings:
        out = Settings(self.enabled, self.ttl_s, self.scope, self.sampled)
        for rule in (self.routes.get(route), self.apps.get(app)):
            if rule is not None:
                out = Settings(
                    out.enabled if rule.enabled is None else rule.enabled,
                    out.ttl_s if rule.ttl_s is None else rule.ttl_s,
                    out.scope if rule.scope is None else rule.scope,
                    out.sampled if rule.sampled is None else rule.sampled,
                )
        return out
