"""Numbered DDL migrations (`migrations/NNNN_name.sql`), applied in order, each once.

Statements are idempotent (`IF NOT EXISTS`), so two processes migrating at once, or a
crash between a migration and its bookkeeping row, are harmless.

After them, the views the caller supplies (the app and the CLI pass collectors/views, rendered
from the signal registry) are created, or replaced when their text changed (each view carries
its text's digest as its comment).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

from gateway.recording.capture import CaptureConfig
from gateway.recording.record import FAILED_SQL
from gateway.recording.store.base import Store, StoreError

log = logging.getLogger("gateway.migrate")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    out = []
    for f in resources.files("gateway.recording.store").joinpath("migrations").iterdir():
        if f.name.endswith(".sql"):
            num, _, rest = f.name.partition("_")
            out.append(Migration(int(num), rest.removesuffix(".sql"), f.read_text()))
    return sorted(out, key=lambda m: m.version)


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";\n") if s.strip().strip("-").strip()]


_CREATE_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\S+)\.(\w+)")
_ENGINE = re.compile(r"ENGINE = (\w*MergeTree)\b(\(\))?")
_ALTER = re.compile(r"ALTER TABLE (\S+)\.(\w+)")
_CREATE_MV = re.compile(r"CREATE MATERIALIZED VIEW IF NOT EXISTS (\S+)\.(\w+) TO (\S+)\.(\w+)")
_FROM = re.compile(r"\b(FROM|JOIN) (\w+)\.(\w+)")
_SHARD_BY = re.compile(r"--\s*shard_by:\s*(.+)")
_MODIFY_ORDER = re.compile(r",\s*MODIFY ORDER BY .*$", re.S)  # last in its statement


def for_cluster(stmt: str, cluster: str) -> list[str]:
    """One statement of a migration, as run on a cluster: each table becomes a Replicated
    local table (`<name>_local`) on every node plus a Distributed table under the original
    name, which is what the gateway inserts into and users query. The shard key (a
    `-- shard_by:` line in the migration) must be deterministic, so that a replayed batch
    lands on the shard that can recognise it as a duplicate."""
    on = f" ON CLUSTER '{cluster}'"
    m = _CREATE_MV.search(stmt)
    if m:  # a view on every node, from the local source into the local target
        db, view, tdb, target = m.groups()
        stmt = _CREATE_MV.sub(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{view}{on} TO {tdb}.{target}_local",
            stmt,
            1,
        )
        return [_FROM.sub(lambda f: f"{f.group(1)} {f.group(2)}.{f.group(3)}_local", stmt)]
    m = _CREATE_TABLE.search(stmt)
    if m:
        db, table = m.group(1), m.group(2)
        shard = _SHARD_BY.search(stmt)
        local = _CREATE_TABLE.sub(f"CREATE TABLE IF NOT EXISTS {db}.{table}_local{on}", stmt, 1)
        local = _ENGINE.sub(
            lambda e: (
                f"ENGINE = Replicated{e.group(1)}("
                f"'/clickhouse/tables/{{shard}}/{db}/{table}_local', '{{replica}}')"
            ),
            local,
            1,
        )
        dist = (
            f"CREATE TABLE IF NOT EXISTS {db}.{table}{on} AS {db}.{table}_local "
            f"ENGINE = Distributed('{cluster}', '{db}', '{table}_local', "
            f"{shard.group(1).strip() if shard else 'rand()'})"
        )
        return [local, dist]
    m = _ALTER.search(stmt)
    if m and "MODIFY QUERY" in stmt:  # a materialized view's query: on every node, local
        stmt = _ALTER.sub(f"ALTER TABLE {m.group(1)}.{m.group(2)}{on}", stmt, 1)
        return [_FROM.sub(lambda f: f"{f.group(1)} {f.group(2)}.{f.group(3)}_local", stmt)]
    if m:
        out = [_ALTER.sub(f"ALTER TABLE {m.group(1)}.{m.group(2)}_local{on}", stmt, 1)]
        if "ADD COLUMN" in stmt:  # the Distributed table's columns follow its local table's
            dist = _ALTER.sub(f"ALTER TABLE {m.group(1)}.{m.group(2)}{on}", stmt, 1)
            out.append(_MODIFY_ORDER.sub("", dist))  # a Distributed table has no sorting key
        return out
    return [stmt]


class View(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def select(self) -> str: ...


# The views over the tables, for a database and the settings (`session_idle_minutes`).
Views = Callable[..., Sequence[View]]

# Settings baked into the DDL when a migration first runs: the config's own defaults.
DEFAULTS = {"body_ttl_days": CaptureConfig().body_ttl_days}


def render(
    m: Migration, db: str, body_ttl_days: int, cluster: str | None, **params: int
) -> list[str]:
    # `failed`: the one "failed call" predicate. A migration that used it keeps the text it
    # was applied with: changing its meaning needs a migration that recreates the view.
    values = {**DEFAULTS, **params, "body_ttl_days": body_ttl_days, "db": db, "failed": FAILED_SQL}
    out = []
    for stmt in _statements(m.sql):
        for k, v in values.items():
            stmt = stmt.replace("{" + k + "}", str(v))
        out += for_cluster(stmt, cluster) if cluster else [stmt]
    return out


def migrate(
    store: Store,
    body_ttl_days: int = DEFAULTS["body_ttl_days"],
    cluster: str | None = None,
    views: Views | None = None,
    step: Callable[[str], None] | None = None,
    **params: int,
) -> list[int]:
    """Apply pending migrations, then create or replace `views`; returns the versions
    applied now. `step` (progress) is told the name of each as it starts."""
    db = store.database
    if not db:
        return []
    try:  # no DDL at all when the store is up to date (a start on a full disk, say)
        done = _applied(store, db)
    except StoreError:
        on = f" ON CLUSTER '{cluster}'" if cluster else ""
        store.command(f"CREATE DATABASE IF NOT EXISTS {db}{on}")
        engine = (
            f"ReplicatedReplacingMergeTree('/clickhouse/tables/{db}/schema_migrations', "
            "'{replica}')"
            if cluster
            else "ReplacingMergeTree"
        )
        store.command(
            f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations{on} "
            "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
            f"ENGINE = {engine} ORDER BY version"
        )
        done = _applied(store, db)
    applied = []
    for m in migrations():
        if m.version in done:
            continue
        if step is not None:
            step(f"migration {m.version:04d} {m.name}")
        for stmt in render(m, db, body_ttl_days, cluster, **params):
            store.command(stmt)
        store.insert(
            "schema_migrations", json.dumps({"version": m.version, "name": m.name}).encode()
        )
        log.info("migration applied", extra={"version": m.version, "migration": m.name})
        applied.append(m.version)
    if views is not None:
        _replace_views(store, db, cluster, views, step, **params)
    return applied


def _applied(store: Store, db: str) -> set[int]:
    rows = store.query(f"SELECT version FROM {db}.schema_migrations").splitlines()
    return {json.loads(line)["version"] for line in rows if line.strip()}


def view_statements(
    views: Views, db: str, cluster: str | None, **params: int
) -> list[tuple[str, str, str]]:
    """(view, digest, CREATE OR REPLACE VIEW statement) for each view."""
    on = f" ON CLUSTER '{cluster}'" if cluster else ""
    out = []
    for v in views(db, **params):  # the views' own settings (`session_idle_minutes`)
        digest = hashlib.sha256(v.select.encode()).hexdigest()[:16]
        sql = f"CREATE OR REPLACE VIEW {db}.{v.name}{on} AS\n{v.select}\nCOMMENT '{digest}'"
        out.append((v.name, digest, sql))
    return out


def _replace_views(
    store: Store,
    db: str,
    cluster: str | None,
    views: Views,
    step: Callable[[str], None] | None,
    **params: int,
) -> None:
    listed = store.query(f"SELECT name, comment FROM system.tables WHERE database = '{db}'")
    have = {row["name"]: row["comment"] for row in map(json.loads, listed.splitlines())}
    for name, digest, sql in view_statements(views, db, cluster, **params):
        if have.get(name) != digest:
            if step is not None:
                step(f"view {name}")
            store.command(sql)
            log.info("view replaced", extra={"view": name})
