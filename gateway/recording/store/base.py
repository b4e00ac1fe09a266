"""What every store variant offers: DDL, inserts of JSONEachRow batches, raw queries."""

from __future__ import annotations

from typing import Protocol

from gateway.errors import StoreError

__all__ = ["Store", "StoreError"]


class Store(Protocol):
    kind: str
    database: str

    def command(self, sql: str) -> None:
        """Run a statement that returns nothing (DDL)."""

    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        """Run a query; the answer in `fmt`, unless the query has its own FORMAT clause."""

    def insert(self, table: str, rows: bytes, token: str | None = None) -> None:
        """Insert JSONEachRow `rows` into `table` of the store's database. A repeated
        insert with the same `token` is dropped by the store (idempotent replays)."""

    def ping(self) -> bool: ...

    def close(self) -> None: ...
