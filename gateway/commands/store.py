"""The store as the CLI's commands reach it.

Commands that read or change what is recorded (`sql`, `report`, `experiments`, `drift`,
`keys`) never create a store: where there is none they say where they looked and how to
point them at one (`StoreMissing`). Only `serve` and `migrate` create one. With the
embedded store, a running gateway that holds the data directory is gone through (its admin
endpoints); otherwise the directory is opened here, locked meanwhile, and migrated.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gateway.config import Config, data_dir_origin
from gateway.errors import StoreError, StoreMissing, error_message
from gateway.recording.store import Store, Views, open_store
from gateway.recording.store.datadir import DataDirLock, has_store, running_gateway


class ViaGateway:
    """The store as reached through the running gateway that holds the embedded engine."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def _post(self, path: str, body: bytes) -> bytes:
        req = urllib.request.Request(
            self.url + path,
            data=body,
            headers={"x-gateway-admin-token": self.token, "content-type": "text/plain"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                answer: bytes = r.read()
                return answer
        except urllib.error.HTTPError as e:
            raise StoreError(error_message(e.read())) from None
        except urllib.error.URLError as e:
            raise StoreError(f"the gateway at {self.url} did not answer: {e.reason}") from None

    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        return self._post(f"/_gateway/sql?default_format={fmt}", sql.encode())

    def insert(self, table: str, rows: bytes, token: str | None = None) -> None:
        self._post(f"/_gateway/insert?table={urllib.parse.quote(table)}", rows)


def where(cfg: Config) -> str:
    """The store a config names, as a person reads it."""
    if cfg.store.kind == "chdb":
        return f"embedded store at {Path(cfg.store.path).resolve()}"
    if cfg.store.kind == "clickhouse":
        return f"ClickHouse at {cfg.store.url}, database {cfg.store.database}"
    return "no store (store.kind: disabled)"


def missing(cfg: Config, data_dir_flag: str | None, config_file: str | None) -> StoreMissing:
    """What to tell a command that found no store where it looked."""
    if cfg.store.kind == "disabled":
        return StoreMissing(
            "recording is disabled (store.kind: disabled): there is no store to read; "
            "point the command at the gateway's config with --config FILE"
        )
    if cfg.store.kind == "clickhouse":
        return StoreMissing(
            f"no gateway tables at {where(cfg)}: the database does not exist. Check "
            "store.url and store.database in the config, or create the tables with "
            "`llm-gateway migrate`"
        )
    origin = data_dir_origin(cfg, data_dir_flag, config_file, os.environ)
    return StoreMissing(
        f"no store at {Path(cfg.store.path).resolve()} ({origin}). Run the command where "
        "the gateway runs, or point it at the gateway's data directory: --data-dir DIR, "
        "LLM_GATEWAY_DATA_DIR=DIR, or --config FILE with store.path. "
        "`llm-gateway migrate` creates an empty store there."
    )


def _database_exists(store: Store) -> bool:
    """Whether the server has the store's database: a query made in it says so."""
    try:
        store.query("SELECT 1")
    except StoreError as e:
        if "UNKNOWN_DATABASE" in str(e):
            return False
        raise
    return True


@contextlib.contextmanager
def store_access(
    cfg: Config, views: Views, data_dir_flag: str | None = None, config_file: str | None = None
) -> Iterator[Any]:
    """The configured store, as it is: through the running gateway when one holds the
    embedded store, else opened here (and migrated, so that an older store reads like a
    new one). StoreMissing where there is none; nothing is created."""
    if cfg.store.kind == "chdb" and (running := running_gateway(cfg.store.path)):
        yield ViaGateway(running.url, running.token)
        return
    with existing_store(cfg, views, data_dir_flag, config_file) as store:
        yield store


@contextlib.contextmanager
def existing_store(
    cfg: Config, views: Views, data_dir_flag: str | None = None, config_file: str | None = None
) -> Iterator[Store]:
    """The configured store opened by this process, and migrated, if there is one
    (StoreMissing otherwise: nothing is created)."""
    if cfg.store.kind == "disabled" or (
        cfg.store.kind == "chdb" and not has_store(cfg.store.path, cfg.store.database)
    ):
        raise missing(cfg, data_dir_flag, config_file)
    exists = _database_exists if cfg.store.kind == "clickhouse" else None
    with opened_store(cfg, views, exists=exists) as (store, _):
        yield store


@contextlib.contextmanager
def opened_store(
    cfg: Config,
    views: Views,
    cluster: str | None = None,
    exists: Callable[[Store], bool] | None = None,
    step: Callable[[str], None] | None = None,
) -> Iterator[tuple[Store, list[int]]]:
    """The configured store opened by this process (the embedded one's data directory
    locked meanwhile) and migrated: (store, migrations applied now). `exists`, when given,
    must hold before anything is created (StoreMissing otherwise); `step` is told each
    migration as it starts."""
    lock = DataDirLock(cfg.store.path) if cfg.store.kind == "chdb" else None
    if lock:
        lock.acquire()
    try:
        store = open_store(cfg.store)
        try:
            if exists is not None and not exists(store):
                raise missing(cfg, None, None)
            yield store, cfg.migrate(store, views, cluster, step)
        finally:
            store.close()
    finally:
        if lock:
            lock.release()
