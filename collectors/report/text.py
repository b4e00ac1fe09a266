"""Plain-text report formatting: numbers as the reports print them, aligned tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def num(v: Any) -> float | None:
    # 64-bit integers may come quoted (output_format_json_quote_64bit_integers)
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def whole(v: Any) -> str:
    n = num(v)
    return "-" if n is None else str(round(n))


def pct(v: Any) -> str:
    n = num(v)
    return "-" if n is None else f"{n * 100:.1f}%"


def dec(v: Any, places: int = 2) -> str:
    n = num(v)
    if n is None:
        return "-"
    return str(round(n)) if n == round(n) else f"{n:.{places}f}"


def label(v: Any) -> str:
    s = "" if v is None else str(v)
    return s if s else "(none)"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> list[str]:
    """Columns left-aligned up to `numeric_from`, right-aligned from there on."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if i < numeric_from else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return ("  " + "  ".join(parts)).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def metric(name: str, v: float | None, signed: bool = False) -> str:
    """An experiment metric's value, or a difference of two (`signed`): rates in percent
    (differences in points), costs in USD, others as they are."""
    if v is None or not math.isfinite(v):
        return "-"
    sign = "+" if signed else ""
    if name.endswith("_rate") or name == "p95_latency":
        return f"{v * 100:{sign}.1f}" + (" pt" if signed else "%")
    if name.startswith("cost"):
        return f"{v:{sign}.5f}"
    return f"{v:{sign}.3f}"


def finite(x: Any) -> Any:
    """A value for JSON, which has no infinity or NaN: a figure without data is null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite(v) for v in x]
    return x
