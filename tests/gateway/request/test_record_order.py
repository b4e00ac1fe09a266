"""When a call's record reaches its consumers, against the bytes of its answer: the durable
one (the log) before the answer's last bytes, so that a client holding an answer always has
its row; metrics and spans after them, so that the client does not wait on them; each once.
In process, with the real proxy and a fake upstream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.providers import provider_for
from gateway.recording.record import CallRecord, RecordSink
from gateway.request.attempts import Attempts
from gateway.request.proxy import Proxy
from gateway.request.routing import Router
from gateway.server import ON_DISCONNECT
from gateway.upstream import UpstreamClient
from tests.fakes import FakeUpstream


@pytest.mark.parametrize("stream", [False, True])
def test_the_log_gets_the_record_before_the_last_bytes_and_metrics_after(stream: bool):
    events: list[str] = []

    def durable(rec: CallRecord) -> None:
        events.append(f"durable:{rec.status_code}")

    def after(rec: CallRecord) -> None:
        events.append(f"after:{rec.status_code}")

    async def call(url: str) -> None:
        cfg = parse_config(
            {
                "providers": {"f": {"kind": "openai", "base_url": url + "/v1", "api_key": "sk"}},
                "routes": [{"match": "*", "provider": "f"}],
            },
            {},
        )
        router = Router(cfg, {n: provider_for(p) for n, p in cfg.providers.items()})
        client = UpstreamClient(max_connections=4, max_idle=4)
        proxy = Proxy(router, Attempts(cfg.retries, client), RecordSink([durable], [after]),
                      cfg.capture, cfg.server.max_body_bytes)  # fmt: skip
        body = json.dumps({"model": "gpt-4o-mini", "stream": stream,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()  # fmt: skip
        scope = {
            "type": "http", "method": "POST", "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions", "root_path": "", "query_string": b"",
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
            "extensions": {ON_DISCONNECT: lambda cb: None},  # the client stays
        }  # fmt: skip

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.body" and not msg.get("more_body", False):
                events.append("last bytes")
            elif msg["type"] == "http.response.start":
                events.append(f"start:{msg['status']}")

        try:
            await proxy(scope, receive, send)
        finally:
            await client.close()

    with FakeUpstream() as fake:
        asyncio.run(call(fake.url))
    assert events == ["start:200", "durable:200", "last bytes", "after:200"], events
