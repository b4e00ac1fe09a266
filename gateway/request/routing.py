"""Model name → ordered list of (provider, upstream model) to try.

Aliases resolve first; then the first route whose `match` equals the name or, as a glob,
matches it. Results are cached per name (bounded: model names come from clients).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from gateway.providers import KINDS, Provider, ProviderConfig
from gateway.sections import Section

GLOB_CHARS = frozenset("*?[")
_CACHE_LIMIT = 4096


class Target(Section, frozen=True):
    provider: str
    model: str | None = None  # rewrite the model name sent upstream; None keeps it


class Route(Section, frozen=True):
    """A `routes:` entry: calls for `match` go to `provider`, then to each fallback."""

    match: str  # exact model name or glob pattern
    provider: str
    model: str | None = None
    fallbacks: tuple[str | Target, ...] = ()  # tried in order; a name or {provider, model}

    @property
    def targets(self) -> tuple[Target, ...]:
        rest = (Target(provider=f) if isinstance(f, str) else f for f in self.fallbacks)
        return (Target(provider=self.provider, model=self.model), *rest)


def default_routes(providers: Mapping[str, ProviderConfig]) -> tuple[Route, ...]:
    """Each kind's own model names (e.g. claude*) to its first provider; everything else to
    the first provider of a kind without such names, else to the first one routed."""
    routes: list[Route] = []
    catch_all = None
    for name, p in providers.items():
        models = KINDS[p.kind].default_models
        if models and not any(r.match == models for r in routes):
            routes.append(Route(match=models, provider=name))
        elif not models and catch_all is None:
            catch_all = name
    if catch_all is None and routes:
        catch_all = routes[0].provider
    if catch_all is not None:
        routes.append(Route(match="*", provider=catch_all))
    return tuple(routes)


@dataclass(frozen=True, slots=True)
class Hop:
    provider: Provider
    model: str  # the model name sent upstream


@dataclass(frozen=True, slots=True)
class Resolved:
    model: str  # after aliases
    hops: tuple[Hop, ...]
    route: str = ""  # the `match` of the route that took the call


class Routing(Protocol):
    """What routing reads of the config."""

    @property
    def routes(self) -> tuple[Route, ...]: ...
    @property
    def aliases(self) -> Mapping[str, str]: ...


def exact_names(config: Routing) -> set[str]:
    """Model names the config itself spells out: exact route matches, the models routes
    rewrite to, and aliases."""
    exact = {r.match for r in config.routes if not GLOB_CHARS & set(r.match)}
    exact |= {t.model for r in config.routes for t in r.targets if t.model}
    return exact | set(config.aliases) | set(config.aliases.values())


class Router:
    def __init__(self, config: Routing, providers: dict[str, Provider]) -> None:
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
                return Resolved(model, hops, match)
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
