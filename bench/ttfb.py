"""Time to first byte of a streamed chat completion, one request at a time.

wrk measures a response until its last byte; for a stream, what an app feels is how soon
the first byte of the answer arrives. This client sends the same streamed request as
`bench/chat.lua` (WRK_STREAM=1) over one keep-alive connection, N times, and measures from
the write of the request to the first byte of the response and to its last, reading the
chunked body until its terminating chunk.

    python bench/ttfb.py --url http://127.0.0.1:8080 --requests 2000

Prints one JSON object: {"requests", "ttfb_p50_ms", "ttfb_p90_ms", "total_p50_ms"}.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time
from urllib.parse import urlsplit

BODY = (
    b'{"model":"gpt-4o-mini","messages":['
    b'{"role":"system","content":"You are a helpful assistant. Answer briefly."},'
    b'{"role":"user","content":"What is the capital of France?"}],'
    b'"temperature":0.2,"max_tokens":64,"stream":true,"stream_options":{"include_usage":true}}'
)


def request(host: str, port: int, key: str) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\n"
        + f"Host: {host}:{port}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Authorization: Bearer {key}\r\n".encode()
        + b"X-Gateway-App: bench-ttfb\r\n"
        + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
        + BODY
    )


def one(sock: socket.socket, req: bytes) -> tuple[float, float]:
    """(seconds to the first byte, seconds to the last) of one streamed answer."""
    t0 = time.perf_counter()
    sock.sendall(req)
    buf = sock.recv(65536)
    t_first = time.perf_counter()
    if not buf:
        raise ConnectionError("the server closed the connection")
    while b"\r\n0\r\n\r\n" not in buf:  # chunked: the stream ends with its last chunk
        more = sock.recv(65536)
        if not more:
            raise ConnectionError("the server closed the connection mid-stream")
        buf += more
    if not buf.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected answer: {buf[:200]!r}")
    return t_first - t0, time.perf_counter() - t0


def measure(url: str, n: int, key: str = "sk-bench-client", warmup: int = 200) -> dict[str, float]:
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    req = request(host, port, key)
    with socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(warmup):
            one(sock, req)
        firsts, totals = zip(*(one(sock, req) for _ in range(n)), strict=True)
    q = statistics.quantiles(firsts, n=10)
    return {
        "requests": n,
        "ttfb_p50_ms": statistics.median(firsts) * 1000,
        "ttfb_p90_ms": q[8] * 1000,
        "total_p50_ms": statistics.median(totals) * 1000,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--key", default="sk-bench-client")
    a = p.parse_args()
    print(json.dumps(measure(a.url, a.requests, a.key)))


if __name__ == "__main__":
    main()
