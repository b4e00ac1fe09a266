"""kill -9 cycles under streamed and plain load: no answered call without its row.

One gateway (recording into chDB through its record log) on one data directory, in front of
bench/upstream.py (its streams held open `--stream-tail-ms` after `[DONE]`). Each cycle
starts the gateway, runs clients against it, and kill -9s its process group at a random
moment, while calls are in flight. A client counts a call answered when it has the whole
answer: a 200 with its JSON body, or a stream read up to `data: [DONE]` (then it stops
reading, as the SDKs do). At the end the gateway starts once more, replays its log, and
the rows are counted against the answered calls: every answered call must have exactly
one row; rows may exceed answered calls by the calls in flight at each kill.

    .venv/bin/python bench/kill9.py                  # 20 cycles
    .venv/bin/python bench/kill9.py --cycles 50 --clients 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import httpx
from run import PY, Proc, free_port, gateway_cli, start, stop, wait_ready

BENCH = Path(__file__).resolve().parent
MSG = [{"role": "user", "content": "What is the capital of France?"}]


def config(tmp: Path, upstream_port: int, flush_ms: int) -> Path:
    cfg = tmp / "gateway.yaml"
    cfg.write_text(
        f"store: {{kind: chdb, path: {tmp / 'data'}, flush_interval_ms: {flush_ms}}}\n"
        "providers:\n"
        f'  canned: {{kind: openai, base_url: "http://127.0.0.1:{upstream_port}/v1", '
        'api_key: "sk-bench", price_as: openai}\n'
        'routes:\n  - {match: "*", provider: canned}\n'
    )
    return cfg


def gateway(tmp: Path, cfg: Path, port: int, cycle: int) -> Proc:
    cmd = [*gateway_cli(), "serve", "--config", str(cfg), "--port", str(port)]
    p = start(f"gateway-{cycle}", cmd, tmp)
    wait_ready(p, f"http://127.0.0.1:{port}/healthz", want_200=True)
    return p


async def load(url: str, cycle: int, clients: int, answered: list[str], stop: threading.Event):
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def worker(i: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                rid = f"k9b-{cycle}-{i}-{n}"
                stream = n % 2 == 0
                body = {"model": "gpt-4o-mini", "messages": MSG, "stream": stream}
                try:
                    if stream:
                        async with client.stream("POST", "/v1/chat/completions", json=body,
                                                 headers={"X-Request-Id": rid}) as r:  # fmt: skip
                            if r.status_code == 200:
                                async for line in r.aiter_lines():
                                    if line == "data: [DONE]":
                                        answered.append(rid)
                                        break  # and close, without reading to the end
                    else:
                        r = await client.post("/v1/chat/completions", json=body,
                                              headers={"X-Request-Id": rid})  # fmt: skip
                        if r.status_code == 200 and r.json().get("choices"):
                            answered.append(rid)
                except (httpx.HTTPError, ValueError):
                    await asyncio.sleep(0.01)  # the kill: the gateway is gone

        await asyncio.gather(*(worker(i) for i in range(clients)))


def rows_by_id(url: str, data: Path) -> dict[str, int]:
    token = json.loads((data / "gateway.json").read_text())["token"]
    q = b"SELECT request_id, count() AS n FROM llm_calls WHERE request_id LIKE 'k9b-%' "
    req = urllib.request.Request(url + "/_gateway/sql", method="POST",
                                 data=q + b"GROUP BY request_id FORMAT JSONEachRow",
                                 headers={"x-gateway-admin-token": token})  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as r:
        return {o["request_id"]: int(o["n"]) for o in map(json.loads, r.read().splitlines())}


def upstream_calls(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=5) as r:
        return int(json.load(r)["requests"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients")
    ap.add_argument("--min-s", type=float, default=0.5, help="least load before a kill")
    ap.add_argument("--max-s", type=float, default=3.0, help="most load before a kill")
    ap.add_argument("--stream-tail-ms", type=float, default=20.0,
                    help="the upstream holds each stream this long after [DONE]")  # fmt: skip
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    tmp = Path(tempfile.mkdtemp(prefix="kill9-"))
    up_port, gw_port = free_port(), free_port()
    url = f"http://127.0.0.1:{gw_port}"
    upstream = start("upstream", [PY, str(BENCH / "upstream.py"), "--port", str(up_port),
                                  "--stream-tail-ms", str(a.stream_tail_ms)], tmp)  # fmt: skip
    procs = [upstream]
    answered: list[str] = []
    try:
        wait_ready(upstream, f"http://127.0.0.1:{up_port}/_stats", want_200=True)
        # Rows rarely reach the store before a kill: they come back from the log's replay.
        cfg = config(tmp, up_port, flush_ms=5_000)
        for cycle in range(a.cycles):
            gw = gateway(tmp, cfg, gw_port, cycle)
            procs.append(gw)
            halt = threading.Event()
            mine: list[str] = []
            t = threading.Thread(
                target=asyncio.run, args=(load(url, cycle, a.clients, mine, halt),)
            )
            t.start()
            deadline = time.monotonic() + 120  # a machine that answers nothing at all
            while not mine and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(a.min_s, a.max_s))
            os.killpg(gw.popen.pid, signal.SIGKILL)  # the server, mid-load
            stop(gw)  # reaps it (and anything left in its group)
            halt.set()
            t.join()
            answered += mine
            print(f"cycle {cycle + 1}/{a.cycles}: {len(mine)} answered", file=sys.stderr)
        final = gateway(tmp, config(tmp, up_port, flush_ms=200), gw_port, a.cycles)
        procs.append(final)
        rows: dict[str, int] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the replay has reached the store
            rows = rows_by_id(url, tmp / "data")
            if all(r in rows for r in answered):
                break
            time.sleep(1)
        missing = [r for r in answered if r not in rows]
        doubled = {r: n for r, n in rows.items() if n > 1}
        result = {
            "cycles": a.cycles,
            "clients": a.clients,
            "stream_tail_ms": a.stream_tail_ms,
            "answered": len(answered),
            "answered_streams": sum(int(r.rsplit("-", 1)[1]) % 2 == 0 for r in answered),
            "upstream_calls": upstream_calls(up_port),
            "rows": sum(rows.values()),
            "missing": len(missing),
            "doubled": len(doubled),
            "rows_not_answered": len(set(rows) - set(answered)),
            "missing_ids": missing[:20],
        }
        out = BENCH / "results" / "kill9.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return 1 if missing or doubled else 0
    finally:
        for p in reversed(procs):
            stop(p)


if __name__ == "__main__":
    sys.exit(main())
