"""Numbered DDL migrations (`migrations/NNNN_name.sql`), applied in order, each once.

Statements are idempotent (`IF NOT EXISTS`), so two processes migrating at once, or a
crash between a migration and its bookkeeping row, are harmless.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources

from gateway.store.base import Store

log = logging.getLogger("gateway.migrate")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    out = []
    for f in resources.files("gateway.store").joinpath("migrations").iterdir():
        if f.name.endswith(".sql"):
            num, _, rest = f.name.partition("_")
            out.append(Migration(int(num), rest.removesuffix(".sql"), f.read_text()))
    return sorted(out, key=lambda m: m.version)


def _statements(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip()]


def migrate(store: Store, body_ttl_days: int = 30) -> list[int]:
    """Apply pending migrations; returns the versions applied now."""
    db = store.database
    if not db:
        return []
    store.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    store.command(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {
        json.loads(line)["version"]
        for line in store.query(f"SELECT version FROM {db}.schema_migrations").splitlines()
        if line.strip()
    }
    applied = []
    for m in migrations():
        if m.version in done:
            continue
        for stmt in _statements(m.sql):
            store.command(stmt.format(db=db, body_ttl_days=body_ttl_days))
        store.insert(
            "schema_migrations", json.dumps({"version": m.version, "name": m.name}).encode()
        )
        log.info("migration applied", extra={"version": m.version, "migration": m.name})
        applied.append(m.version)
    return applied
