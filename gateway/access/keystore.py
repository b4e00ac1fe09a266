"""The keys every replica knows: those in the `llm_gateway_keys` table plus those declared
in the config file, re-read every `refresh_seconds` (a revoke or a rotation takes effect
within that interval on every replica).

When the store cannot be read, the keys last read stay in force (a store outage must not
lock every caller out); it is logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from gateway.access.config import limits_from
from gateway.access.keys import GatewayKey, hash_secret, token_matches
from gateway.errors import ConfigError, StoreError

log = logging.getLogger("gateway.access.keystore")

# Secrets recently matched, so that a key in use is not hashed again on every call. Only
# matched secrets are kept (a stream of wrong ones cannot evict the good ones for long):
# a bounded in-memory map, emptied whenever the keys are swapped (a revoke then takes
# effect with the same delay as before).
_MATCHED_LIMIT = 1024

TABLE = "llm_gateway_keys"
COLUMNS = "key_id, key_hash, name, app, team, hint, limits, created_at, revoked, version"

Query = Callable[[str], bytes]  # SQL -> JSONEachRow


def select_sql(include_revoked: bool = False) -> str:
    where = "" if include_revoked else " WHERE NOT revoked"
    return (
        f"SELECT key_id, key_hash, name, app, team, hint, limits, "
        f"toUnixTimestamp64Milli(created_at) AS created_ms, revoked, version "
        f"FROM {TABLE} FINAL{where} ORDER BY name, key_id"
    )


def key_from_row(row: dict[str, Any]) -> GatewayKey:
    try:
        raw = json.loads(row.get("limits") or "{}")
        limits = limits_from("", **raw)
    except (ValueError, TypeError, ConfigError) as e:
        # A key whose limits cannot be read must not become a key without limits.
        raise ValueError(f"key {row.get('key_id')}: unreadable limits: {e}") from None
    return GatewayKey(
        key_id=row["key_id"],
        name=row["name"],
        key_hash=row["key_hash"],
        app=row.get("app", ""),
        team=row.get("team", ""),
        hint=row.get("hint", ""),
        limits=limits,
        created_at=int(row.get("created_ms") or 0) / 1000.0,
        revoked=bool(row.get("revoked")),
    )


def row_of(key: GatewayKey, version: int | None = None) -> bytes:
    """A JSONEachRow line of the table for `key` (a new version of it)."""
    return (
        json.dumps(
            {
                "key_id": key.key_id,
                "key_hash": key.key_hash,
                "name": key.name,
                "app": key.app,
                "team": key.team,
                "hint": key.hint,
                "limits": json.dumps(key.limits.to_json(), separators=(",", ":")),
                "created_at": round(key.created_at, 3),
                "revoked": key.revoked,
                "version": version if version is not None else time.time_ns() // 1000,
            }
        ).encode()
        + b"\n"
    )


def parse_rows(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


class KeyStore:
    def __init__(self, configured: Iterable[GatewayKey] = ()) -> None:
        self._configured = tuple(configured)
        self._by_hash: dict[str, GatewayKey] = {k.key_hash: k for k in self._configured}
        self._matched: dict[str, GatewayKey] = {}  # secret -> its key (see _MATCHED_LIMIT)
        self.loaded = False  # the store has been read at least once
        self.refresh_errors = 0

    def __len__(self) -> int:
        return len(self._by_hash)

    def keys(self) -> list[GatewayKey]:
        return list(self._by_hash.values())

    def lookup(self, secret: str) -> GatewayKey | None:
        key = self._matched.get(secret)
        if key is not None:
            return key
        h = hash_secret(secret)
        key = self._by_hash.get(h)
        if key is None or not token_matches(h, key.key_hash) or key.revoked:
            return None
        if len(self._matched) >= _MATCHED_LIMIT:
            self._matched.clear()
        self._matched[secret] = key
        return key

    def read(self, query: Query) -> dict[str, GatewayKey]:
        """The keys as the table and the config say now (by hash); a StoreError when the
        store cannot be read (the keys last read then stay in force)."""
        try:
            rows = parse_rows(query(select_sql()))
        except Exception as e:  # the store's own errors, or a missing table mid-migration
            self.refresh_errors += 1
            raise StoreError(f"gateway keys not refreshed: {str(e)[:300]}") from None
        stored: list[GatewayKey] = []
        for row in rows:
            try:
                stored.append(key_from_row(row))
            except (ValueError, KeyError) as e:
                log.error("gateway key skipped", extra={"error": str(e)[:300]})
        by_hash = {k.key_hash: k for k in stored}
        # The config file wins over the table for a key declared in both.
        by_hash.update({k.key_hash: k for k in self._configured})
        return by_hash

    def new_in(self, by_hash: dict[str, GatewayKey]) -> list[GatewayKey]:
        known = self._by_hash if self.loaded else {}  # the first read: every key is new
        return [k for h, k in by_hash.items() if h not in known]

    def swap(self, by_hash: dict[str, GatewayKey]) -> None:
        self._by_hash = by_hash
        self._matched = {}
        self.loaded = True

    def refresh(self, query: Query) -> list[GatewayKey]:
        """Re-read and use the keys; returns those not known before (none on error)."""
        try:
            read = self.read(query)
        except StoreError as e:
            log.warning(str(e))
            return []
        new = self.new_in(read)
        self.swap(read)
        return new
