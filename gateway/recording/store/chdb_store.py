"""The embedded store: chDB, ClickHouse's engine in this process, on a local data directory.

DDL is never run on a disk short of room: chDB reports an `ALTER` as done while the table's
metadata file it rewrote is left empty on a full disk, and the store then cannot be opened
again (`repair.py` mends that). A statement that would change metadata is refused with a
`StoreError` while less than `DDL_ROOM_BYTES` are free (the migrations job retries later).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from pathlib import Path

from gateway.recording.store.base import StoreError
from gateway.recording.store.metadata import damaged_files, damaged_message
from gateway.recording.store.sqltext import sql_string

# Free space a statement that writes table metadata needs (capped at a quarter of a small
# file system): room for the metadata file and the part that some ALTERs write.
DDL_ROOM_BYTES = 16 * 1024 * 1024
_DDL = re.compile(
    r"\s*(?:--[^\n]*\n\s*)*(ALTER|CREATE|DROP|RENAME|ATTACH|DETACH|EXCHANGE|TRUNCATE|OPTIMIZE)\b",
    re.IGNORECASE,
)


class ChdbStore:
    kind = "chdb"

    def __init__(self, path: str, database: str) -> None:
        from chdb import session

        self.path = str(Path(path).resolve())
        Path(self.path).mkdir(parents=True, exist_ok=True)
        self.database = database
        # chDB is one engine per process; its session is not for concurrent use.
        self._lock = threading.Lock()
        try:
            self._session = session.Session(self.path)
        except Exception as e:
            if damaged := damaged_files(self.path):
                raise StoreError(damaged_message(self.path, damaged)) from e
            raise StoreError(f"cannot open the chDB store at {self.path}: {e}") from e
        # Unqualified names (`SELECT ... FROM llm_calls`) mean the gateway's tables.
        if not self._run(f"SELECT 1 FROM system.databases WHERE name = {sql_string(database)}"):
            self.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        self._run(f"USE {database}")

    def _run(self, sql: str, fmt: str = "CSV") -> bytes:
        if _DDL.match(sql):
            self._check_room(sql)
        with self._lock:
            try:
                res = self._session.query(sql, fmt)
            except Exception as e:
                raise StoreError(str(e).strip()) from e
        return res.bytes() if res is not None else b""

    def _check_room(self, sql: str) -> None:
        st = os.statvfs(self.path)
        free = st.f_bavail * st.f_frsize
        need = min(DDL_ROOM_BYTES, st.f_blocks * st.f_frsize // 4)
        if free < need:
            raise StoreError(
                f"not run while the disk of {self.path} is nearly full ({free} bytes free, "
                f"{need} needed): a table's metadata rewritten on a full disk is lost "
                f"({sql.strip()[:80]}...)"
            )

    def command(self, sql: str) -> None:
        self._run(sql)

    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        # The format goes beside the text, never into it: a FORMAT written in the query
        # wins, and an error quotes the query as its author wrote it.
        return self._run(sql, fmt)

    def insert(self, table: str, rows: bytes, token: str | None = None) -> None:
        if not rows:
            return
        settings = (
            f" SETTINGS insert_deduplication_token = {sql_string(token)}, "
            "deduplicate_blocks_in_dependent_materialized_views = 1"
            if token
            else ""
        )
        self._run(
            f"INSERT INTO {self.database}.{table}{settings} FORMAT JSONEachRow\n" + rows.decode()
        )

    def ping(self) -> bool:
        try:
            return self._run("SELECT 1").strip() == b"1"
        except StoreError:
            return False

    def close(self) -> None:
        with self._lock, contextlib.suppress(Exception):
            self._session.close()
