"""A store that keeps nothing: for a gateway run without recording (benchmarks, dry runs)."""

from __future__ import annotations

from gateway.recording.store.base import StoreError


class DisabledStore:
    kind = "disabled"
    database = ""

    def command(self, sql: str) -> None:
        pass

    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        raise StoreError("recording is disabled (store.kind: disabled): there is nothing to query")

    def insert(self, table: str, rows: bytes, token: str | None = None) -> None:
        pass

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass
