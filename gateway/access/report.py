"""`llm-gateway report keys`: each live key's spend in its budget window against its budget,
with its calls and refusals in that window (from `llm_key_usage_hourly`)."""

from __future__ import annotations

from gateway.access.admin import KeyTable, list_keys
from gateway.access.keystore import parse_rows

_SQL = """
SELECT key_id,
       sumIf(cost_usd, hour >= toStartOfDay(now('UTC'))) AS usd_day,
       sum(cost_usd) AS usd_month,
       sumIf(requests, hour >= toStartOfDay(now('UTC'))) AS calls_day,
       sum(requests) AS calls_month,
       sumIf(refused, hour >= toStartOfDay(now('UTC'))) AS refused_day,
       sum(refused) AS refused_month
FROM llm_key_usage_hourly
WHERE hour >= toStartOfMonth(now('UTC'))
GROUP BY key_id
"""


def keys_report(store: KeyTable) -> str:
    usage = {r["key_id"]: r for r in parse_rows(store.query(_SQL))}
    head = ("key", "id", "app", "window", "spent_usd", "budget_usd", "used", "calls", "refused")
    rows = [head]
    for k in list_keys(store):
        lim = k.limits
        window = "day" if lim.budget_period == "day" else "month"
        u = usage.get(k.key_id, {})
        spent = float(u.get(f"usd_{window}", 0) or 0)
        used = f"{spent / lim.budget_usd * 100:.0f}%" if lim.budget_usd else "-"
        budget = f"{lim.budget_usd:g}" if lim.budget_usd else "-"
        rows.append((k.name, k.key_id, k.app or "-", window, f"{spent:.4f}", budget, used,
                     str(int(u.get(f"calls_{window}", 0) or 0)),
                     str(int(u.get(f"refused_{window}", 0) or 0))))  # fmt: skip
    if len(rows) == 1:
        return "No active gateway keys.\n"
    w = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w[i]) if i < 4 else c.rjust(w[i]) for i, c in enumerate(r))
             for r in rows]  # fmt: skip
    lines.insert(1, "-" * len(lines[0]))
    return "Gateway keys: spend in the current budget window (UTC)\n\n" + "\n".join(lines) + "\n"
