"""The fastest trivial Litestar pass-through: the floor the gateway is measured against.

One uvicorn worker (uvloop, httptools, no access log), Litestar with logging off, one POST
handler that forwards the body with one shared httpx client and returns the upstream's
bytes, status and content type. It records nothing. SSE answers are streamed through.

    python bench/baseline.py --port 9002 --upstream http://127.0.0.1:9001/v1 [--transport httpx]
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import httpx
import uvicorn
from httpx_aiohttp import AiohttpTransport
from litestar import Litestar, Request, Response, post
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200)  # as the gateway


def build_app(upstream: str, transport: str) -> Litestar:
    tr: httpx.AsyncBaseTransport = (
        AiohttpTransport(limits=LIMITS, trust_env=False)
        if transport == "aiohttp"
        else httpx.AsyncHTTPTransport(limits=LIMITS, trust_env=False)
    )
    client = httpx.AsyncClient(transport=tr, timeout=60.0, trust_env=False)
    url = upstream.rstrip("/") + "/chat/completions"
    headers = {"authorization": "Bearer sk-bench", "content-type": "application/json"}

    @post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.body()
        r = await client.send(
            client.build_request("POST", url, content=body, headers=headers), stream=True
        )
        ctype = r.headers.get("content-type", "application/json")
        if ctype.startswith("text/event-stream"):

            async def relay() -> AsyncIterator[bytes]:
                async for chunk in r.aiter_raw():
                    yield chunk

            return Stream(
                relay(),
                status_code=r.status_code,
                media_type=ctype,
                background=BackgroundTask(r.aclose),
            )
        data = await r.aread()
        return Response(data, status_code=r.status_code, media_type=ctype)

    async def close() -> None:
        await client.aclose()

    return Litestar([chat], on_shutdown=[close], logging_config=None, openapi_config=None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=9002)
    p.add_argument("--upstream", default="http://127.0.0.1:9001/v1")
    p.add_argument("--transport", choices=["aiohttp", "httpx"], default="aiohttp")
    a = p.parse_args()
    uvicorn.run(
        build_app(a.upstream, a.transport),
        host="127.0.0.1",
        port=a.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
