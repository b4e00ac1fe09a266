"""Money as people read it: every place that prints a cost in USD (`llm-gateway sql`
tables, reports, drift details) formats it here.

Costs are sums of float products, so their last digits are noise
(`0.000008400000000000001`). A cost is printed with at most 8 decimals (a hundredth of a
micro-dollar: per-call costs of small models stay visible) and at most 12 significant
digits, trailing zeros dropped, never in scientific notation.
"""

from __future__ import annotations

import math
from typing import Any

DECIMALS = 8
SIGNIFICANT = 12


def usd(value: Any) -> str:
    """A cost for display; "-" when unknown (NULL, not a number)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "-"
    if not math.isfinite(x):
        return "-"
    if x == 0:
        return "0"
    whole_digits = max(math.floor(math.log10(abs(x))) + 1, 0)
    text = f"{x:.{max(min(DECIMALS, SIGNIFICANT - whole_digits), 0)}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def is_money_column(name: str) -> bool:
    """Whether a result column holds USD, by the naming the tables and views use
    (`cost_usd`, `usd`, `spend_usd`, `budget_usd`...)."""
    n = name.lower()
    return n == "usd" or n.endswith("_usd") or n.startswith(("usd_", "cost"))
