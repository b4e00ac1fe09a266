"""kill -9 right after a client read a stream's terminal event: the call is answered for
that client (the SDKs stop reading there), so its row must survive. The fake upstream
holds each body open after its last event, so a gateway that appended the record only
at the upstream's end of body would be killed, deterministically, with no row."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatewayProcess, gateway_config
from tests.fakes import Behaviour, FakeUpstream

MSG = [{"role": "user", "content": "hi"}]
CYCLES = 3
# (path, model, the line that ends the stream for its client, extra body)
STREAMS = [
    ("/v1/chat/completions", "gpt-4o", "data: [DONE]", {}),
    ("/v1/chat/completions", "claude-3-5-sonnet", "data: [DONE]", {"max_tokens": 16}),
    ("/v1/messages", "claude-3-5-sonnet", "event: message_stop", {"max_tokens": 16}),
    ("/v1/responses", "gpt-4o", "event: response.completed", {}),
]


@pytest.fixture
def holding() -> Iterator[FakeUpstream]:
    # Its own fake: its held streams must not slow the session's.
    with FakeUpstream() as f:
        f.behaviour = Behaviour(hold_after_end=60.0)
        yield f


def read_to_terminal(stack: ExitStack, gw: GatewayProcess, i: int) -> str:
    """Open stream i, read it up to its terminal event and leave it open; its request id."""
    path, model, terminal, extra = STREAMS[i]
    rid = f"k9w-{i}-{uuid.uuid4().hex[:8]}"
    body = {"model": model, "stream": True, **extra}
    body["input" if path == "/v1/responses" else "messages"] = MSG
    client = stack.enter_context(httpx.Client(base_url=gw.url, timeout=30))
    resp = stack.enter_context(
        client.stream("POST", path, json=body, headers={"X-Request-Id": rid})
    )
    assert resp.status_code == 200, resp.read()
    for line in resp.iter_lines():
        if line == terminal:
            return rid
    raise AssertionError(f"{path} {model}: the stream ended without `{terminal}`")


def test_kill_9_after_the_terminal_event_keeps_the_row(holding, selfhosted, tmp_path: Path):
    cfg = gateway_config(holding.url, selfhosted.url)
    cfg["store"]["flush_interval_ms"] = 60_000  # the rows come from the log's replay
    gw = GatewayProcess(cfg, tmp_path)
    answered: list[str] = []
    for _ in range(CYCLES):
        gw.start()
        with ExitStack() as stack:  # every stream still open when the kill lands
            answered += [read_to_terminal(stack, gw, i) for i in range(len(STREAMS))]
            gw.stop(signal.SIGKILL)
    cfg["store"]["flush_interval_ms"] = 200
    last = GatewayProcess(cfg, tmp_path)
    last.port, last.url = gw.port, gw.url
    last.start()
    try:
        rows = last.wait_rows("request_id LIKE 'k9w-%'", len(answered), timeout=60)
        ids = [r["request_id"] for r in rows]
        assert sorted(ids) == sorted(answered)  # each answered call once, none missing
        for r in rows:
            # Committed at the terminal event, the record is whole: the upstream's usage,
            # its time to first token and the bytes relayed.
            assert r["outcome"] == "ok" and r["status_code"] == 200, r
            assert r["output_tokens"] == 5 and r["input_tokens"] > 0, r
            assert not r["usage_estimated"], r
            assert r["ttft_ms"] > 0 and r["upstream_ms"] > 0, r
            assert r["response_bytes"] > 0, r
    finally:
        assert last.stop() == 0
