"""The Redis tier: entries every replica shares (one server or a Cluster, through the same
client as the shared limits, `gateway/access/scripts.py`).

An outage turns the cache off, never a call: a failed read or write (unreachable, no
answer within `cache.redis_timeout_ms`, an error reply) is counted and logged (at most
every 10 s), and Redis is then left alone for a second, so that a dead server does not
add a timeout to every call. While it is off, calls go upstream and nothing is stored,
not even the copies a replica keeps of what it read: `reachable` asks Redis (PING) when
it has not answered for a second, so that an outage is noticed while calls are served
from those copies too.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from gateway.errors import LimiterUnavailable

if TYPE_CHECKING:
    from gateway.access.scripts import Mode

log = logging.getLogger("gateway.cache")

PAUSE_S = 1.0  # after a failure, Redis is not asked for this long
CHECK_S = 1.0  # Redis is known to be up for this long after it answered
_FAILURES = (LimiterUnavailable, OSError, TimeoutError)


class SharedStore:
    def __init__(
        self, url: str, timeout_s: float, mode: Mode = "auto", prefix: str = "lgw:cache:"
    ) -> None:
        # redis-py is imported by a gateway that uses Redis, not by every gateway.
        from gateway.access.scripts import RedisScripts

        self._client = RedisScripts(url, timeout_s, mode)
        self.prefix = prefix
        self.failures = 0
        self._down_until = 0.0
        self._ok_at = -CHECK_S  # when Redis last answered (monotonic)
        self._logged_at = 0.0

    @property
    def up(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, e: BaseException, what: str) -> None:
        self.failures += 1
        now = time.monotonic()
        self._down_until = now + PAUSE_S
        if now - self._logged_at > 10.0:
            self._logged_at = now
            log.error(
                "redis unreachable: the response cache is off until it answers",
                extra={"during": what, "error": f"{type(e).__name__}: {e}"[:300],
                       "failures": self.failures},
            )  # fmt: skip

    async def reachable(self) -> bool:
        """Whether the cache is on: Redis answered within the last second, or answers now."""
        if not self.up:
            return False
        if time.monotonic() - self._ok_at < CHECK_S:
            return True
        try:
            await self._client.call("PING")
        except _FAILURES as e:
            self._failed(e, "ping")
            return False
        self._ok_at = time.monotonic()
        return True

    async def get(self, key: str) -> tuple[bool, bytes | None]:
        """(reachable, the stored bytes or None)."""
        if not self.up:
            return False, None
        try:
            value = await self._client.call("GET", self.prefix + key)
        except _FAILURES as e:
            self._failed(e, "get")
            return False, None
        self._ok_at = time.monotonic()
        return True, value if isinstance(value, bytes) else None

    async def put(self, key: str, data: bytes, ttl_s: float) -> None:
        if not self.up:
            return
        try:
            await self._client.call("SET", self.prefix + key, data, "PX", max(int(ttl_s * 1000), 1))
        except _FAILURES as e:
            self._failed(e, "put")
            return
        self._ok_at = time.monotonic()

    async def close(self) -> None:
        await self._client.close()
