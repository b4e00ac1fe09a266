"""Storage: one SQL dialect, three variants (embedded chDB, ClickHouse server, disabled)."""

from __future__ import annotations

from gateway.config import Config, StoreConfig
from gateway.recording.store.base import Store, StoreError
from gateway.recording.store.migrate import Views, migrate


def migrate_configured(
    store: Store, cfg: Config, views: Views, cluster: str | None = None
) -> list[int]:
    """Apply pending migrations with the settings the config bakes into the DDL, then create
    or replace `views`; `cluster` overrides `store.cluster`."""
    return migrate(
        store,
        cfg.capture.body_ttl_days,
        cluster or cfg.store.cluster or None,
        views,
        session_idle_minutes=cfg.feedback.session_idle_minutes,
    )


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


__all__ = ["Store", "StoreError", "Views", "migrate", "migrate_configured", "open_store"]
