"""A chDB session served over ClickHouse's HTTP interface, for testing clickhouse-connect code.

No ClickHouse server can be installed where the tests run, so `ChHttpServer` puts the embedded
engine behind enough of the HTTP protocol (as clickhouse-connect speaks it) that the official
client works against it over real sockets:

- `GET /ping` (and a bare `GET /`) answer ``Ok.``;
- the SQL is the ``query`` URL parameter followed by the request body (or a multipart form's
  ``query`` field); ``param_*`` parameters bind ``{name:Type}`` placeholders; ``database`` is
  made current with ``USE``; ``default_format`` (or the X-ClickHouse-Format header, which
  wins) is the format when the SQL names none;
- every other URL parameter is a setting, applied to the session with ``SET`` (and reset to
  ``DEFAULT`` by the next request that does not send it); HTTP-only options are ignored;
- ``INSERT ... FORMAT X`` followed by data, in any format, is run as ``FROM INFILE`` on a temporary
  file; request bodies may be lz4, zstd, gzip, deflate (or br when brotli is installed) encoded;
- answers carry the X-ClickHouse-Query-Id, -Summary, -Timezone, -Format and -Server-Display-Name
  headers; errors are HTTP 500 with ClickHouse's ``Code: N. DB::Exception: ...`` text and the
  X-ClickHouse-Exception-Code header. Responses are never compressed.

chDB hosts one engine per process, on one data directory, and all clients share its one session
(``session_id`` is accepted and ignored). `stop()` closes the listening socket and every open
connection, to simulate an outage; `start()` serves the same data on the same port again.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import socket
import socketserver
import tempfile
import threading
import time
import uuid
import zlib
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# URL parameters that are HTTP-interface options rather than settings for the engine.
# `readonly` is among them: set on the shared session, it could never be unset.
_NOT_SETTINGS = frozenset(
    {
        "query", "database", "default_format", "user", "password", "quota_key", "query_id",
        "session_id", "session_timeout", "session_check", "close_session", "role", "stacktrace",
        "compress", "decompress", "buffer_size", "wait_end_of_query", "client_protocol_version",
        "enable_http_compression", "http_zlib_compression_level", "send_progress_in_http_headers",
        "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
        "readonly",
    }
)  # fmt: skip
_SKIP = r"(?:\s|--[^\n]*\n|/\*.*?\*/)*"  # leading blanks and comments
_INSERT_RE = re.compile(
    rf"{_SKIP}INSERT\s+INTO\s+(?P<head>.*?)\bFORMAT\s+(?P<fmt>\w+)[ \t]*(?:\r?\n)?".encode(),
    re.I | re.S,
)
_INLINE_RE = re.compile(rb"\b(?:VALUES|SELECT|WITH)\b", re.I)  # INSERT with its data in SQL
_QUOTED_RE = re.compile(rb"`[^`]*`|\"[^\"]*\"")
_RESULT_RE = re.compile(
    rf"{_SKIP}(?:\(|(?:SELECT|WITH|SHOW|DESC|DESCRIBE|EXISTS|EXPLAIN)\b)", re.I | re.S
)
_FORMAT_RE = re.compile(r"\bFORMAT\s+(\w+)(?:\s+SETTINGS\b[^;]*)?\s*;?\s*$", re.I)
_USE_RE = re.compile(rf"{_SKIP}USE\b", re.I | re.S)
_SETTINGS_RE = re.compile(r"\bSETTINGS\b", re.I)
_NAME_RE = re.compile(r"^[A-Za-z_]\w*$")
_CONTENT_TYPES = {"Native": "application/octet-stream", "RowBinary": "application/octet-stream"}


class ChHttpServer:
    """Serve chDB's engine (data in `data_dir`) over HTTP on `host`:`port` (0: a free port).

    `start()` and `stop()` can alternate any number of times; `close()` (or leaving the ``with``
    block) also closes the chDB session. Set `delay` (seconds) to make every request wait before
    it is answered; `requests` counts the HTTP requests received.
    """

    display_name = "chhttp"

    def __init__(self, data_dir: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.delay = 0.0
        self.requests = 0
        self.version = ""
        self.timezone = "UTC"
        self._lock = threading.Lock()  # one engine, one session: one statement at a time
        self._count_lock = threading.Lock()
        self._session: Any = None
        self._database: str | None = None  # the session's current database, when known
        self._applied: dict[str, str] = {}  # settings SET on the session
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> ChHttpServer:
        """Open the session if needed; serve in a background thread, on the same port as before."""
        if self._httpd is not None:
            return self
        if self._session is None:
            from chdb import session

            if not self.data_dir.startswith(":memory:"):
                os.makedirs(self.data_dir, exist_ok=True)
            self._session = session.Session(self.data_dir)
            self._database, self._applied = None, {}
            row = self._session.query("SELECT version(), timezone()", "TabSeparated").bytes()
            self.version, self.timezone = row.decode().strip().split("\t")
        httpd = _Server((self.host, self.port), self)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"chhttp-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections: clients now get connection errors."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        for conn in list(httpd.conns):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        """Stop serving and close the chDB session (freeing the process's engine)."""
        self.stop()
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def __enter__(self) -> ChHttpServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def query(self, sql: str, fmt: str = "TabSeparated", database: str = "default") -> bytes:
        """Run `sql` on the session directly (no HTTP) and return its output."""
        res = self._run(sql, fmt, database, {}, {})
        return res.bytes() if res is not None else b""

    # ---- request handling ------------------------------------------------------------------

    def _run(
        self, sql: str, fmt: str, database: str, settings: dict[str, str], binds: dict[str, str]
    ) -> Any:
        with self._lock:
            session = self._session
            if session is None:
                raise RuntimeError(
                    "Code: 1002. DB::Exception: the chDB session is closed. (UNKNOWN_EXCEPTION)"
                )
            if database != self._database:
                session.query(f"USE `{database.replace('`', '``')}`", "TabSeparated")
                self._database = database
            for name in [n for n in self._applied if n not in settings]:
                session.query(f"SET {name} = DEFAULT", "TabSeparated")
                del self._applied[name]
            for name, value in settings.items():
                if self._applied.get(name) != value:
                    if not _NAME_RE.match(name):
                        raise ValueError(
                            f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)"
                        )
                    session.query(f"SET {name} = '{_escape(value)}'", "TabSeparated")
                    self._applied[name] = value
            try:
                return session.query(sql, fmt, params=binds or None)
            finally:
                if _USE_RE.match(sql):
                    self._database = None

    def _count(self) -> None:
        with self._count_lock:
            self.requests += 1

    def _answer(
        self, params: dict[str, str], body: bytes, ctype: str, encoding: str
    ) -> tuple[int, bytes, dict[str, str]]:
        headers = {
            "X-ClickHouse-Query-Id": params.get("query_id") or str(uuid.uuid4()),
            "X-ClickHouse-Server-Display-Name": self.display_name,
            "X-ClickHouse-Timezone": params.get("session_timezone") or self.timezone,
        }
        try:
            body = _decompress(body, encoding)
            head = params.get("query", "").encode()
            if ctype.startswith("multipart/form-data"):
                form = _form_fields(body, ctype)
                body = form.pop("query", b"")
                params = {**params, **{k: v.decode() for k, v in form.items()}}
            sql = head + b"\n" + body if head and body else head or body
            binds = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
            settings = {
                k: v
                for k, v in params.items()
                if k not in _NOT_SETTINGS and not k.startswith("param_")
            }
            database = params.get("database") or "default"
            insert = _INSERT_RE.match(sql)
            if insert and not _INLINE_RE.search(_QUOTED_RE.sub(b"", insert["head"])):
                res = self._insert(
                    insert["head"].decode(),
                    insert["fmt"].decode(),
                    sql[insert.end() :],
                    database,
                    settings,
                )
                out = b""
            else:
                text = sql.decode()
                fmt = params.get("default_format") or "TabSeparated"
                res = self._run(text, fmt, database, settings, binds)
                out = res.bytes() if res is not None else b""
                if _RESULT_RE.match(text):
                    found = _FORMAT_RE.search(text)
                    fmt = found[1] if found else fmt
                    headers["X-ClickHouse-Format"] = fmt
                    headers["Content-Type"] = _CONTENT_TYPES.get(fmt, "text/plain; charset=UTF-8")
            headers["X-ClickHouse-Summary"] = _summary(res)
            return 200, out, headers
        except Exception as e:  # chDB's errors already read "Code: N. DB::Exception: ..."
            text = str(e).strip()
            at = text.find("Code: ")
            if at >= 0:
                text = text[at:]
            else:
                text = f"Code: 1001. DB::Exception: {type(e).__name__}: {text}. (STD_EXCEPTION)"
            code = re.match(r"Code: (\d+)", text)
            headers["X-ClickHouse-Exception-Code"] = code[1] if code else "1001"
            headers["Content-Type"] = "text/plain; charset=UTF-8"
            return 500, f"{text} (version {self.version})\n".encode(), headers

    def _insert(
        self, head: str, fmt: str, data: bytes, database: str, settings: dict[str, str]
    ) -> Any:
        # Any format, text or binary, goes through a file: the data never has to be SQL text.
        target, *rest = _SETTINGS_RE.split(head, maxsplit=1)
        clause = f" SETTINGS {rest[0].strip()}" if rest else ""
        fd, path = tempfile.mkstemp(suffix=".chhttp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            sql = f"INSERT INTO {target} FROM INFILE '{_escape(path)}'{clause} FORMAT {fmt}"
            return self._run(sql, "TabSeparated", database, settings, {})
        finally:
            os.unlink(path)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _summary(res: Any) -> str:
    stats = {
        "read_rows": "storage_rows_read", "read_bytes": "storage_bytes_read",
        "written_rows": "rows_written", "written_bytes": "bytes_written",
        "total_rows_to_read": "storage_rows_read", "result_rows": "rows_read",
        "result_bytes": "bytes_read",
    }  # fmt: skip
    try:
        summary = {key: str(getattr(res, name)()) for key, name in stats.items()}
        summary["elapsed_ns"] = str(int(res.elapsed() * 1e9))
    except Exception:  # a statement without a result object
        summary = dict.fromkeys(stats, "0")
    return json.dumps(summary, separators=(",", ":"))


def _decompress(data: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if not data or encoding in ("", "identity"):
        return data
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "deflate":
        return zlib.decompress(data)
    if encoding == "lz4":
        import lz4.frame

        out = bytearray()
        while data:  # one frame per compressed chunk is possible: read them all
            dec = lz4.frame.LZ4FrameDecompressor()
            out += dec.decompress(data)
            data = dec.unused_data
        return bytes(out)
    if encoding == "zstd":
        from backports import zstd  # type: ignore[import-not-found]

        return zstd.decompress(data)
    if encoding == "br":
        import brotli  # type: ignore[import-not-found]

        return brotli.decompress(data)
    raise ValueError(
        f"Code: 1001. DB::Exception: Unknown Content-Encoding '{encoding}'. (STD_EXCEPTION)"
    )


def _form_fields(body: bytes, ctype: str) -> dict[str, bytes]:
    msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
    fields: dict[str, bytes] = {}
    for part in msg.iter_parts():  # type: ignore[attr-defined]
        if part.get_filename():
            raise ValueError(
                "Code: 48. DB::Exception: external data is not supported here. (NOT_IMPLEMENTED)"
            )
        fields[str(part.get_param("name", header="content-disposition"))] = (
            part.get_payload(decode=True) or b""
        )
    return fields


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], owner: ChHttpServer) -> None:
        self.owner = owner
        self.conns: set[Any] = set()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:  # skip HTTPServer's getfqdn(), which can wait on DNS
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = (
            str(self.server_address[0]),
            int(self.server_address[1]),
        )

    def process_request(self, request: Any, client_address: Any) -> None:
        self.conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # mostly connections cut by stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        owner._count()
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        body = self._read_body()
        if owner.delay:
            time.sleep(owner.delay)
        if url.path in ("/ping", "/ping/") or (
            url.path == "/" and "query" not in params and not body
        ):
            return self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
        if url.path != "/":
            return self._send(404, b"There is no handle " + url.path.encode() + b"\n", {})
        if fmt := self.headers.get("X-ClickHouse-Format"):  # over default_format, as ClickHouse
            params["default_format"] = fmt
        status, out, headers = owner._answer(
            params,
            body,
            self.headers.get("Content-Type", ""),
            self.headers.get("Content-Encoding", ""),
        )
        self._send(status, out, headers)

    do_POST = do_GET

    def _read_body(self) -> bytes:
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(chunks)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
