"""The server's protocol, driven in process: what it writes to the socket for each kind of
answer. A whole answer's head and body go out in one write; a stream's head goes at once;
an answer with no body (HEAD) and pipelined requests are not held back."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from uvicorn.server import ServerState

from gateway.server import ON_DISCONNECT
from gateway.server.config import ServerConfig
from gateway.server.cycle import Cycle
from gateway.server.http import GuardedHttpToolsProtocol, uvicorn_config


class Socket:
    """Stands for the client's connection: records each write the server makes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        pass


SCOPES: list[dict[str, Any]] = []  # what the app was given, request by request
WATCHERS: list[weakref.ref[Any]] = []  # what a call told the server to call if its client left


class Call:
    """Stands for a call's state (body, payload, answer) that its disconnect callback holds."""

    def __init__(self) -> None:
        self.gone = False

    def leave(self) -> None:
        self.gone = True


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    SCOPES.append(scope)
    await receive()
    if scope["path"] == "/watched":
        call = Call()
        scope["extensions"][ON_DISCONNECT](call.leave)
        WATCHERS.append(weakref.ref(call))
    if scope["path"] == "/dated":  # an answer with its own date (a proxied one)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"date", b"Tue, 01 Dec 2026 00:00:00 GMT"),
                                (b"content-length", b"0")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
        await asyncio.sleep(0.01)  # the upstream's first event is on its way
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if scope["path"].startswith("/bad-"):  # a header no answer may carry, after good ones
        bad = {"/bad-value": (b"x-note", b"a\r\nset-cookie: s=1"),
               "/bad-name": (b"x note", b"a")}[scope["path"]]  # fmt: skip
        headers = [(b"content-type", b"application/json"), bad, (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})
        return
    body = b'{"ok":true}' if scope["path"] != "/big" else b"x" * (1 << 20)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(body))]})  # fmt: skip
    await asyncio.sleep(0)  # the record is committed between the head and the body
    await send({"type": "http.response.body", "body": body})


def connect(asgi_app: Any = app) -> tuple[GuardedHttpToolsProtocol, Socket]:
    """A connection of the server's protocol to `asgi_app`, made on a `Socket`."""
    config = uvicorn_config(ServerConfig(), asgi_app, "127.0.0.1", 0)
    config.load()
    proto = GuardedHttpToolsProtocol(config, ServerState(), {})
    sock = Socket()
    proto.connection_made(sock)  # type: ignore[arg-type]
    return proto, sock


async def serve(requests: bytes, settle: float = 0.05) -> Socket:
    proto, sock = connect()
    proto.data_received(requests)
    await asyncio.sleep(settle)
    proto.connection_lost(None)
    return sock


def req(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: gw\r\n\r\n".encode()


async def test_an_idle_connection_keeps_nothing_of_its_last_call():
    proto, _ = connect()
    proto.data_received(req("/watched"))
    await asyncio.sleep(0.03)
    try:
        assert not proto.transport.is_closing()  # kept alive, idle
        assert WATCHERS and WATCHERS[-1]() is None  # the call's state is freed
    finally:
        proto.connection_lost(None)


async def test_a_call_whose_client_leaves_is_told():
    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        scope["extensions"][ON_DISCONNECT](told.set)
        await told.wait()  # the answer never comes

    told = asyncio.Event()
    proto, _ = connect(slow)
    proto.data_received(req("/slow"))
    await asyncio.sleep(0.01)
    proto.connection_lost(None)  # before the answer
    assert told.is_set()
    await asyncio.sleep(0.01)  # the app returns


async def test_a_request_served_leaves_nothing_for_the_garbage_collector():
    # A request's objects (its cycle, scope, headers) are freed when it is done, by their
    # reference counts: a reference cycle among them would leave them all to the
    # collector's passes, which cost the event loop more than the requests' own work.
    proto, sock = connect()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds is kept in gc.garbage
    try:
        for path in ("/whole", "/stream", "/dated", "/watched"):  # keep-alive, one by one
            proto.data_received(req(path))
            await asyncio.sleep(0.03)
        SCOPES.clear()
        gc.collect()
        # This connection's requests only: what earlier tests left may be collected too.
        ours = [o for o in gc.garbage if isinstance(o, Cycle)
                and sock in (o.transport, getattr(o.transport, "transport", None))]  # fmt: skip
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        proto.connection_lost(None)
    assert len(sock.writes) >= 4
    assert ours == []


async def test_whole_answer_is_one_write():
    sock = await serve(req("/whole"))
    assert len(sock.writes) == 1, sock.writes
    head, _, body = sock.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 11" in head
    assert body == b'{"ok":true}'


async def test_a_header_with_a_forbidden_character_is_never_written():
    for path in ("/bad-value", "/bad-name"):
        sock = await serve(req(path))
        assert not any(b"set-cookie" in w or b"x note" in w for w in sock.writes), path
        assert sock.closed, path


async def test_large_body_is_not_copied_onto_its_head():
    sock = await serve(req("/big"))
    assert len(sock.writes) == 2 and sock.writes[0].endswith(b"\r\n\r\n")
    assert b"content-length: 1048576" in sock.writes[0] and sock.writes[1] == b"x" * (1 << 20)


async def test_stream_head_is_not_held_for_its_first_event():
    sock = await serve(req("/stream"))
    assert sock.writes[0].startswith(b"HTTP/1.1 200") and sock.writes[0].endswith(b"\r\n\r\n")
    assert b"data: 1" in b"".join(sock.writes[1:])


async def test_head_request_answer_is_written():
    sock = await serve(req("/whole", "HEAD"))
    assert len(sock.writes) == 1 and sock.writes[0].startswith(b"HTTP/1.1 200")
    assert sock.writes[0].endswith(b"\r\n\r\n")  # no body for HEAD


async def test_keep_alive_and_pipelined_requests_each_get_their_answer_in_order():
    sock = await serve(req("/whole") + req("/whole") + req("/stream") + req("/whole"))
    data = b"".join(sock.writes)
    assert data.count(b"HTTP/1.1 200") == 4
    assert data.index(b"text/event-stream") < data.rindex(b"application/json")
    assert data.endswith(b'{"ok":true}')


async def test_a_whole_answer_gets_one_date_and_keeps_its_own():
    sock = await serve(req("/whole") + req("/dated"))
    whole, dated = b"".join(sock.writes).split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert whole.lower().count(b"\r\ndate: ") + whole.lower().startswith(b"date: ") == 1
    assert dated.count(b"date: ") == 1 and b"date: Tue, 01 Dec 2026 00:00:00 GMT" in dated


async def test_a_stream_is_sent_in_chunks():
    data = b"".join((await serve(req("/stream"))).writes)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    assert body == b"9\r\ndata: 1\n\n\r\n0\r\n\r\n"


async def test_the_scope_holds_the_path_and_query_of_each_request_form():
    SCOPES.clear()
    await serve(req("/v1/a%20b?x=1&y=2") + req("http://gw/v1/c?z=3") + req("/v1/d"))
    got = [(s["path"], s["raw_path"], s["query_string"]) for s in SCOPES]
    assert got == [
        ("/v1/a b", b"/v1/a%20b", b"x=1&y=2"),
        ("/v1/c", b"/v1/c", b"z=3"),  # the absolute form, as a proxy client may send it
        ("/v1/d", b"/v1/d", b""),
    ]
