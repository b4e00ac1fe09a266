"""The response cache as the request path sees it: `plan` a call (its key and what it may
do), `lookup` a stored answer, `finish` a miss (store its answer when it was whole and
good). The answers live in this process (LRU by bytes) and, with Redis, in Redis too,
this process keeping a copy of what it reads for `local_ttl_s`.

    plan = cache.plan(ex, route)          # None: the cache has no part in this call
    entry = await cache.lookup(plan)      # sets plan.status: HIT, MISS, BYPASS or REFRESH
    ... replay(ex, entry) on a hit; else forward, ex.fill = plan, and then (at a
    stream's terminal event, else after the answer; once):
    cache.finish(ex)
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING

import msgspec

from gateway.cache.config import CacheConfig, Settings
from gateway.cache.directives import directive
from gateway.cache.entry import Entry, decode, encode
from gateway.cache.key import ANSWER_HEADERS, canonical, digest, sampled
from gateway.cache.memory import MemoryStore
from gateway.cache.plan import BYPASS, HIT, MISS, REFRESH, Plan
from gateway.cache.shared import SharedStore
from gateway.errors import MissingCredentials
from gateway.providers.translate import translation_for
from gateway.providers.wire import WIRE_APIS
from gateway.recording.record import Outcome

if TYPE_CHECKING:
    from gateway.access.scripts import Mode
    from gateway.request.exchange import Exchange

_decode = msgspec.json.decode
# Answers that are never stored: the model refused (OpenAI's `refusal` text or content
# part; Anthropic's `refusal` stop reason is `content_filter` in the record).
_REFUSAL = re.compile(rb'"refusal"\s*:\s*"|"type"\s*:\s*"refusal"')
_NOT_STORED_FINISH = frozenset({"content_filter", "error"})
_SCOPES = {"key": "k:", "app": "a:", "global": "g"}


class ResponseCache:
    def __init__(self, cfg: CacheConfig, redis_url: str = "", redis_mode: Mode = "auto") -> None:
        self.cfg = cfg
        self.memory = MemoryStore(cfg.max_bytes) if cfg.max_bytes else None
        self.shared = (
            SharedStore(redis_url, cfg.redis_timeout_ms / 1000.0, redis_mode) if redis_url else None
        )
        self._settings: dict[tuple[str, str], Settings] = {}
        self._storing: set[asyncio.Task[None]] = set()

    def settings(self, route: str, app: str) -> Settings:
        """What applies to a call of this route and app (apps without an override share)."""
        key = (route, app if app in self.cfg.apps else "")
        s = self._settings.get(key)
        if s is None:
            s = self._settings[key] = self.cfg.settings(*key)
        return s

    # -- before forwarding ---------------------------------------------------------------
    def plan(self, ex: Exchange, route: str) -> Plan | None:
        """The call's plan; None when the cache has no part in it (not enabled for it, or an
        endpoint it does not cache, and not asked by header). A header that means nothing
        is a 400."""
        headers, rec, payload, wire = ex.headers, ex.rec, ex.payload, ex.wire
        d = directive(headers.cache, headers.cache_control)
        if payload is None or wire.path not in WIRE_APIS:  # the models list, other endpoints
            return Plan() if d.asked else None
        s = self.settings(route, rec.app)
        if not (s.enabled or d.asked):
            return None
        plan = Plan()
        if (
            (d.asked and not d.forced)  # X-Gateway-Cache: off
            or not (d.lookup or d.store)
            or (sampled(wire.operation, payload) and not (s.sampled or d.forced))
        ):
            return plan
        key = self._key(ex, payload, s.scope)
        if key is None:
            return plan
        return Plan(
            MISS if d.lookup else REFRESH, key, d.lookup, d.store, d.max_age, s.ttl_s,
            self.cfg.max_entry_bytes,
        )  # fmt: skip

    def _key(self, ex: Exchange, payload: dict[str, object], scope: str) -> str | None:
        hop, headers = ex.hops[0], ex.headers
        provider = hop.provider
        creds = b""
        if provider.auth_headers is None:  # passthrough: the caller's credential is a scope
            try:
                sent = provider.credentials(headers.authorization, headers.api_key,
                                            headers.x_api_key)  # fmt: skip
            except MissingCredentials:
                return None  # the call will be refused
            creds = b"\n".join(v for _, v in sent)
        translation = translation_for(ex.wire, provider)
        if translation is not None:  # the upstream's request: dialects share an answer
            body = _decode(translation.request(payload, hop.model, provider.cfg))
            path = translation.path(False)
        else:
            body = payload if payload.get("model") == hop.model else {**payload, "model": hop.model}
            path = ex.wire.path
        versions = provider.version_header(headers.anthropic_version)
        picked = sorted(n + b":" + v for n, v in (*headers.forward, *versions)
                        if n in ANSWER_HEADERS)  # fmt: skip
        rec = ex.rec
        who = {"key": rec.key_id, "app": rec.app, "global": ""}[scope]
        return digest(
            (_SCOPES[scope] + who).encode(), creds, provider.name.encode(), path.encode(),
            hop.model.encode(), ex.query.encode(), b"\n".join(picked),
            canonical(body, provider.dialect),
        )  # fmt: skip

    async def lookup(self, plan: Plan) -> Entry | None:
        """The stored answer to serve (None: a miss); `plan.status` says what happened.
        While Redis is unreachable the cache is off: BYPASS, and nothing is stored."""
        shared, memory = self.shared, self.memory
        if shared is not None and not await shared.reachable():
            plan.bypass()
            return None
        if not plan.lookup:
            return None
        now = time.time()
        entry = memory.get(plan.key, now) if memory is not None else None
        if entry is None and shared is not None:
            reachable, data = await shared.get(plan.key)
            if not reachable:
                plan.bypass()
                return None
            entry = decode(data) if data else None
            if entry is not None and memory is not None and entry.expires_at > now:
                memory.put(plan.key, entry, min(entry.expires_at, now + self.cfg.local_ttl_s))
        if entry is None or entry.expires_at <= now:
            return None
        if plan.max_age is not None and now - entry.stored_at > plan.max_age:
            return None
        plan.status = HIT
        return entry

    # -- after the answer ------------------------------------------------------------------
    def finish(self, ex: Exchange) -> None:
        """Store the answer of a miss, if it was whole and good: a success (not an error,
        not a refusal, not cut short), from the route's first target (a fallback's answer
        is not what the route serves), within `max_entry_bytes`."""
        plan, rec = ex.fill, ex.rec
        ex.fill = None  # once: a stream's answer is stored at its terminal event
        if plan is None or plan.status == BYPASS or plan.too_big or not plan.chunks:
            return
        if rec.outcome != Outcome.OK or rec.status_code != 200 or ex.hop is not ex.hops[0]:
            return
        if rec.finish_reason in _NOT_STORED_FINISH or (plan.stream and not rec.finish_reason):
            return  # a stream that ended without saying why was cut short
        if _REFUSAL.search(b"".join(plan.chunks)):
            return
        now = time.time()
        entry = Entry(now, now + plan.ttl, plan.stream, plan.content_type, plan.chunks)
        self.put(plan.key, entry)

    def put(self, key: str, entry: Entry) -> None:
        shared = self.shared
        if self.memory is not None:
            until = entry.expires_at
            if shared is not None:
                until = min(until, entry.stored_at + self.cfg.local_ttl_s)
            self.memory.put(key, entry, until)
        if shared is not None:
            ttl = entry.expires_at - entry.stored_at
            task = asyncio.get_running_loop().create_task(shared.put(key, encode(entry), ttl))
            self._storing.add(task)  # held: the loop keeps only weak references to tasks
            task.add_done_callback(self._storing.discard)

    async def close(self) -> None:
        if self._storing:
            await asyncio.gather(*self._storing, return_exceptions=True)
        if self.shared is not None:
            await self.shared.close()


__all__ = ["BYPASS", "HIT", "MISS", "REFRESH", "ResponseCache"]
