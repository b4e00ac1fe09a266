"""What the collectors share to talk SQL to the store: results as rows, string literals
(the store's own quoting)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gateway.recording.store.sqltext import sql_string as lit  # a ClickHouse string literal

Query = Callable[[str], bytes]  # a store's `query`: SQL in, JSONEachRow bytes out


def select(query: Query, sql: str) -> list[dict[str, Any]]:
    out = query(sql)
    text = out.decode() if isinstance(out, bytes | bytearray) else str(out)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


__all__ = ["Query", "lit", "select"]
