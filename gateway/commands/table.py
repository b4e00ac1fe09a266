"""Tables as the CLI prints them: `llm-gateway sql`'s results, and the reports' columns.

A report's table and its `--json` are one thing: each column has one name, the table's
header and the JSON field alike (`Column`), so that what a person reads is what a script
gets. Columns holding a stored column bear its name (`upstream_model`, `key_id`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_NUMERIC = ("Int", "UInt", "Float", "Decimal")


def result_table(result: bytes) -> str:
    """A JSONCompact result as a table: numbers right-aligned, costs through the money
    formatter, NULL spelled out."""
    from gateway.recording.money import is_money_column, usd

    if not result.strip():
        return ""
    doc = json.loads(result)
    meta = doc["meta"]
    names = [m["name"] for m in meta]
    kinds = [m["type"].removeprefix("Nullable(").removeprefix("LowCardinality(") for m in meta]
    numeric = [k.startswith(_NUMERIC) for k in kinds]
    money = [is_money_column(n) and num for n, num in zip(names, numeric, strict=True)]

    def cell(v: Any, is_money: bool) -> str:
        if v is None:
            return "NULL"
        if is_money:
            return usd(v)
        if isinstance(v, str):
            return v.replace("\n", "\\n")
        if isinstance(v, list | dict):
            return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
        return str(v)

    rows = [[cell(v, m) for v, m in zip(r, money, strict=True)] for r in doc["data"]]
    widths = [max([len(n), *(len(r[i]) for r in rows)]) for i, n in enumerate(names)]

    def line(cells: list[str]) -> str:
        cols = zip(cells, widths, numeric, strict=True)
        aligned = (c.rjust(w) if num else c.ljust(w) for c, w, num in cols)
        return "│ " + " │ ".join(aligned) + " │"

    top = "┌─" + "─┬─".join(n.ljust(w, "─") for n, w in zip(names, widths, strict=True)) + "─┐"
    bottom = "└─" + "─┴─".join("─" * w for w in widths) + "─┘"
    return "\n".join([top, *(line(r) for r in rows), bottom]) + "\n"


def num(v: Any) -> float | None:
    # 64-bit integers may come quoted (output_format_json_quote_64bit_integers)
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


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


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a report: its name (table header and JSON field) and how a value is
    printed in the table."""

    name: str
    show: Callable[[Any], str] = lambda v: "-" if v is None or v == "" else str(v)
    numeric: bool = False  # a number in JSON even when the store quoted it


def rows_table(
    columns: Sequence[Column], rows: Sequence[dict[str, Any]], numeric_from: int
) -> list[str]:
    """The rows (dicts with every column's name) as table lines, headers named as the
    columns."""
    body = [[c.show(r[c.name]) for c in columns] for r in rows]
    return table([c.name for c in columns], body, numeric_from)


def rows_json(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same rows for JSON: each column under its name, as the value it holds."""
    return [{c.name: number(r[c.name]) if c.numeric else r[c.name] for c in columns}
            for r in rows]  # fmt: skip


def number(v: Any) -> Any:
    """A figure as a JSON number (64-bit integers may come quoted); null for none."""
    n = num(v)
    if n is None or not math.isfinite(n):
        return None
    return int(n) if isinstance(v, int) or (isinstance(v, str) and n == int(n)) else n
