"""The browser collector (`/feedback.js`) in a real headless Chromium, driven over the Chrome
DevTools Protocol, against a running gateway on another origin (a real CORS setup).

The LLM call is made from the test (the proxy endpoint sends no CORS headers, on purpose);
its `X-Request-Id` and answer go to the page in the query string. The page, served by a
small local HTTP server, loads the collector from the gateway and shows the answer. The
test then clicks, copies, scrolls and hides the page like a user would, and reads what
landed in `llm_feedback`.

Skipped when `chromium` is missing, naming how to install it; under LLM_GATEWAY_TEST_STRICT=1
(CI) that fails instead (tests/prereqs.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.collectors.intake.browser import CDP, PUB_KEY, PageServer, Tab, chromium
from tests.conftest import GatewayProcess, gateway_config

__all__ = ["chromium"]  # the fixture


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[PageServer, PageServer]]:
    """The app's origin (allowed by the key) and a foreign one (not allowed)."""
    app, foreign = PageServer(), PageServer()
    yield app, foreign
    app.close()
    foreign.close()


@pytest.fixture(scope="module")
def gw(
    fake, selfhosted, site, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    app, foreign = site
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["feedback"] = {
        "keys": [{"key": PUB_KEY, "kind": "publishable", "origins": [app.origin],
                  "rate_per_minute": 600}]
    }  # fmt: skip
    g = GatewayProcess(cfg, tmp_path_factory.mktemp("browser")).start()
    app.gateway_url = foreign.gateway_url = g.url
    yield g
    g.stop()


# ------------------------------------------------------------------------- helpers
def llm_call(gw: GatewayProcess, session: str) -> tuple[str, str]:
    """A real call through the gateway (answered by the fake upstream): (request id, text)."""
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hi"}]},
        headers={"X-Gateway-App": "browser-test", "X-Gateway-Session": session},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.headers["x-request-id"], r.json()["choices"][0]["message"]["content"]


async def feedback_rows(gw: GatewayProcess, rid: str) -> list[dict[str, Any]]:
    q = (
        "SELECT name, value, string_value, request_id, session_id, app, end_user, source, "
        f"metadata FROM llm_feedback FINAL WHERE request_id = '{rid}' ORDER BY ts"
    )
    return await asyncio.to_thread(gw.sql, q)


async def wait_rows(gw: GatewayProcess, rid: str, want: dict[str, int], timeout: float = 10):
    """Rows of `rid` once each name in `want` has at least that many."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await feedback_rows(gw, rid)
        names = [r["name"] for r in rows]
        if all(names.count(n) >= k for n, k in want.items()):
            return rows
        assert time.monotonic() < deadline, f"waited for {want}, have {names}"
        await asyncio.sleep(0.1)


def network_log(events: list[dict[str, Any]], path: str) -> dict[str, dict[str, Any]]:
    """Requests to `path` from CDP Network events: {id: {type, status, cors}}."""
    seen: dict[str, dict[str, Any]] = {}
    for e in events:
        p = e.get("params", {})
        if e.get("method") == "Network.requestWillBeSent" and path in p["request"]["url"]:
            seen[p["requestId"]] = {"type": p.get("type"), "status": None, "cors": None}
    for e in events:
        p = e.get("params", {})
        r = seen.get(p.get("requestId", ""))
        if r is None:
            continue
        if e["method"] == "Network.responseReceivedExtraInfo":
            r["status"] = p["statusCode"]
        elif e["method"] == "Network.loadingFailed" and p.get("corsErrorStatus"):
            r["cors"] = p["corsErrorStatus"]["corsError"]
    return seen


def names(batches: list[dict[str, Any]]) -> list[str]:
    return [e["name"] for b in batches for e in b["events"]]


# ------------------------------------------------------------------------- the tests
async def test_collector_in_chromium(gw: GatewayProcess, site, chromium: str):
    app, _ = site
    session = f"bs-{uuid.uuid4()}"
    rid, answer = llm_call(gw, session)
    await asyncio.to_thread(gw.call_row, rid)  # the call the feedback is about
    # A long flush interval: what leaves the page here leaves when it is hidden.
    url = app.url("answer.html", rid=rid, answer=answer, key=PUB_KEY, session=session,
                  flush="60000")  # fmt: skip
    async with CDP.connect(chromium) as cdp:
        tab = await Tab.open(cdp)
        await tab.goto(url)
        assert await tab.eval("document.visibilityState") == "visible"
        assert await tab.eval("document.getElementById('answer').textContent") == answer
        await asyncio.sleep(0.3)  # the answer is read for a while

        await tab.click("#accept")
        # Select the answer and press Ctrl+C: the browser's own copy fires the copy event.
        await tab.eval("getSelection().selectAllChildren(document.getElementById('answer'))")
        await tab.copy_keys()
        await tab.click("[data-stars='4']")

        # The answer leaves the viewport: the first dwell span ends.
        await tab.wheel(
            3000, "document.getElementById('answer').getBoundingClientRect().bottom < 0"
        )
        await asyncio.sleep(0.3)  # out of view: not counted
        await tab.wheel(-3000, "window.scrollY === 0")  # back in view: a new span starts
        await asyncio.sleep(0.3)

        # The window is minimized: visibilitychange -> hidden. The open span ends, and
        # everything queued goes out with sendBeacon (no fetch: the interval is 60 s).
        assert await tab.sent() == []
        await tab.window_state("minimized")
        sent = await tab.sent()
        assert {b["via"] for b in sent} == {"beacon"}, sent
        assert all(b["url"] == f"{gw.url}/v1/feedback?key={PUB_KEY}" for b in sent)
        assert sorted(names(sent)) == sorted(
            ["suggestion_accepted", "copy", "rating", "dwell", "dwell"]
        ), sent
        rows = await wait_rows(gw, rid, {"suggestion_accepted": 1, "copy": 1, "rating": 1,
                                         "dwell": 2})  # fmt: skip

        # Visible again: a new span starts. A thumbs-up sent by an explicit flush (fetch):
        # 200, and the browser let the page read it (Access-Control-Allow-Origin).
        await tab.window_state("normal")
        await asyncio.sleep(0.3)
        await tab.click("#thumbs-up")
        assert await tab.eval("LLMFeedback.flush()") == 200
        assert [b["via"] for b in await tab.sent()][-1] == "fetch"
        await wait_rows(gw, rid, {"thumbs": 1})
        # A share, sent by the periodic flush once the interval is short.
        await tab.eval("start(200)")
        await tab.click("#share")
        await tab.wait_for("__sent.some(s => s.via === 'fetch' && s.body.includes('share'))")
        await wait_rows(gw, rid, {"share": 1})

        # Leaving the page: pagehide ends the last span and beacons it.
        await tab.send("Page.navigate", url="about:blank")
        rows = await wait_rows(gw, rid, {"dwell": 3})
        await cdp.send("Target.closeTarget", targetId=tab.target)

    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r)
    assert sorted(by_name) == [
        "copy", "dwell", "rating", "share", "suggestion_accepted", "thumbs"]  # fmt: skip
    assert [len(v) for v in by_name.values()] == [1 if n != "dwell" else 3 for n in by_name]
    for r in rows:
        assert (r["request_id"], r["session_id"]) == (rid, session)
        assert (r["app"], r["end_user"]) == ("browser-test", "u-browser")
        assert r["source"] == ("implicit" if r["name"] == "dwell" else "user"), r
    assert by_name["rating"][0]["value"] == 4.0
    assert by_name["suggestion_accepted"][0]["value"] == 1.0
    assert by_name["thumbs"][0]["value"] == by_name["share"][0]["value"] == 1.0
    assert by_name["copy"][0]["metadata"] == {"chars": str(len(answer))}
    dwell = [r["value"] for r in by_name["dwell"]]
    assert all(v > 0 for v in dwell), dwell
    assert dwell[0] >= 250  # read for 0.3 s (and more) before the scroll


async def test_foreign_origin_is_refused(gw: GatewayProcess, site, chromium: str):
    """The same page on an origin the key does not list: fetches fail CORS (the gateway
    answers 403 without Access-Control-Allow-Origin) and beacons, which ignore CORS, are
    refused by the gateway itself. Nothing lands."""
    _, foreign = site
    session = f"bs-{uuid.uuid4()}"
    rid, answer = llm_call(gw, session)
    async with CDP.connect(chromium) as cdp:
        tab = await Tab.open(cdp)
        await tab.send("Network.enable")
        await tab.goto(foreign.url("answer.html", rid=rid, answer=answer, key=PUB_KEY,
                                   session=session, flush="60000"))  # fmt: skip
        await tab.click("#accept")
        await tab.click("[data-stars='5']")
        # The fetch fails CORS: the page cannot read the answer, the events stay queued.
        assert await tab.eval("LLMFeedback.flush()") == 0
        assert await tab.eval("LLMFeedback.flush()") == 0  # retried, refused again
        await tab.window_state("minimized")  # beacons
        assert "beacon" in {b["via"] for b in await tab.sent()}

        # The gateway's answers, as the browser's network saw them: 403s only. The fetches
        # failed CORS (no Access-Control-Allow-Origin); a beacon's answer is not for the page.
        def answered() -> dict[str, dict[str, Any]] | None:
            seen = network_log(cdp.events, "/v1/feedback")
            done = all(r["status"] and (r["type"] != "Fetch" or r["cors"]) for r in seen.values())
            return seen if done and any(r["type"] == "Ping" for r in seen.values()) else None

        deadline = time.monotonic() + 10
        while (seen := answered()) is None:
            assert time.monotonic() < deadline, network_log(cdp.events, "/v1/feedback")
            await asyncio.sleep(0.05)
        await cdp.send("Target.closeTarget", targetId=tab.target)
    assert {r["status"] for r in seen.values()} == {403}, seen
    fetches = [r for r in seen.values() if r["type"] == "Fetch"]
    assert len(fetches) >= 2 and all(r["cors"] == "MissingAllowOriginHeader" for r in fetches)
    await asyncio.sleep(1.0)  # anything accepted would have landed by now
    assert await feedback_rows(gw, rid) == []
