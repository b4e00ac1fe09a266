"""Small facts about SQL text the stores share."""

from __future__ import annotations

import re

_FORMAT_RE = re.compile(r"\bFORMAT\s+[A-Za-z][A-Za-z0-9]*\s*;?\s*$", re.IGNORECASE)


def has_format(sql: str) -> bool:
    """Whether the query ends with its own `FORMAT X` clause."""
    return _FORMAT_RE.search(sql) is not None


def with_format(sql: str, fmt: str) -> str:
    sql = sql.strip().rstrip(";")
    return sql if has_format(sql) else f"{sql} FORMAT {fmt}"


def sql_string(s: str) -> str:
    """A ClickHouse string literal, quoted and escaped."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"
