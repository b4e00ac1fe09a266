"""What an experiment costs the request path, in CPU time per call, in one process.

    uv run python bench/experiments_overhead.py [--calls 3000] [--rounds 5]

The gateway's ASGI app is driven in-process (no sockets) with a canned upstream client
and the store disabled, alternately with and without an experiment that takes every call
(unit `request`, two variants, one setting a property), for `--rounds` rounds. CPU time
(`time.process_time`) rather than wall time: on a shared machine it is what the gateway
itself spent. Prints the CPU per call of each and their ratio (off / on, like req/s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.app import build_gateway, create_app  # noqa: E402
from gateway.config import parse_config  # noqa: E402
from gateway.upstream import UpstreamResponse  # noqa: E402

ANSWER = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini-2024-07-18",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":2,'
    b'"total_tokens":22}}'
)
BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Capital of France?"}]}'
EXPERIMENT = {
    "bench": {
        "unit": "request",
        "variants": [
            {"name": "a", "model": "gpt-4o-mini"},
            {"name": "b", "model": "gpt-4o-mini", "properties": {"prompt": "v2"}},
        ],
    }
}


def config(experiment: bool) -> dict:
    return {
        "store": {"kind": "disabled"},
        "log": {"enabled": False},
        "providers": {
            "canned": {
                "kind": "openai",
                "base_url": "http://upstream.test/v1",
                "api_key": "sk-bench",
            }
        },
        "routes": [{"match": "*", "provider": "canned"}],
        **({"experiments": EXPERIMENT} if experiment else {}),
    }


class _NoSocket:
    """Stands in for a connection: the canned answer is whole before it is read."""

    def finished(self, r: UpstreamResponse) -> None:
        pass

    def resume(self) -> None:
        pass


class CannedClient:
    """The upstream client's interface, answering ANSWER to every call without a socket."""

    async def send(self, *_: object) -> UpstreamResponse:
        r = UpstreamResponse(_NoSocket())  # type: ignore[arg-type]
        r.status, r.headers = 200, [(b"content-type", b"application/json")]
        r._feed(ANSWER)
        r.complete = True
        return r

    async def close(self) -> None:
        pass


async def cpu_per_call(experiment: bool, calls: int) -> float:
    gw = build_gateway(parse_config(config(experiment), env={}), client=CannedClient())  # type: ignore[arg-type]
    app = create_app(gw)
    headers = {"content-type": "application/json", "x-gateway-app": "bench"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw") as c:
        for _ in range(200):  # warm-up: caches, first-call paths
            await c.post("/v1/chat/completions", content=BODY, headers=headers)
        t0 = time.process_time()
        for _ in range(calls):
            r = await c.post("/v1/chat/completions", content=BODY, headers=headers)
        spent = time.process_time() - t0
    assert r.status_code == 200, r.text
    assert ("x-gateway-variant" in r.headers) == experiment
    return spent / calls


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    off, on = [], []
    for i in range(a.rounds):
        for exp in (False, True) if i % 2 == 0 else (True, False):
            (on if exp else off).append(asyncio.run(cpu_per_call(exp, a.calls)))
    m_off, m_on = statistics.median(off), statistics.median(on)
    print(f"CPU per call, experiment off: {m_off * 1e6:.0f} us (median of {a.rounds})")
    print(f"CPU per call, experiment on:  {m_on * 1e6:.0f} us")
    print(f"ratio (calls per CPU-second, on / off): {m_off / m_on:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
