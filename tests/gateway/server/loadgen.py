"""Load and hostile bodies against a running gateway, for a while: `python -m
tests.gateway.server.loadgen URL SECONDS CONCURRENCY SEED`. Prints one JSON line of counts
when done. Run in a process of its own, so that the probes measured beside it share no
interpreter (and no GIL) with the load."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

import httpx

MSG = [{"role": "user", "content": "hello"}]


CHAT, JSON_CT = "/v1/chat/completions", {"content-type": "application/json"}


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def hostile(rng: random.Random) -> tuple[str, bytes, dict[str, str]]:
    """One hostile request: (path, body, headers)."""
    kind = rng.randrange(9)
    if kind == 0:  # deep nesting
        n = rng.randrange(1000, 100_000)
        return CHAT, b'{"model":"gpt-4o","messages":' + b"[" * n + b"]" * n + b"}", JSON_CT
    if kind == 1:  # a body near the limit, one long string
        text = "x" * rng.randrange(1_000_000, 8_000_000)
        msgs = [{"role": "user", "content": text}]
        return CHAT, _json({"model": "gpt-4o", "messages": msgs}), JSON_CT
    if kind == 2:  # a great many small messages
        msgs = [{"role": "user", "content": "hi"}] * rng.randrange(10_000, 200_000)
        return CHAT, _json({"model": "gpt-4o", "messages": msgs}), JSON_CT
    if kind == 3:  # truncated JSON
        body = _json({"model": "gpt-4o", "messages": MSG * 1000})
        return CHAT, body[: rng.randrange(len(body))], JSON_CT
    if kind == 4:  # binary
        path = rng.choice([CHAT, "/v1/messages", "/v1/embeddings", "/v1/feedback"])
        return path, rng.randbytes(rng.randrange(1, 200_000)), JSON_CT
    if kind == 5:  # a flood of distinct names
        headers = {**JSON_CT, "x-gateway-app": f"a-{rng.getrandbits(40):x}"}
        return CHAT, _json({"model": f"m-{rng.getrandbits(40):x}", "messages": MSG}), headers
    if kind == 6:  # many escapes to decode
        text = "\\u00e9" * rng.randrange(100_000, 1_000_000)
        body = ('{"model":"text-embedding-3-small","input":"' + text + '"}').encode()
        return "/v1/embeddings", body, JSON_CT
    if kind == 7:  # feedback with a huge value
        body = _json({"request_id": "r", "name": "x" * 100_000, "value": ["y"] * 100_000})
        return "/v1/feedback", body, JSON_CT
    msgs = MSG * rng.randrange(1, 50_000)
    body = _json({"model": "claude-3-5-sonnet", "max_tokens": 10, "messages": msgs})
    return "/v1/messages", body, JSON_CT


async def worker(
    c: httpx.AsyncClient, rng: random.Random, until: float, counts: dict[str, int]
) -> None:
    while time.monotonic() < until:
        kind = rng.randrange(10)
        try:
            if kind < 3:
                r = await c.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": MSG})
            elif kind < 5:
                async with c.stream(
                    "POST",
                    "/v1/chat/completions",
                    json={"model": "gpt-4o", "messages": MSG, "stream": True},
                ) as r:
                    async for _ in r.aiter_bytes():
                        pass
            elif kind == 5:
                r = await c.get("/metrics")
            else:
                path, body, headers = hostile(rng)
                r = await c.post(path, content=body, headers=headers)
            counts[str(r.status_code)] = counts.get(str(r.status_code), 0) + 1
        except httpx.HTTPError as e:
            counts[type(e).__name__] = counts.get(type(e).__name__, 0) + 1


async def main(url: str, seconds: float, concurrency: int, seed: int) -> None:
    counts: dict[str, int] = {}
    until = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        await asyncio.gather(
            *(worker(c, random.Random(seed + i), until, counts) for i in range(concurrency))
        )
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    url, seconds, concurrency, seed = sys.argv[1:5]
    asyncio.run(main(url, float(seconds), int(concurrency), int(seed)))
