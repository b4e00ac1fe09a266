"""The response cache: an answer stored once serves the same call again, in the caller's
scope, without the upstream (README "Caching").

    config.py          the `cache:` section (defaults, per-route and per-app overrides)
    directives.py      X-Gateway-Cache and Cache-Control, per call
    key.py             what determines an answer, in canonical form
    plan.py            one call's dealings with the cache
    response_cache.py  plan, look up, store: what the request path calls
    memory.py          the in-process store (LRU by bytes)
    shared.py          the Redis tier, shared by replicas; an outage turns the cache off
    entry.py           a stored answer
    replay.py          a stored answer served in the client's dialect and shape
    shapes/            a stream gathered into a body, a body told as a stream
"""

from __future__ import annotations

from gateway.cache.config import CacheConfig
from gateway.cache.plan import BYPASS, HIT, MISS, REFRESH, Plan
from gateway.cache.response_cache import ResponseCache

__all__ = ["BYPASS", "HIT", "MISS", "REFRESH", "CacheConfig", "Plan", "ResponseCache"]
