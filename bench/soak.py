"""Memory over many calls: a running gateway's resident set size while wrk sends calls.

Runs `wrk -t1 -c32 -d<step>s -s bench/chat.lua` again and again against a running gateway
until the calls sent reach `--calls`, and reads the gateway's RSS from /proc after each
step. Memory that grows with calls (a leak) shows as a slope; a flat line after the first
steps is what the gateway promises (start-up, pools and caches fill, then stay).

    python bench/soak.py --pid PID --url http://127.0.0.1:8080 --calls 300000

Prints one line per step and a JSON summary: RSS after the first step and at the end, the
maximum, and the growth per 100,000 calls over the second half of the run (least squares).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path

CHAT_LUA = Path(__file__).with_name("chat.lua")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wrk_calls(url: str, seconds: int, stream: bool) -> int:
    env = {**os.environ, "WRK_APP": "bench-soak", "WRK_STREAM": "1" if stream else ""}
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", "-s", str(CHAT_LUA), url],
        capture_output=True, text=True, env=env, check=True,
    ).stdout  # fmt: skip
    for line in out.splitlines():
        if "requests in" in line:
            return int(line.split()[0])
    raise RuntimeError(f"wrk printed no request count:\n{out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--calls", type=int, default=300_000)
    p.add_argument("--step", type=int, default=15, help="seconds per wrk run")
    a = p.parse_args()
    sent, points = 0, []
    while sent < a.calls:
        sent += wrk_calls(a.url, a.step, stream=len(points) % 2 == 1)  # plain and streamed
        points.append((sent, rss_mb(a.pid)))
        print(f"{sent:>9} calls  RSS {points[-1][1]:8.1f} MB", flush=True)
    half = [pt for pt in points if pt[0] >= sent / 2]
    r1 = points[-1][1]
    slope = statistics.linear_regression(*zip(*half, strict=True)).slope * 100_000 if len(
        half) > 1 else 0.0  # fmt: skip
    print(json.dumps({
        "calls": sent, "rss_first_mb": round(points[0][1], 1), "rss_last_mb": round(r1, 1),
        "rss_max_mb": round(max(r for _, r in points), 1),
        "growth_mb_per_100k_calls_second_half": round(slope, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
