"""Synthetic calls and signals for the simulations (bench/experiments_sim.py,
bench/confounded_sim.py), as TabSeparated rows inserted straight into the store."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

T0 = 1_760_000_000.0  # a fixed start: runs are reproducible
DAYS = 14

CALL_COLUMNS = (
    "request_id", "started_at", "app", "end_user", "session_id", "turn_index", "status_code",
    "outcome", "latency_ms", "cost_usd", "experiment", "variant", "request_model",
    "upstream_model", "provider", "properties",
)  # fmt: skip
EVENT_COLUMNS = ("event_id", "ts", "request_id", "session_id", "app", "name", "value", "source")


@dataclass(slots=True)
class Rows:
    """TabSeparated lines of llm_calls and llm_feedback (CALL_COLUMNS, EVENT_COLUMNS)."""

    calls: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def call(self, rng: random.Random, p: float, say_no: bool, **c: Any) -> None:
        """A call showing a suggestion, accepted with probability `p`."""
        rid, t, sid = c["rid"], c["t"], c["session"]
        latency = rng.lognormvariate(6, 0.5)
        props = "{" + ",".join(f"'{k}':'{v}'" for k, v in c.get("props", {}).items()) + "}"
        self.calls.append(
            f"{rid}\t{t:.3f}\t{c['app']}\t{c['user']}\t{sid}\t{c['turn']}\t200\tok\t"
            f"{latency:.1f}\t0.001\t{c.get('exp', '')}\t{c.get('variant', '')}\tanswer\t"
            f"{c['model']}\tsim\t{props}\n"
        )
        head = f"\t{rid}\t{sid}\t{c['app']}\t"
        self.events.append(f"{rid}-shown\t{t + 1:.3f}{head}suggestion_shown\t1\tuser\n")
        accepted = rng.random() < p
        if accepted or say_no:
            value = 1 if accepted else 0
            self.events.append(f"{rid}-acc\t{t + 5:.3f}{head}suggestion_accepted\t{value}\tuser\n")


def poisson(rng: random.Random, lam: float) -> int:
    n, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return n
        n += 1


def insert_tsv(store: Any, table: str, columns: tuple[str, ...], lines: list[str]) -> None:
    # TabSeparated with named columns parses several times faster than JSONEachRow
    for i in range(0, len(lines), 500_000):
        store.command(
            f"INSERT INTO {table} ({', '.join(columns)}) FORMAT TabSeparated\n"
            + "".join(lines[i : i + 500_000])
        )
