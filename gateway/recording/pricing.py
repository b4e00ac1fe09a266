"""Cost of a call in USD: per-model overrides from config, else `genai-prices`.

Unknown price → `None` (stored as NULL), never a made-up zero. genai-prices' own
calculation costs ~80 µs a call (Decimal arithmetic); the writer prices every row, so for
each (provider, model, day) we probe the price once, and when it is linear in the token
counts (no tiers) we keep its coefficients and price rows with a few multiplications. The
probe checks itself against genai-prices on a sample point and falls back to the full
calculation for tiered prices.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from genai_prices import Usage
from genai_prices.data_snapshot import get_snapshot

from gateway.sections import Amount, FieldError, Section

log = logging.getLogger("gateway.recording.pricing")

PRICE_SOURCE_CONFIG = "config"
PRICE_SOURCE_GENAI = "genai-prices"

_M = 1_000_000


class ModelPrice(Section, frozen=True):
    """USD per million tokens, for self-hosted or negotiated prices (`prices:` entries)."""

    input: Amount = math.nan  # both input and output are required
    output: Amount = math.nan
    cache_read: Amount | None = None  # default: the input price
    cache_write: Amount | None = None

    def __post_init__(self) -> None:
        if math.isnan(self.input) or math.isnan(self.output):
            raise FieldError("", "needs input and output (USD per million tokens)")


@dataclass(frozen=True, slots=True)
class Tokens:
    input: int  # all input, cached included
    output: int  # reasoning included
    cache_read: int = 0
    cache_write: int = 0


def _override_cost(p: ModelPrice, t: Tokens) -> float:
    cache_read_price = p.input if p.cache_read is None else p.cache_read
    cache_write_price = p.input if p.cache_write is None else p.cache_write
    uncached = max(t.input - t.cache_read - t.cache_write, 0)
    return (
        uncached * p.input
        + t.cache_read * cache_read_price
        + t.cache_write * cache_write_price
        + t.output * p.output
    ) / _M


def _usage(t: Tokens) -> Usage:
    return Usage(
        input_tokens=t.input,
        output_tokens=t.output,
        cache_read_tokens=t.cache_read,
        cache_write_tokens=t.cache_write,
    )


PriceFn = Callable[[Tokens], float]


def _linear_or_exact(model_price: Any) -> PriceFn:
    def exact(t: Tokens) -> float:
        return float(model_price.calc_price(_usage(t))["total_price"])

    try:
        c0 = exact(Tokens(0, 0))
        ci = exact(Tokens(_M, 0)) - c0
        co = exact(Tokens(0, _M)) - c0
        cr = exact(Tokens(_M, 0, cache_read=_M)) - c0
        cw = exact(Tokens(_M, 0, cache_write=_M)) - c0
    except Exception:  # prices whose units need more than token counts
        return exact

    def linear(t: Tokens) -> float:
        uncached = max(t.input - t.cache_read - t.cache_write, 0)
        return c0 + (uncached * ci + t.cache_read * cr + t.cache_write * cw + t.output * co) / _M

    # Tiered prices (e.g. long-context surcharges) are not linear: detect and keep exact.
    for probe in (Tokens(1_234_567, 76_543, 400_000, 0), Tokens(123, 45, 0, 17)):
        if abs(linear(probe) - exact(probe)) > 1e-12 + 1e-9 * exact(probe):
            return exact
    return linear


class PricedCall(Protocol):
    """What pricing reads of a call (a CallRecord, or the writer's view of its line)."""

    provider: str
    request_model: str
    upstream_model: str
    response_model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    started_at: float


class Pricer:
    """Prices call records; cheap after the first call for a model on a given day."""

    def __init__(self, overrides: dict[str, ModelPrice] | None = None) -> None:
        self._overrides = overrides or {}
        self._fns: dict[tuple[str, str, int], PriceFn | None] = {}
        self._unknown_logged: set[tuple[str, str]] = set()

    def _fn(self, provider_id: str, model: str, day: int) -> PriceFn | None:
        key = (provider_id, model, day)
        if key in self._fns:
            return self._fns[key]
        fn: PriceFn | None
        try:
            _, info = get_snapshot().find_provider_model(model, None, provider_id or None, None)
            fn = _linear_or_exact(info.get_prices(datetime.fromtimestamp(day * 86400, UTC)))
        except (LookupError, ValueError):
            fn = None
        if len(self._fns) > 10_000:  # models are client-supplied strings: bound the cache
            self._fns.clear()
        self._fns[key] = fn
        return fn

    def price(
        self, provider_id: str, models: tuple[str, ...], tokens: Tokens, at: float | None = None
    ) -> tuple[float | None, str]:
        """Cost in USD and where the price came from; the first model name that has a price wins.

        `models` lists the names to try, most specific first (response model, then the
        name sent upstream, then the name the client asked for).
        """
        for model in models:
            if model and model in self._overrides:
                return _override_cost(self._overrides[model], tokens), PRICE_SOURCE_CONFIG
        if not provider_id:
            return None, ""
        day = int((at or time.time()) // 86400)
        for model in models:
            if not model:
                continue
            fn = self._fn(provider_id, model, day)
            if fn is not None:
                return fn(tokens), PRICE_SOURCE_GENAI
        return None, ""

    def price_call(self, provider_id: str, c: PricedCall) -> tuple[float | None, str]:
        """The cost of a call, trying the response model, then the name sent upstream,
        then the name the client asked for."""
        return self.price(
            provider_id,
            (c.response_model, c.upstream_model, c.request_model),
            Tokens(c.input_tokens, c.output_tokens, c.cache_read_tokens, c.cache_write_tokens),
            c.started_at,
        )
