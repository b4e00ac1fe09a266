"""What a feature costs, measured with the gateway without it loaded at the same moment.

On a machine shared with other work the same target's req/s moves by 20% between runs a
minute apart: more than the few per cent a feature costs. Here the two targets of a pair
(the gateway with a feature, and without) run side by side, each loaded by its own wrk
(c=16 each, 32 in all), so that whatever else the machine does slows both alike. Two
figures per round:

- req/s with / without: the share of the machine each target turned into answers;
- calls per CPU-second with / without: answered calls per second of CPU time of each
  target's processes (a gateway, and its Redis);
- calls per event-loop CPU-second with / without: the same for the gateway's event-loop
  thread alone, where a feature's per-call work runs. The whole process's figure also holds
  the embedded store's background threads (parsing inserts, merging parts), whose work
  lands in whichever round a merge happens to run: per round it moves by ±10%, the
  event loop's by a few per cent.

Which of the two starts its wrk first alternates between rounds.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from wrk import WrkResult, run_wrk

PAIR_C = 16  # connections per target: together the c=32 of the sequential runs


@dataclass(frozen=True)
class Side:
    """One target of a pair: its URL, the gateway key wrk sends, and what counts its CPU."""

    name: str
    url: str
    key: str
    cpu_ticks: Callable[[], int]  # utime+stime of the target's processes
    loop_ticks: Callable[[], int]  # utime+stime of the gateway's event-loop thread


def _load(sides: tuple[Side, Side], seconds: float, app: str) -> list[tuple[WrkResult, int, int]]:
    ticks0 = [s.cpu_ticks() for s in sides]
    loop0 = [s.loop_ticks() for s in sides]
    with ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(run_wrk, s.url, PAIR_C, seconds, stream=False, app=app, key=s.key)
            for s in sides
        ]
        results = [r.result()[0] for r in runs]
    ticks = [s.cpu_ticks() - t0 for s, t0 in zip(sides, ticks0, strict=True)]
    loop = [s.loop_ticks() - t0 for s, t0 in zip(sides, loop0, strict=True)]
    for s, r in zip(sides, results, strict=True):
        if r.errors:
            print(f"  !! paired {s.name}: {r.non_2xx} non-2xx, socket errors {r.socket_errors}",
                  file=sys.stderr)  # fmt: skip
    return list(zip(results, ticks, loop, strict=True))


def warm(on: Side, off: Side, seconds: float) -> None:
    _load((on, off), seconds, "bench-paired-warmup")


def measure_pair(on: Side, off: Side, rounds: int, seconds: float) -> dict[str, object]:
    """Per round: req/s, calls per CPU-second and calls per event-loop CPU-second, each with
    / without; the medians, with every round's value."""
    rps: list[float] = []
    per_cpu: list[float] = []
    per_loop: list[float] = []
    for rnd in range(rounds):
        sides = (on, off) if rnd % 2 == 0 else (off, on)
        first, second = _load(sides, seconds, f"bench-paired-{rnd}")
        (r_on, t_on, l_on), (r_off, t_off, l_off) = (
            (first, second) if sides[0] is on else (second, first)
        )
        if not (r_on.requests and r_off.requests and t_on and t_off and l_on and l_off):
            continue
        rps.append(round(r_on.rps / r_off.rps, 3))
        # calls per tick, with / without
        per_cpu.append(round((r_on.requests / t_on) / (r_off.requests / t_off), 3))
        per_loop.append(round((r_on.requests / l_on) / (r_off.requests / l_off), 3))
    if not rps:
        return {}
    return {
        "rps_ratio": {"value": round(statistics.median(rps), 3), "rounds": rps},
        "calls_per_cpu_s": {"value": round(statistics.median(per_cpu), 3), "rounds": per_cpu},
        "calls_per_loop_cpu_s": {
            "value": round(statistics.median(per_loop), 3),
            "rounds": per_loop,
        },
    }
