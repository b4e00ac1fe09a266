"""Run wrk with bench/chat.lua and parse its text output."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

LUA = Path(__file__).with_name("chat.lua")
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class WrkResult:
    connections: int
    duration_s: float
    requests: int  # completed responses wrk counted (any status)
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    non_2xx: int  # wrk's "Non-2xx or 3xx responses" (status >= 400)
    socket_errors: dict[str, int]
    cpu_pct: float | None = None  # of the target's processes, 100 = one core

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    def as_dict(self) -> dict[str, object]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse(out: str, connections: int) -> WrkResult:
    def pct(p: str) -> float | None:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        return _ms(*m.groups()) if m else None

    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", out)
    if not m:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    requests, dur = int(m[1]), _ms(m[2], m[3]) / 1000.0
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    names = ("connect", "read", "write", "timeout")
    return WrkResult(
        connections=connections,
        duration_s=dur,
        requests=requests,
        rps=float(rps[1]) if rps else 0.0,
        p50_ms=pct("50") if requests else None,
        p90_ms=pct("90") if requests else None,
        p99_ms=pct("99") if requests else None,
        non_2xx=int(non2xx[1]) if non2xx else 0,
        socket_errors={n: int(v) for n, v in zip(names, sock.groups(), strict=True)}
        if sock
        else {},
    )


def wrk_path() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit(
            "wrk is not installed: apt-get update && apt-get install -y wrk (Debian package wrk)"
        )
    return found


def run_wrk(
    url: str,
    connections: int,
    seconds: float,
    *,
    stream: bool,
    app: str,
    key: str = "",
    cache: str = "",
) -> tuple[WrkResult, str]:
    """One wrk run: -t2 at c>1, -t1 at c=1, always --latency. Returns (parsed, raw text).
    `cache`: "hit" or "miss" (bench/chat.lua's WRK_CACHE)."""
    threads = min(2, connections)
    cmd = [
        wrk_path(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(LUA),
        url,
    ]
    env = {**os.environ, "WRK_STREAM": "1" if stream else "0", "WRK_APP": app, "WRK_KEY": key,
           "WRK_CACHE": cache, "WRK_NONCE": os.urandom(6).hex()}  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return parse(proc.stdout, connections), proc.stdout
