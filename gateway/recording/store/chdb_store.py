"""The embedded store: chDB, ClickHouse's engine in this process, on a local data directory."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from gateway.recording.store.base import StoreError
from gateway.recording.store.sqltext import sql_string


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
            raise StoreError(f"cannot open the chDB store at {self.path}: {e}") from e
        # Unqualified names (`SELECT ... FROM llm_calls`) mean the gateway's tables.
        self._run(f"CREATE DATABASE IF NOT EXISTS {database}")
        self._run(f"USE {database}")

    def _run(self, sql: str, fmt: str = "CSV") -> bytes:
        with self._lock:
            try:
                res = self._session.query(sql, fmt)
            except Exception as e:
                raise StoreError(str(e).strip()) from e
        return res.bytes() if res is not None else b""

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
