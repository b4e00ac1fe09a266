"""The periodic evaluation inside the gateway: verdicts for /metrics, and the optional
switch of all traffic to a declared winner (`auto_route_winner`, off by default).

Every replica evaluates the same store and so reaches the same verdict; a restarted
gateway re-establishes the switch at its first evaluation. Calls sent to the winner by
the switch are recorded with the property `experiment_routed=winner` and left out of the
analysis (they were not randomised).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from collectors.experiments.report import verdicts
from collectors.experiments.verdict import KINDS, Verdict
from collectors.sql import Query
from gateway.experiments import Assigner, Experiment
from gateway.jobs import Periodic

log = logging.getLogger("collectors.experiments")

INTERVAL_S = 300.0  # how often the gateway evaluates its experiments


def evaluate(
    query: Query,
    experiments: Sequence[Experiment],
    assigner: Assigner | None = None,
    session_idle_minutes: int = 30,
) -> dict[str, Verdict]:
    """Verdicts of every experiment now; switches traffic for winners when allowed."""
    out = verdicts(query, experiments, session_idle_minutes=session_idle_minutes)
    for name, v in out.items():
        if v.kind != "winner" or v.winner is None or assigner is None:
            continue
        if name in assigner.winners():
            continue
        if assigner.route_to_winner(name, v.winner):
            log.warning(
                "experiment winner declared: all traffic now goes to it",
                extra={"experiment": name, "variant": v.winner, "verdict": v.message},
            )
    return out


def gauge_values(
    v: Verdict,
) -> tuple[int, dict[str, int], float, list[tuple[str, float, float, float]]]:
    """A verdict as the gauges take it: (code in KINDS, units, SRM p, primary effects)."""
    effects = [
        (c.variant, c.diff, c.low, c.high)
        for c in v.primary
        if c.diff is not None and c.low is not None and c.high is not None
    ]
    return KINDS.index(v.kind), v.units, v.srm_p_value, effects


def evaluation_job(
    query: Query,
    experiments: Sequence[Experiment],
    assigner: Assigner | None,
    session_idle_minutes: int,
    show: Callable[[Verdict], None],
    ready: Callable[[], bool],
) -> Periodic:
    """The gateway's evaluation of its experiments: at start (once `ready`: the columns and
    views exist) and every INTERVAL_S, verdicts into `show` (the gauges) and the switch to
    a declared winner where allowed."""

    async def run() -> None:
        verdicts = await asyncio.to_thread(
            evaluate, query, experiments, assigner, session_idle_minutes
        )
        for v in verdicts.values():
            show(v)
        log.info(
            "experiments evaluated", extra={"verdicts": {k: v.kind for k, v in verdicts.items()}}
        )

    return Periodic("experiment_evaluation", INTERVAL_S, run, until=ready)
