"""A real headless Chromium for tests, driven over the Chrome DevTools Protocol, and a
small HTTP server for the app's pages (pages/*.html beside this file): what the browser
collector's tests share (test_browser_collector.py here, tests/collectors/test_signal_values.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import itertools
import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.prereqs import program

PAGES = Path(__file__).with_name("pages")
PUB_KEY = "pk_test_12345678"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
]


# ------------------------------------------------------------------------- the app's pages
class PageServer:
    """Serves pages/*.html on 127.0.0.1 (its own port, so its own origin), with __GATEWAY__
    replaced by the gateway's URL."""

    def __init__(self) -> None:
        self.gateway_url = ""
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = urllib.parse.urlsplit(self.path).path.lstrip("/")
                page = PAGES / name
                if "/" in name or not name.endswith(".html") or not page.is_file():
                    self.send_error(404)
                    return
                body = page.read_text().replace("__GATEWAY__", server.gateway_url).encode()
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, page: str, **query: str) -> str:
        return f"{self.origin}/{page}?{urllib.parse.urlencode(query)}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ------------------------------------------------------------------------- Chromium + CDP
@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A headless Chromium; yields its browser-level DevTools WebSocket URL."""
    # Skips naming how to install it (fails under LLM_GATEWAY_TEST_STRICT=1, as in CI).
    program_path = program("chromium")
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen(
        [program_path, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    port_file = profile / "DevToolsActivePort"  # Chromium writes its port here
    deadline = time.monotonic() + 20
    while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
        assert proc.poll() is None, f"chromium exited at start ({proc.returncode})"
        assert time.monotonic() < deadline, "chromium did not open its DevTools port"
        time.sleep(0.05)
    port, path = port_file.read_text().splitlines()[:2]
    yield f"ws://127.0.0.1:{port}{path}"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class CDP:
    """Just enough of the Chrome DevTools Protocol: commands (flat sessions) and events."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[CDP]:
        async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
            cdp = cls(ws)
            try:
                yield cdp
            finally:
                cdp.reader.cancel()

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                fut = self.pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
            else:
                self.events.append(data)

    async def send(self, method: str, session: str | None = None, **params: Any) -> dict:
        i = next(self.ids)
        fut = self.pending[i] = asyncio.get_running_loop().create_future()
        msg: dict[str, Any] = {"id": i, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        await self.ws.send_str(json.dumps(msg))
        data = await asyncio.wait_for(fut, 15)
        if "error" in data:
            raise AssertionError(f"{method}: {data['error']}")
        return data["result"]


class Tab:
    """One page (target) of the browser."""

    def __init__(self, cdp: CDP, target: str, session: str) -> None:
        self.cdp, self.target, self.session = cdp, target, session

    @classmethod
    async def open(cls, cdp: CDP) -> Tab:
        target = (await cdp.send("Target.createTarget", url="about:blank"))["targetId"]
        session = (await cdp.send("Target.attachToTarget", targetId=target, flatten=True))[
            "sessionId"
        ]
        tab = cls(cdp, target, session)
        await tab.send("Page.enable")
        await tab.send("Runtime.enable")
        return tab

    async def send(self, method: str, **params: Any) -> dict:
        return await self.cdp.send(method, self.session, **params)

    async def eval(self, expression: str) -> Any:
        r = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := await self.eval(expression)):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            await asyncio.sleep(0.05)
        return value

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && !!window.LLMFeedback")

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        x, y = await self.eval(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        await self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
            )

    async def wheel(self, dy: float, until: str) -> None:
        """Scroll with the mouse wheel, and wait for `until` (a JS expression) to hold."""
        await self.send(
            "Input.dispatchMouseEvent", type="mouseWheel", x=100, y=100, deltaX=0, deltaY=dy
        )
        await self.wait_for(until)
        await asyncio.sleep(0.1)  # the IntersectionObserver reports on a later frame

    async def copy_keys(self) -> None:
        """Ctrl+C, executed by the browser as the real copy command."""
        key = {"modifiers": 2, "key": "c", "code": "KeyC", "windowsVirtualKeyCode": 67}
        await self.send("Input.dispatchKeyEvent", type="rawKeyDown", commands=["copy"], **key)
        await self.send("Input.dispatchKeyEvent", type="keyUp", **key)

    async def window_state(self, state: str) -> None:
        """Minimize or restore the tab's window: the page really becomes hidden/visible."""
        win = (await self.cdp.send("Browser.getWindowForTarget", targetId=self.target))["windowId"]
        await self.cdp.send("Browser.setWindowBounds", windowId=win, bounds={"windowState": state})
        want = "hidden" if state == "minimized" else "visible"
        await self.wait_for(f"document.visibilityState === '{want}'")

    async def sent(self) -> list[dict[str, Any]]:
        """What the collector sent so far: [{via: beacon|fetch, url, events}]."""
        return await self.eval("window.__sentEvents()")
