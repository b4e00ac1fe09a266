"""Translation overhead, two ways. In process: the time the translation code adds to one
call (request, answer, and a stream's events) in each direction. End to end: the same
conversation sent to the gateway as an OpenAI chat call (passed through to the canned
OpenAI upstream) and as an Anthropic Messages call (translated to chat and back), at c=1,
alternating in one run; wrk's p50 for each and the difference.

    .venv/bin/python bench/translate.py --duration 5 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from run import PY, free_port, launch, start, stop, wait_ready
from wrk import parse, wrk_path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))


def p50(url: str, seconds: int, dialect: str, stream: bool) -> float:
    env = {**os.environ, "WRK_DIALECT": dialect, "WRK_STREAM": "1" if stream else "0",
           "WRK_APP": f"bench-translate-{dialect}"}  # fmt: skip
    cmd = [wrk_path(), "-t1", "-c1", f"-d{seconds}s", "--latency", "-s",
           str(BENCH / "chat.lua"), url]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    r = parse(out, 1)
    if r.errors:
        raise RuntimeError(f"wrk errors ({dialect}): {out}")
    return r.p50_ms


def in_process(n: int = 20000) -> None:
    """Microseconds per call that translating adds (what a pass-through does instead is
    forward the bytes it has)."""
    import time

    import msgspec

    from gateway.providers.base import ProviderConfig
    from gateway.providers.translate import CHAT_TO_MESSAGES, MESSAGES_TO_CHAT

    cfg = ProviderConfig(name="p", kind="openai", base_url="http://x")
    system = "You are a helpful assistant. Answer briefly."
    chat = {"model": "m", "messages": [{"role": "system", "content": system},
            {"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0.2, "max_tokens": 64}  # fmt: skip
    messages = {"model": "m", "system": system, "temperature": 0.2, "max_tokens": 64,
                "messages": chat["messages"][1:]}  # fmt: skip
    reply = "Hello! The capital of France is Paris. Is there anything else I can help you with?"
    anthropic_answer = msgspec.json.encode({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 24, "output_tokens": 19}})  # fmt: skip
    chat_answer = msgspec.json.encode({
        "id": "c1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 24, "completion_tokens": 19, "total_tokens": 43}})  # fmt: skip
    chunks = [b'{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
              b'"delta":{"content":"Paris "},"finish_reason":null}]}'] * 7  # fmt: skip
    events = [(
        "content_block_delta",
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Paris "}}',
    )] * 7  # fmt: skip
    dec, enc = msgspec.json.decode, msgspec.json.encode
    cases = {
        "chat -> messages, whole": lambda: enc(CHAT_TO_MESSAGES.response(
            dec(anthropic_answer), chat)) and CHAT_TO_MESSAGES.request(chat, "m", cfg),
        "messages -> chat, whole": lambda: enc(MESSAGES_TO_CHAT.response(
            dec(chat_answer), messages)) and MESSAGES_TO_CHAT.request(messages, "m", cfg),
        "chat -> messages, 7 stream events": lambda: [
            s.event(e, d) for s in [CHAT_TO_MESSAGES.stream(chat)] for e, d in events],
        "messages -> chat, 7 stream events": lambda: [
            s.event("", d) for s in [MESSAGES_TO_CHAT.stream(messages)] for d in chunks],
    }  # fmt: skip
    for name, fn in cases.items():
        for _ in range(1000):
            fn()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        print(f"in process: {name:34} {(time.perf_counter() - t) / n * 1e6:6.1f} us per call")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    in_process()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        up_port = free_port()
        upstream = start("upstream", [PY, str(BENCH / "upstream.py"), "--port", str(up_port)], tmp)
        try:
            wait_ready(upstream, f"http://127.0.0.1:{up_port}/_stats", want_200=True)
            with launch("gateway", tmp, up_port) as t:
                for stream in (False, True):
                    p50(t.url, 2, "openai", stream)  # warm-up
                    p50(t.url, 2, "anthropic", stream)
                    rows = {"openai": [], "anthropic": []}
                    for _ in range(args.rounds):
                        for dialect in rows:
                            rows[dialect].append(p50(t.url, args.duration, dialect, stream))
                    a = statistics.median(rows["openai"])
                    b = statistics.median(rows["anthropic"])
                    print(f"{'stream' if stream else 'chat':6} c=1 p50 ms: pass-through {a:.3f}"
                          f"  translated {b:.3f}  difference {b - a:+.3f}"
                          f"  (rounds: {rows})")  # fmt: skip
        finally:
            stop(upstream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
