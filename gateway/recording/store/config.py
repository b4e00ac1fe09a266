"""The `store:` section: which store the records go to, and how they are batched."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from msgspec import Meta

from gateway.sections import FieldError, Positive, Section

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class StoreConfig(Section, frozen=True):
    kind: Literal["chdb", "clickhouse", "disabled"] = "chdb"
    path: str = "llm-gateway-data"  # chdb's data directory; or $LLM_GATEWAY_DATA_DIR
    url: str = "http://localhost:8123"
    username: str = "default"
    password: str = ""
    database: str = "llm_gateway"
    batch_size: Positive = 1000
    flush_interval_ms: Annotated[float, Meta(ge=1)] = 500.0
    queue_limit: Positive = 100_000  # records held in memory (no record log) while it is down
    cluster: str = ""  # ClickHouse cluster name: Replicated + Distributed tables, ON CLUSTER DDL
    async_insert: bool = False  # let the server buffer inserts (async_insert=1, waited for)

    def __post_init__(self) -> None:
        if self.cluster and self.kind != "clickhouse":
            raise FieldError("cluster", "needs store.kind: clickhouse")
        if not _IDENTIFIER.fullmatch(self.database):
            raise FieldError("database", f"must be a plain identifier, got {self.database!r}")
