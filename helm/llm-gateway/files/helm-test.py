"""`helm test`: the gateway is ready, and one call goes through it to an upstream and back.

The upstream is this Pod: a fake OpenAI-compatible server on UPSTREAM_PORT, reached by the
gateway through a Service that exists only while the test runs. The chart routes the model
TEST_MODEL (and no other) to it, and calls with a gateway key allowed that model only.
Standard library only: it runs in the gateway's image. Exit status 0 when every check
passed; otherwise the first failure is printed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GATEWAY = os.environ["GATEWAY_URL"].rstrip("/")
KEY = os.environ["GATEWAY_KEY"]
MODEL = os.environ["TEST_MODEL"]
PORT = int(os.environ["UPSTREAM_PORT"])
LISTEN = os.environ.get("UPSTREAM_LISTEN", "0.0.0.0")
DEADLINE = time.monotonic() + float(os.environ.get("TIMEOUT_SECONDS", "120"))
# Retried while the Service's endpoints catch up: the gateway cannot reach us yet.
NOT_YET = (502, 503, 504)

received: list[dict[str, object]] = []


class FakeUpstream(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        received.append(
            {"path": self.path, "authorization": self.headers.get("authorization"), "body": body}
        )
        if self.path != "/v1/chat/completions":
            self.send_error(404)
            return
        said = body["messages"][-1]["content"]
        answer = {
            "id": "chatcmpl-helm-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": f"pong {said}"},
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def fail(message: str) -> None:
    print(f"FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def request(path: str, body: dict[str, object] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body); status 0 when the gateway could not be reached."""
    headers = {"authorization": f"Bearer {KEY}", "x-gateway-app": MODEL}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    req = urllib.request.Request(GATEWAY + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()
    except OSError as e:
        return 0, {}, str(e).encode()


def until_answered(what: str, path: str, body: dict[str, object] | None = None):
    while True:
        status, headers, data = request(path, body)
        if status not in (0, *NOT_YET):
            return status, headers, data
        if time.monotonic() > DEADLINE:
            fail(
                f"{what}: no answer in time (last: {status or 'unreachable'} "
                f"{data[:300].decode(errors='replace')})"
            )
        time.sleep(2)


def main() -> None:
    server = ThreadingHTTPServer((LISTEN, PORT), FakeUpstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    status, _, data = until_answered("GET /readyz", "/readyz")
    if status != 200:
        fail(f"GET {GATEWAY}/readyz answered {status}: {data[:300].decode(errors='replace')}")
    print(f"ok: {GATEWAY}/readyz answered 200", flush=True)

    nonce = uuid.uuid4().hex
    call = {"model": MODEL, "messages": [{"role": "user", "content": nonce}]}
    status, headers, data = until_answered("the proxied call", "/v1/chat/completions", call)
    if status != 200:
        fail(f"POST /v1/chat/completions answered {status}: {data[:500].decode(errors='replace')}")
    answer = json.loads(data)["choices"][0]["message"]["content"]
    if answer != f"pong {nonce}":
        fail(f"the answer is not the fake upstream's: {answer!r}")
    mine = [r for r in received if nonce in json.dumps(r["body"])]
    if not mine:
        fail("the gateway answered, but the fake upstream never saw the call")
    if any(KEY in str(r["authorization"]) for r in mine):
        fail("the gateway key reached the upstream: it must stay in the gateway")
    print(
        f"ok: call {headers.get('x-request-id', '?')} went through the gateway to the "
        "fake upstream and back",
        flush=True,
    )
    server.shutdown()


if __name__ == "__main__":
    main()
