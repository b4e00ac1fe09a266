"""Who may send feedback: server keys, browser-safe publishable keys with a CORS origin
allowlist, and a per key and client-IP rate limit (token bucket)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from collectors.intake.config import FeedbackKey
from gateway.access import token_matches


@dataclass(frozen=True, slots=True)
class Denied:
    status: int
    code: str
    message: str


class KeyRing:
    def __init__(self, keys: tuple[FeedbackKey, ...]) -> None:
        self.keys = keys
        self.origins = {o for k in keys for o in k.origins}

    @property
    def open(self) -> bool:
        """No keys configured: server-side senders need none (browsers still need one)."""
        return not self.keys

    def find(self, presented: str) -> FeedbackKey | None:
        found = None
        for k in self.keys:  # constant time per key: no early exit on a near match
            if token_matches(presented, k.key):
                found = k
        return found

    def origin_allowed(self, origin: str, key: FeedbackKey | None) -> bool:
        origins = key.origins if key is not None else tuple(self.origins)
        return "*" in origins or origin.rstrip("/") in origins

    def check(self, presented: str, origin: str) -> FeedbackKey | Denied | None:
        """The key to act under (None: an open gateway's server-side sender) or a refusal."""
        key = self.find(presented) if presented else None
        if presented and key is None:
            return Denied(401, "invalid_api_key", "Unknown feedback key.")
        if origin:
            # A browser: only a publishable (or server) key whose origins list this origin.
            if key is None:
                return Denied(401, "missing_api_key", "Browsers need a publishable feedback key.")
            if not self.origin_allowed(origin, key):
                return Denied(403, "origin_not_allowed", f"Origin {origin} is not allowed.")
            return key
        if key is None and not self.open:
            return Denied(401, "missing_api_key", "A feedback key is required.")
        if key is not None and key.kind == "publishable":
            # A publishable key is public (it ships in a web page): it proves nothing without
            # the browser's Origin, which is what binds it to the sites it was issued for.
            return Denied(403, "origin_required", "A publishable key is only accepted from "
                          "a browser: the request has no Origin header.")  # fmt: skip
        return key


class RateLimiter:
    """Token buckets per (key, client IP): `rate` events a minute, bursts up to `rate`."""

    def __init__(self, max_buckets: int = 100_000) -> None:
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self.max_buckets = max_buckets

    def take(self, key: str, ip: str, rate_per_minute: int, n: int = 1) -> int:
        """0 when allowed, else the seconds to wait before retrying."""
        now = time.monotonic()
        per_s = rate_per_minute / 60.0
        tokens, last = self._buckets.pop((key, ip), (float(rate_per_minute), now))
        tokens = min(float(rate_per_minute), tokens + (now - last) * per_s)
        if tokens >= n:
            self._buckets[(key, ip)] = (tokens - n, now)
            wait = 0
        else:
            self._buckets[(key, ip)] = (tokens, now)
            wait = max(1, math.ceil((n - tokens) / per_s))
        while len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)  # forget the least recently seen client
        return wait
