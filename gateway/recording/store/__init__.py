"""Storage: one SQL dialect, three variants (embedded chDB, ClickHouse server, disabled)."""

from __future__ import annotations

from gateway.recording.store.base import Store, StoreError
from gateway.recording.store.config import StoreConfig
from gateway.recording.store.migrate import Views, migrate


def open_store(cfg: StoreConfig) -> Store:
    if cfg.kind == "chdb":
        from gateway.recording.store.chdb_store import ChdbStore

        return ChdbStore(cfg.path, cfg.database)
    if cfg.kind == "clickhouse":
        from gateway.recording.store.clickhouse_store import ClickHouseStore

        return ClickHouseStore(
            cfg.url, cfg.username, cfg.password, cfg.database, cfg.cluster, cfg.async_insert
        )
    from gateway.recording.store.disabled import DisabledStore

    return DisabledStore()


__all__ = ["Store", "StoreConfig", "StoreError", "Views", "migrate", "open_store"]
