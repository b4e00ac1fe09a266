"""What a call asks of the cache: `X-Gateway-Cache` and the standard `Cache-Control`
request directives.

    X-Gateway-Cache: on         look up, and store the answer of a miss, even where the
                                config does not cache, and for a sampled call too
    X-Gateway-Cache: off        neither
    X-Gateway-Cache: refresh    skip the lookup, store the new answer (sampled calls too)
    X-Gateway-Cache: read-only  look up; never store
    Cache-Control: no-cache     skip the lookup (the answer is stored: a refresh)
    Cache-Control: no-store     never store
    Cache-Control: max-age=N    serve only an answer stored at most N seconds ago

`Cache-Control` only restricts what the config or `X-Gateway-Cache` allow; other
directives in it are ignored, as HTTP caches do.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import ApiError

MODES = ("on", "off", "refresh", "read-only")


@dataclass(frozen=True, slots=True)
class Directive:
    asked: bool  # X-Gateway-Cache was sent: the call is the cache's business whatever the config
    forced: bool  # on, refresh or read-only: cached even where the config says no, sampled too
    lookup: bool
    store: bool
    max_age: float | None = None  # seconds


NONE = Directive(asked=False, forced=False, lookup=True, store=True)


def bad_directive(message: str) -> ApiError:
    return ApiError(400, message, "invalid_request_error", "invalid_cache_directive")


def directive(mode: str, cache_control: str) -> Directive:
    """The call's directive; a 400 naming the header for a value that means nothing."""
    if not mode and not cache_control:
        return NONE
    lookup = store = True
    if mode:
        mode = mode.strip().lower()
        if mode not in MODES:
            raise bad_directive(f"X-Gateway-Cache takes {', '.join(MODES)}; got {mode[:40]!r}.")
        lookup = mode in ("on", "read-only")
        store = mode in ("on", "refresh")
    max_age = None
    for part in cache_control.split(","):
        name, _, value = part.strip().lower().partition("=")
        if name == "no-cache":
            lookup = False
        elif name == "no-store":
            store = False
        elif name == "max-age":
            value = value.strip('"')
            if not (value.isascii() and value.isdigit()):
                raise bad_directive(
                    f"Cache-Control max-age takes a number of seconds; got {value[:40]!r}."
                )
            age = float(value)
            max_age = age if max_age is None else min(max_age, age)
    asked = bool(mode)
    return Directive(asked, asked and mode != "off", lookup, store, max_age)
