"""An upstream that breaks HTTP at the socket level, which no HTTP server library would let
a test do: a raw TCP server on 127.0.0.1 in a thread, answering each request on a
keep-alive connection by hand according to `mode`:

- `ok`: a whole, valid chat completion (`content-length` framed).
- `bad_status`: a status line that is not HTTP's (`HTTP/1.1 2OO OK`), then the connection
  closes.
- `trailing`: a whole, valid answer followed by bytes past its end on the same write: a
  second answer nobody asked for (`smuggled`), as a desynchronised or hostile upstream
  sends. The connection stays open.
- `late`: the same, the extra answer sent 50 ms after the first, when the gateway has
  already put the connection back in its pool.

`connections` counts accepted connections and `requests` the requests read, so a test can
tell whether the gateway reused a connection.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Self

SMUGGLED = b"smuggled"


def _answer(content: str, model: str = "gpt-4o") -> bytes:
    body = json.dumps({
        "id": "chatcmpl-raw", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    }).encode()  # fmt: skip
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(
        body
    )
    return head + body


class RawUpstream:
    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.connections = 0
        self.requests = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="raw-upstream")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        served = 0  # on this connection
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                self.requests += 1
                served += 1
                if self.mode == "bad_status":
                    conn.sendall(b"HTTP/1.1 2OO OK\r\ncontent-length: 2\r\n\r\n{}")
                    return
                answer = _answer(f"answer {served} on this connection")
                extra = (
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED)
                )
                if self.mode == "trailing":
                    answer += extra
                conn.sendall(answer)
                if self.mode == "late":
                    time.sleep(0.05)
                    conn.sendall(extra)
