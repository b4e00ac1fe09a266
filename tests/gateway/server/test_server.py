"""The server around the app, against a real gateway process over raw sockets: connections
that cannot be held forever, forwarding headers trusted only from configured proxies, one
`date` and `server` header per answer, files private to the gateway's user."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, GatewayProcess, gateway_config

PUB_KEY = "pk_srv_public_123456"
ORIGIN = "https://app.example.com"
# How long a socket waits for the gateway before the test calls it a hang: well past the
# configured timeouts below, far short of "forever".
HANG = 15.0


@pytest.fixture(scope="module")
def gw(fake, selfhosted, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["server"].update(header_timeout_s=1, body_timeout_s=1, idle_timeout_s=1,
                         max_connections=40)  # fmt: skip
    cfg["capture"]["mode"] = "full"
    cfg["feedback"] = {"keys": [{"key": PUB_KEY, "kind": "publishable", "origins": [ORIGIN],
                                 "rate_per_minute": 5, "app": "web"}]}  # fmt: skip
    g = GatewayProcess(cfg, tmp_path_factory.mktemp("server")).start()
    yield g
    g.stop()


def connect(gw: GatewayProcess) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=HANG)
    return s


def read_all(s: socket.socket) -> bytes:
    """Everything until the gateway closes the connection (a hang raises TimeoutError)."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def parse(raw: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (h.partition(":") for h in lines[1:])]
    return int(lines[0].split()[1]), headers, body


def assert_openai_error(body: bytes, status_code: int, code: str) -> None:
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code, (status_code, err)


def test_idle_connection_is_closed(gw: GatewayProcess):
    with connect(gw) as s:
        assert read_all(s) == b""


def test_slow_headers_get_408_and_close(gw: GatewayProcess):
    with connect(gw) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n")
        got = b""
        s.settimeout(0.2)
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline:  # one more header line now and then, never the end
            try:
                s.sendall(b"X-Slow: 1\r\n")
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            got += chunk
        status, _, body = parse(got)
        assert status == 408
        assert_openai_error(body, status, "request_timeout")


def drip_blank_lines(s: socket.socket) -> tuple[bool, bytes]:
    """Send an empty line every 0.2 s (a server may skip them before a request line) until
    the gateway closes the connection: (closed, what it answered), or (False, ...) at HANG."""
    got = b""
    s.settimeout(0.2)
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        try:
            s.sendall(b"\r\n")
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def test_blank_lines_neither_keep_a_connection_idle_nor_start_a_request(gw: GatewayProcess):
    with connect(gw) as s:
        closed, got = drip_blank_lines(s)
    assert closed
    if got:  # closed by the head deadline: a 408, in the OpenAI shape
        status, _, body = parse(got)
        assert status == 408
        assert_openai_error(body, status, "request_timeout")
    # After a request too: the idle deadline after an answer is not reset by blank lines.
    with connect(gw) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        closed, got = drip_blank_lines(s)
    assert closed and parse(got)[0] == 200


def test_blank_line_connections_cannot_hold_every_slot(gw: GatewayProcess):
    # As many connections as the cap, each sending an empty line now and then: their
    # slots come free, and a normal call is served while they keep dripping.
    socks = [connect(gw) for _ in range(40)]
    stop = threading.Event()

    def drip() -> None:
        while not stop.wait(0.2):
            for s in socks:
                with contextlib.suppress(OSError):
                    s.sendall(b"\r\n")

    t = threading.Thread(target=drip)
    t.start()
    try:
        deadline = time.monotonic() + HANG
        while True:
            try:
                if httpx.get(gw.url + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "every slot still held"
            time.sleep(0.2)
    finally:
        stop.set()
        t.join()
        for s in socks:
            s.close()


@pytest.mark.parametrize("path", ["/v1/chat/completions", f"/v1/feedback?key={PUB_KEY}"])
def test_body_shorter_than_its_length_gets_408(gw: GatewayProcess, path: str):
    with connect(gw) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            f"Origin: {ORIGIN}\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"model": "gpt-4o",'
        )
        status, headers, body = parse(read_all(s))
    assert status == 408
    assert ("connection", "close") in headers
    assert_openai_error(body, status, "request_timeout")


def test_idle_keep_alive_connection_is_closed(gw: GatewayProcess):
    with connect(gw) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        raw = read_all(s)  # the answer, then the close once idle
    status, _, body = parse(raw)
    assert status == 200 and json.loads(body) == {"status": "ok"}


def test_connections_over_the_cap_are_refused_then_served_again(gw: GatewayProcess):
    socks = [connect(gw) for _ in range(60)]
    try:
        answers = []
        for s in socks[45:]:  # the newest: past the cap of 40
            answers.append(parse(read_all(s)))
        assert all(status == 503 for status, _, _ in answers)
        assert_openai_error(answers[0][2], 503, "too_many_connections")
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + HANG
    while True:  # the refused and closed ones no longer count
        try:
            if httpx.get(gw.url + "/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_rotating_forwarded_for_does_not_bypass_the_feedback_rate_limit(gw: GatewayProcess):
    codes = []
    for i in range(15):
        r = httpx.post(
            gw.url + f"/v1/feedback?key={PUB_KEY}",
            json={"name": "copy", "session_id": "xff"},
            headers={"Origin": ORIGIN, "X-Forwarded-For": f"10.0.{i}.1"},
        )
        codes.append(r.status_code)
    assert 429 in codes, codes


def test_one_date_and_at_most_one_server_header(gw: GatewayProcess):
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    for request in (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}",
        "GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    ):
        with connect(gw) as s:
            s.sendall(request.encode())
            status, headers, _ = parse(read_all(s))
        assert status == 200
        names = [k for k, _ in headers]
        assert names.count("date") == 1, headers
        assert names.count("server") <= 1, headers


def test_data_directory_is_private_to_the_gateway_user(gw: GatewayProcess):
    rid = f"modes-{uuid.uuid4().hex[:8]}"
    msgs = [{"role": "user", "content": "secret"}]
    r = httpx.post(gw.url + "/v1/chat/completions", headers={"X-Request-Id": rid},
                   json={"model": "gpt-4o", "messages": msgs})  # fmt: skip
    assert r.status_code == 200
    gw.call_row(rid)  # the row (with the captured body) is in chDB's parts
    data = gw.workdir / gw.config["store"]["path"]
    loose = []
    for root, dirs, files in os.walk(data):
        for name in [*dirs, *files]:
            p = Path(root) / name
            mode = stat.S_IMODE(p.lstat().st_mode)
            if not p.is_symlink() and mode & 0o077:
                loose.append(f"{oct(mode)} {p.relative_to(data)}")
    assert stat.S_IMODE(data.stat().st_mode) & 0o077 == 0
    assert loose == []


_SLOW_STORE = """
import signal, sys, time
from tests.chhttp import ChHttpServer
srv = ChHttpServer(sys.argv[1]).start()
srv.delay = float(sys.argv[2])
signal.signal(signal.SIGUSR1, lambda *_: setattr(srv, "delay", 0.0))
print(srv.port, flush=True)
while True:
    time.sleep(1)
"""


def _readyz(url: str) -> tuple[int, dict]:
    r = httpx.get(url + "/readyz", timeout=30)
    return r.status_code, r.json()


def test_listens_at_once_while_the_store_is_slow(fake, selfhosted, tmp_path: Path):
    # Every request to this ClickHouse takes 5 s: the migrations alone take far longer
    # than the gateway may take to listen.
    store = subprocess.Popen(
        [sys.executable, "-c", _SLOW_STORE, str(tmp_path / "ch"), "5"],
        cwd=ROOT, stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        port = int(store.stdout.readline())  # type: ignore[union-attr]
        cfg = gateway_config(fake.url, selfhosted.url)
        cfg["store"] = {"kind": "clickhouse", "url": f"http://127.0.0.1:{port}",
                        "database": "slow", "flush_interval_ms": 50}  # fmt: skip
        gw = GatewayProcess(cfg, tmp_path).start(timeout=20)
        try:
            status, body = _readyz(gw.url)
            assert status == 503 and body["status"] == "store_not_migrated"
            rid = f"slow-{uuid.uuid4().hex[:8]}"
            msgs = [{"role": "user", "content": "x"}]
            r = httpx.post(gw.url + "/v1/chat/completions", headers={"X-Request-Id": rid},
                           json={"model": "gpt-4o", "messages": msgs})  # fmt: skip
            assert r.status_code == 200
            store.send_signal(signal.SIGUSR1)  # the store is fast again
            deadline = time.monotonic() + 120
            while _readyz(gw.url)[0] != 200:
                assert time.monotonic() < deadline
                time.sleep(0.5)
            q = f"SELECT count() FROM slow.llm_calls WHERE request_id = '{rid}'"
            while httpx.post(f"http://127.0.0.1:{port}/", content=q).text.strip() != "1":
                assert time.monotonic() < deadline
                time.sleep(0.2)
        finally:
            gw.stop()
    finally:
        os.killpg(store.pid, signal.SIGKILL)
        store.wait()
