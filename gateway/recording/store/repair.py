"""Mending the embedded store's table metadata (`llm-gateway store repair`).

ClickHouse keeps each table's definition in a metadata file (`store/<xxx>/<database uuid>/
<table>.sql`) and its rows apart, in a data directory named by the table's UUID (which
`data/<database>/<table>` links to). A definition rewritten while the disk was full can be
left empty or cut short; chDB then refuses to open the whole store ("Cannot parse
definition from metadata file"). No row is lost: the rows are where they were.

The repair, with the gateway stopped:
1. finds the metadata files that are empty or not an `ATTACH` statement;
2. builds the gateway's own schema in a scratch store (all migrations, in a child process:
   chDB is one engine per process) and reads each table's definition there;
3. moves each damaged file out of the metadata directory (into `repair-backup/`), opens the
   store, and attaches each table again under its old UUID with the gateway's definition:
   ClickHouse writes a fresh metadata file, and the table's rows are back. A table added by
   a later migration than the store had gets the columns it would have had, with their
   defaults. Materialized views are created again; plain views are left to the gateway,
   which creates missing views at start.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import StoreError
from gateway.recording.store.chdb_store import ChdbStore
from gateway.recording.store.metadata import damaged_files, metadata_dirs

BACKUP_DIR = "repair-backup"
_UUID = re.compile(r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/?$")


def _table_uuid(root: Path, db: str, table: str) -> str | None:
    """The UUID of a table's data directory (`data/<db>/<table>` links to it)."""
    link = root / "data" / db / table
    if not link.is_symlink():
        return None
    m = _UUID.search(os.readlink(link))
    return m.group(1) if m else None


@dataclass
class Mended:
    table: str
    how: str  # "attached" (rows kept), "created" (no rows to keep), "left to the gateway"
    rows: int | None = None


def scratch_schema(database: str, body_ttl_days: int) -> dict[str, str]:
    """Table name -> its `CREATE` statement, as the gateway's migrations make it today."""
    code = (
        "import json, sys, tempfile\n"
        "from gateway.recording.store.chdb_store import ChdbStore\n"
        "from gateway.recording.store.migrate import migrate\n"
        "db, ttl = sys.argv[1], int(sys.argv[2])\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    s = ChdbStore(d, db)\n"
        "    migrate(s, ttl)\n"
        "    names = s.query(f\"SELECT name FROM system.tables WHERE database = '{db}' "
        "AND engine != 'View'\", 'TSV').decode().split()\n"
        "    out = {n: s.query(f'SHOW CREATE TABLE {db}.{n}', 'TSVRaw').decode() for n in names}\n"
        "    s.close()\n"
        "print(json.dumps(out))\n"
    )
    p = subprocess.run([sys.executable, "-c", code, database, str(body_ttl_days)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    if p.returncode != 0:
        raise StoreError(f"the gateway's schema could not be built: {p.stderr.strip()[-500:]}")
    schema: dict[str, str] = json.loads(p.stdout.strip().splitlines()[-1])
    return schema


def _attach(create: str, database: str, table: str, uuid: str) -> str:
    head = f"CREATE TABLE {database}.{table}"
    if not create.startswith(head):
        raise StoreError(f"unexpected definition of {table}: {create[:120]}")
    return f"ATTACH TABLE {database}.{table} UUID '{uuid}'" + create[len(head) :]


def repair(path: str, database: str, body_ttl_days: int) -> list[Mended]:
    """Rebuild the damaged metadata of the store at `path` (locked by the caller)."""

    root = Path(path).resolve()
    files = damaged_files(root)
    if not files:
        return []
    dirs = metadata_dirs(root)
    schema = scratch_schema(database, body_ttl_days)
    backup = root / BACKUP_DIR / time.strftime("%Y%m%dT%H%M%S")
    backup.mkdir(parents=True, exist_ok=True)
    plan: list[tuple[str, str | None]] = []  # (table, statement)
    for f in files:
        db, table = dirs[f.parent.resolve()], f.stem
        if db != database:
            raise StoreError(f"{f} belongs to database {db or '(the catalog)'}, not the "
                             f"gateway's {database}: not repaired")  # fmt: skip
        uuid = _table_uuid(root, db, table)
        create = schema.get(table)
        if create is None:
            plan.append((table, None))  # a plain view: the gateway creates it at start
        elif uuid is not None and create.startswith(f"CREATE TABLE {db}.{table}"):
            plan.append((table, _attach(create, db, table, uuid)))
        else:
            plan.append((table, create))
        f.rename(backup / f.name)
    store = ChdbStore(str(root), database)
    out = []
    try:
        for table, stmt in plan:
            if stmt is None:
                out.append(Mended(table, "left to the gateway"))
                continue
            store.command(stmt)
            attached = stmt.startswith("ATTACH")
            rows = None
            if attached:
                rows = int(store.query(f"SELECT count() FROM {database}.{table}", "TSV") or 0)
            out.append(Mended(table, "attached" if attached else "created", rows))
    finally:
        store.close()
    return out
