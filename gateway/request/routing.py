"""Model name → ordered list of (provider, upstream model) to try.

Aliases resolve first; then the first route whose `match` equals the name or, as a glob,
matches it. Results are cached per name (bounded: model names come from clients).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from gateway.config import Config
from gateway.providers import Provider

GLOB_CHARS = frozenset("*?[")
_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Hop:
    provider: Provider
    model: str  # the model name sent upstream


@dataclass(frozen=True, slots=True)
class Resolved:
    model: str  # after aliases
    hops: tuple[Hop, ...]


def exact_names(config: Config) -> set[str]:
    """Model names the config itself spells out: exact route matches and aliases."""
    exact = {r.match for r in config.routes if not GLOB_CHARS & set(r.match)}
    return exact | set(config.aliases) | set(config.aliases.values())


class Router:
    def __init__(self, config: Config, providers: dict[str, Provider]) -> None:
        self._aliases = dict(config.aliases)
        self._routes: list[
            tuple[str, re.Pattern[str] | None, tuple[tuple[Provider, str | None], ...]]
        ] = []
        for route in config.routes:
            pattern = (
                re.compile(fnmatch.translate(route.match))
                if GLOB_CHARS & set(route.match)
                else None
            )
            targets = tuple((providers[t.provider], t.model) for t in route.targets)
            self._routes.append((route.match, pattern, targets))
        self._cache: dict[str, Resolved | None] = {}
        # Calls without a model (GET /v1/models, unknown endpoints) go where "*" goes.
        self.default = self._resolve("*") or (
            Resolved("", (Hop(next(iter(providers.values())), ""),)) if providers else None
        )

    def _resolve(self, name: str) -> Resolved | None:
        model = name
        for _ in range(8):  # alias chains, bounded against cycles
            nxt = self._aliases.get(model)
            if nxt is None:
                break
            model = nxt
        for match, pattern, targets in self._routes:
            if pattern.match(model) is not None if pattern else match == model:
                hops = tuple(Hop(p, m or model) for p, m in targets)
                return Resolved(model, hops)
        return None

    def resolve(self, name: str) -> Resolved | None:
        try:
            return self._cache[name]
        except KeyError:
            pass
        resolved = self._resolve(name)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[name] = resolved
        return resolved
