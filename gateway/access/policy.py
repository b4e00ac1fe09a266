"""What a key's limits mean, independently of where the counters live.

- Models: exact names and globs (`gpt-4o*`, `claude-*`), matched against the model after
  aliases, i.e. the one actually called, so an alias cannot smuggle in a refused model.
- RPM and TPM are token buckets holding a minute's allowance and refilling continuously:
  a burst of up to the limit, then the limit's pace. A call takes 1 request and its
  estimated input tokens; after the call the bucket is charged the difference to the
  reported input + output tokens (it may go below zero: the next calls then wait).
- Budgets are USD per UTC day or month, from the same pricing as the rows.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import time
from datetime import UTC, datetime

from gateway.access.keys import Limits

_GLOB = frozenset("*?[")


class ModelRule:
    """Whether a model is allowed by a key's `models` list (empty: all)."""

    __slots__ = ("_exact", "_glob", "open")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.open = not patterns
        self._exact = frozenset(p for p in patterns if not _GLOB & set(p))
        globs = [fnmatch.translate(p) for p in patterns if _GLOB & set(p)]
        self._glob = re.compile("|".join(globs)) if globs else None

    def allows(self, model: str) -> bool:
        if self.open or model in self._exact:
            return True
        return self._glob is not None and self._glob.match(model) is not None


class Bucket:
    """A token bucket of `capacity` refilled at `capacity` per minute (`bucket()` gives the
    one of a capacity, made once)."""

    __slots__ = ("capacity", "full", "rate")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.full = float(capacity)
        self.rate = capacity / 60.0  # per second

    def refill(self, level: float, elapsed: float) -> float:
        level += elapsed * self.rate if elapsed > 0 else 0.0
        return level if level < self.full else self.full

    def level_at(self, level: float, since: float, now: float) -> float:
        """The level at `now` of a bucket left at `level` at `since` (0: never drawn from,
        so full). `refill`'s arithmetic, inline: it runs for every limited call."""
        if not since:
            return self.full
        if now > since:
            level += (now - since) * self.rate
        return level if level < self.full else self.full

    def need(self, amount: int) -> float:
        """What the level must be to admit `amount`: a call bigger than the whole bucket
        is admitted when it is full (and leaves it in debt), never refused forever."""
        return amount if amount < self.full else self.full

    def wait(self, level: float, amount: int) -> float:
        """Seconds until `amount` could be admitted."""
        return max(self.need(amount) - level, 0.0) / self.rate


# `Bucket` in Lua, for the Redis scripts (prepended to each): a bucket is a hash of its
# level `l` at time `t`, expiring when it would be full again.
BUCKET_LUA = """
local function bucket_level(key, cap, now)
  local st = redis.call('HMGET', key, 'l', 't')
  if not st[1] then return cap end
  return math.min(cap, tonumber(st[1]) + math.max(now - tonumber(st[2]), 0) * cap / 60.0)
end
local function bucket_store(key, cap, level, now)
  redis.call('HSET', key, 'l', tostring(level), 't', tostring(now))
  redis.call('EXPIRE', key, math.ceil((cap - level) * 60 / cap) + 1)
end
"""


@functools.lru_cache(maxsize=1024)
def bucket(capacity: int) -> Bucket:
    return Bucket(capacity)


def period_id(period: str, now: float | None = None) -> str:
    """The budget window a moment falls in: `d20261204` or `m202612` (UTC)."""
    t = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return t.strftime("d%Y%m%d") if period == "day" else t.strftime("m%Y%m")


def period_start_sql(period: str) -> str:
    """The same window's start as ClickHouse SQL, for seeding spend from llm_calls."""
    return "toStartOfDay(now('UTC'))" if period == "day" else "toStartOfMonth(now('UTC'))"


def period_seconds_left(period: str, now: float | None = None) -> float:
    t = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    if period == "day":
        end = t.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() + 86400
    else:
        nxt = (t.year + t.month // 12, t.month % 12 + 1)
        end = datetime(nxt[0], nxt[1], 1, tzinfo=UTC).timestamp()
    return end - t.timestamp()


def has_budget(limits: Limits) -> bool:
    return limits.budget_usd > 0
