"""Small facts about SQL text the stores share."""

from __future__ import annotations

import re

_FORMAT_RE = re.compile(r"\bFORMAT\s+[A-Za-z][A-Za-z0-9]*\s*;?\s*$", re.IGNORECASE)


def has_format(sql: str) -> bool:
    """Whether the query ends with its own `FORMAT X` clause."""
    return _FORMAT_RE.search(sql) is not None


def sql_string(s: str) -> str:
    """A ClickHouse string literal, quoted and escaped."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def split_statements(sql: str) -> list[str]:
    """The statements of a script, split on `;` outside quotes and comments; statements
    that are only comments or blanks are left out."""
    out: list[str] = []
    start = i = 0
    code = False  # the current statement has more than blanks and comments
    n = len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if sql[j] == "\\" else 1
            i, code = j + 1, True
        elif sql.startswith("--", i) or c == "#":
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == ";":
            if code:
                out.append(sql[start:i].strip())
            start, i, code = i + 1, i + 1, False
        else:
            code = code or not c.isspace()
            i += 1
    if code:
        out.append(sql[start:].strip())
    return out
