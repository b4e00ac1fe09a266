"""Plain-text report formatting: numbers as the reports print them. Tables, and the
columns a report's table and its JSON share, are gateway/commands/table.py's."""

from __future__ import annotations

import math
from typing import Any

from gateway.commands.table import Column, num, rows_json, rows_table, table

__all__ = ["Column", "num", "rows_json", "rows_table", "table"]


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
