"""`llm-gateway report keys`: each live key's spend in its budget window against its budget,
with its calls and refusals in that window (from `llm_key_usage_hourly`). The table's
columns are the JSON's fields, named as the tables name them."""

from __future__ import annotations

import json
from typing import Any

from gateway.access.admin import KeyTable, list_keys
from gateway.access.keystore import parse_rows
from gateway.commands.table import Column, number, rows_json, rows_table
from gateway.recording.money import usd

_SQL = """
SELECT key_id,
       sumIf(cost_usd, hour >= toStartOfDay(now('UTC'))) AS usd_day,
       sum(cost_usd) AS usd_month,
       sumIf(requests, hour >= toStartOfDay(now('UTC'))) AS requests_day,
       sum(requests) AS requests_month,
       sumIf(refused, hour >= toStartOfDay(now('UTC'))) AS refused_day,
       sum(refused) AS refused_month
FROM llm_key_usage_hourly
WHERE hour >= toStartOfMonth(now('UTC'))
GROUP BY key_id
"""

COLUMNS = (
    Column("key_name"),
    Column("key_id"),
    Column("app"),
    Column("budget_period"),
    Column("spent_usd", usd, numeric=True),
    Column("budget_usd", lambda v: usd(v) if v else "-", numeric=True),
    Column("used", lambda v: "-" if v is None else f"{v * 100:.0f}%", numeric=True),
    Column("requests", str, numeric=True),
    Column("refused", str, numeric=True),
)


def key_rows(store: KeyTable) -> list[dict[str, Any]]:
    usage = {r["key_id"]: r for r in parse_rows(store.query(_SQL))}
    rows = []
    for k in list_keys(store):
        lim = k.limits
        window = lim.budget_period
        u = usage.get(k.key_id, {})
        spent = number(u.get(f"usd_{window}")) or 0.0
        rows.append({
            "key_name": k.name, "key_id": k.key_id, "app": k.app, "budget_period": window,
            "spent_usd": spent, "budget_usd": lim.budget_usd or None,
            "used": spent / lim.budget_usd if lim.budget_usd else None,
            "requests": number(u.get(f"requests_{window}")) or 0,
            "refused": number(u.get(f"refused_{window}")) or 0,
        })  # fmt: skip
    return rows


def keys_report(store: KeyTable, as_json: bool = False) -> str:
    rows = key_rows(store)
    if as_json:
        return json.dumps(rows_json(COLUMNS, rows), indent=2) + "\n"
    if not rows:
        return "No active gateway keys.\n"
    lines = rows_table(COLUMNS, rows, 4)
    return "Gateway keys: spend in the current budget window (UTC)\n\n" + "\n".join(lines) + "\n"
