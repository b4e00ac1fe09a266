"""A ClickHouse server (or cluster) reached over HTTP with clickhouse-connect."""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gateway.recording.store.base import StoreError

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client


class ClickHouseStore:
    kind = "clickhouse"

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        database: str,
        cluster: str = "",
        async_insert: bool = False,
    ) -> None:
        self.url = url
        self.database = database
        self.cluster = cluster
        self._insert_settings: dict[str, object] = {}
        if cluster:
            # The insert returns once the shards have the rows, not when queued locally.
            self._insert_settings["distributed_foreground_insert"] = 1
        if async_insert:
            self._insert_settings.update(
                async_insert=1, wait_for_async_insert=1, async_insert_deduplicate=1
            )
        parts = urlsplit(url)
        self._params: dict[str, Any] = {
            "host": parts.hostname or "localhost",
            "port": parts.port or (8443 if parts.scheme == "https" else 8123),
            "secure": parts.scheme == "https",
            "username": username,
            "password": password,
            # Batches are small and frequent; compression costs more CPU than it saves.
            "compress": False,
            "connect_timeout": 5,
            "send_receive_timeout": 30,
            "autogenerate_session_id": False,
        }
        self._client: Client | None = None
        self._lock = threading.Lock()

    def _get(self) -> Client:
        # Connect lazily: the gateway must start (and serve) while ClickHouse is down.
        if self._client is None:
            import clickhouse_connect

            try:
                client = clickhouse_connect.get_client(**self._params)
            except Exception as e:
                raise StoreError(f"cannot reach ClickHouse at {self.url}: {e}") from e
            # Unqualified names in users' queries mean the gateway's database; DDL is
            # qualified and runs without it (it may not exist yet).
            client.database = self.database
            self._client = client
        return self._client

    def command(self, sql: str) -> None:
        with self._lock:
            try:
                self._get().command(sql, use_database=False)
            except StoreError:
                raise
            except Exception as e:
                raise StoreError(str(e).strip()) from e

    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        with self._lock:
            try:
                # The format as the HTTP interface's default (X-ClickHouse-Format), never
                # added to the text: the query's own FORMAT wins, and an error quotes the
                # query as its author wrote it.
                return self._get().raw_query(
                    sql, fmt=None, transport_settings={"X-ClickHouse-Format": fmt}
                )
            except StoreError:
                raise
            except Exception as e:
                raise StoreError(str(e).strip()) from e

    def insert(self, table: str, rows: bytes, token: str | None = None) -> None:
        if not rows:
            return
        with self._lock:
            try:
                self._get().raw_insert(
                    f"{self.database}.{table}",
                    None,
                    insert_block=rows,
                    fmt="JSONEachRow",
                    settings={
                        **self._insert_settings,
                        "insert_deduplication_token": token,
                        # rollups kept by materialized views must not count a replay twice
                        "deduplicate_blocks_in_dependent_materialized_views": 1,
                    }
                    if token
                    else self._insert_settings or None,
                )
            except StoreError:
                raise
            except Exception as e:
                raise StoreError(str(e).strip()) from e

    def ping(self) -> bool:
        try:
            with self._lock:
                return bool(self._get().ping())
        except Exception:
            return False

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
