"""The Python feedback client (clients/python, `llm_gateway_feedback`) against a running
gateway: every signal lands in llm_feedback linked to its call, resending an event is
idempotent, refusals raise naming the field; plus the request's shape (key, app, retries)
against a mock transport, and the client as a wheel of its own."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from llm_gateway_feedback import AsyncFeedbackClient, FeedbackClient, FeedbackError, event

from tests.conftest import ROOT, GatewayProcess


def llm_call(gw: GatewayProcess) -> str:
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.headers["x-request-id"]


def rows(gw: GatewayProcess, where: str, n: int, timeout: float = 10) -> list[dict[str, Any]]:
    q = f"SELECT * FROM llm_feedback FINAL WHERE {where} ORDER BY ts, name"
    deadline = time.monotonic() + timeout
    while len(found := gw.sql(q)) < n:
        assert time.monotonic() < deadline, f"expected {n} rows where {where}, got {found}"
        time.sleep(0.05)
    time.sleep(0.2)  # a duplicate would show up now
    return gw.sql(q)


def test_every_signal_lands(gateway: GatewayProcess):
    rid = llm_call(gateway)
    sid = f"cs-{uuid.uuid4()}"
    with FeedbackClient(gateway.url, app="client-test") as fb:
        ids = [
            fb.shown(rid, session_id=sid),
            fb.accepted(rid, end_user="u-7"),
            fb.rejected(rid),
            fb.copy(rid, metadata={"chars": "12"}),
            fb.share(rid),
            fb.regenerate(rid),
            fb.rating(rid, 5, comment="spot on"),
            fb.thumbs(rid, False),
            fb.correction(rid, "It is 42."),
            fb.defect(rid, "hallucination"),
            fb.dwell(rid, 1234.5),
            fb.track("my_signal", rid, value=0.25),
        ]
        end_id = fb.session_end(sid)
    assert len(set(ids)) == len(ids)
    got = {r["name"]: r for r in rows(gateway, f"request_id = '{rid}'", len(ids))}
    expect = {
        "suggestion_shown": (1.0, "", "boolean"),
        "suggestion_accepted": (1.0, "", "boolean"),
        "suggestion_rejected": (1.0, "", "boolean"),
        "copy": (1.0, "", "boolean"),
        "share": (1.0, "", "boolean"),
        "regenerate": (1.0, "", "boolean"),
        "rating": (5.0, "", "numeric"),
        "thumbs": (0.0, "", "boolean"),
        "correction": (None, "It is 42.", "text"),
        "defect": (None, "hallucination", "categorical"),
        "dwell": (1234.5, "", "numeric"),
        "my_signal": (0.25, "", "numeric"),
    }
    assert {n: (r["value"], r["string_value"], r["data_type"]) for n, r in got.items()} == expect
    assert {r["app"] for r in got.values()} == {"client-test"}
    assert {r["event_id"] for r in got.values()} == set(ids)
    assert got["dwell"]["source"] == "implicit"
    assert {r["source"] for n, r in got.items() if n != "dwell"} == {"user"}
    assert got["rating"]["comment"] == "spot on"
    assert got["copy"]["metadata"] == {"chars": "12"}
    assert got["suggestion_accepted"]["end_user"] == "u-7"
    assert got["suggestion_shown"]["session_id"] == sid
    (end,) = rows(gateway, f"session_id = '{sid}' AND name = 'session_end'", 1)
    assert (end["event_id"], end["request_id"], end["value"]) == (end_id, "", 1.0)


def test_resending_an_event_is_idempotent(gateway: GatewayProcess):
    rid = llm_call(gateway)
    ev = event("rating", rid, value=3)
    with FeedbackClient(gateway.url) as fb:
        first = fb.send([ev])
        assert first["accepted"] == 1 and first["results"][0]["event_id"] == ev["event_id"]
        fb.send([ev])
        fb.send([ev, ev])
        fb.rating(rid, 3, event_id=ev["event_id"], ts=ev["ts"])  # the helper, same id
    (row,) = rows(gateway, f"request_id = '{rid}'", 1)
    assert (row["event_id"], row["value"]) == (ev["event_id"], 3.0)


def test_refusals_raise_naming_the_field(gateway: GatewayProcess):
    rid = llm_call(gateway)
    with FeedbackClient(gateway.url) as fb:
        with pytest.raises(FeedbackError) as e:
            fb.rating(rid, "five")  # type: ignore[arg-type]
        assert (e.value.status, e.value.code, e.value.param) == (422, "invalid_feedback", "value")
        assert "`value`" in str(e.value) and "422" in str(e.value)
        with pytest.raises(FeedbackError, match="string_value") as e:
            fb.defect(rid, "")
        assert e.value.param == "string_value"
        with pytest.raises(FeedbackError, match="colour") as e:
            fb.track("copy", rid, colour="red")
        assert e.value.param == "colour"
        # A batch: the valid ones are kept and the answer says which were not...
        out = fb.send([event("copy", rid), event("rating", rid)])
        assert (out["accepted"], out["rejected"]) == (1, 1)
        assert out["results"][1]["error"]["param"] == "value"
        # ...and a batch with nothing valid raises, naming the first bad field.
        with pytest.raises(FeedbackError) as e:
            fb.send([event("rating", rid), event("thumbs", rid, value=7)])
        assert (e.value.status, e.value.param) == (422, "value")
        assert e.value.body["rejected"] == 2


async def test_async_client(gateway: GatewayProcess):
    rid = await asyncio.to_thread(llm_call, gateway)
    async with AsyncFeedbackClient(gateway.url, app="client-async") as fb:
        ids = await asyncio.gather(fb.accepted(rid), fb.rating(rid, 4), fb.dwell(rid, 500))
        with pytest.raises(FeedbackError) as e:
            await fb.thumbs(rid, True, source="robot")
        assert e.value.param == "source"
    got = await asyncio.to_thread(rows, gateway, f"request_id = '{rid}'", 3)
    assert {r["event_id"] for r in got} == set(ids)
    assert sorted((r["name"], r["value"], r["app"]) for r in got) == [
        ("dwell", 500.0, "client-async"),
        ("rating", 4.0, "client-async"),
        ("suggestion_accepted", 1.0, "client-async"),
    ]


def test_request_shape_and_retries():
    """The key and app travel as headers; a 503 is retried with the very same events."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return httpx.Response(503, json={"error": {"message": "busy", "type": "x"}})
        body = json.loads(request.content)
        results = [{"index": i, "status": "accepted", "event_id": e["event_id"]}
                   for i, e in enumerate(body)]  # fmt: skip
        return httpx.Response(200, json={"accepted": len(body), "rejected": 0,
                                         "results": results})  # fmt: skip

    http = httpx.Client(transport=httpx.MockTransport(handler))
    fb = FeedbackClient("http://gw.test/", key="sk_fb_secret_1", app="shop", http=http)
    eid = fb.thumbs("req-1", True, session_id="s-1")
    assert len(seen) == 2 and seen[0].content == seen[1].content
    req = seen[1]
    assert str(req.url) == "http://gw.test/v1/feedback"
    assert req.headers["authorization"] == "Bearer sk_fb_secret_1"
    assert req.headers["x-gateway-app"] == "shop"
    (ev,) = json.loads(req.content)
    assert ev["event_id"] == eid and ev["name"] == "thumbs" and ev["value"] is True
    assert ev["request_id"] == "req-1" and ev["session_id"] == "s-1"
    assert time.time() - 5 < ev["ts"] <= time.time()

    def refuse(request: httpx.Request) -> httpx.Response:
        err = {"message": "A feedback key is required.", "type": "authentication_error",
               "code": "missing_api_key"}  # fmt: skip
        return httpx.Response(401, json={"error": err})

    fb = FeedbackClient("http://gw.test", http=httpx.Client(transport=httpx.MockTransport(refuse)))
    with pytest.raises(FeedbackError, match="missing_api_key") as e:
        fb.copy("req-1")
    assert e.value.status == 401 and e.value.param is None


def test_unreachable_gateway_raises():
    fb = FeedbackClient("http://127.0.0.1:9", timeout=0.5, retries=1)
    with pytest.raises(FeedbackError, match="unreachable") as e:
        fb.copy("req-1")
    assert e.value.status == 0
    fb.close()


CLIENT_DIR = ROOT / "clients" / "python"
FROM_WHEEL = """
import sys
sys.path.insert(0, sys.argv[1])
import llm_gateway_feedback as m
assert m.__file__.startswith(sys.argv[1]), m.__file__
assert {"chdb", "gateway", "collectors", "litestar"}.isdisjoint(sys.modules), sorted(sys.modules)
print(m.FeedbackClient.__name__, m.event("share", "r-1")["name"])
"""


def test_the_client_is_a_wheel_of_its_own(tmp_path: Path):
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    p = subprocess.run([uv, "build", "--wheel", "--out-dir", str(tmp_path), str(CLIENT_DIR)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr
    (wheel,) = tmp_path.glob("llm_gateway_feedback-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "llm_gateway_feedback/__init__.py" in names and "llm_gateway_feedback/py.typed" in names
    assert not [n for n in names if n.startswith(("gateway/", "collectors/"))]
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    assert requires == ["Requires-Dist: httpx>=0.27"]  # httpx only: not chDB
    # a pure-Python wheel imports straight from the archive, without the gateway's packages
    p = subprocess.run([sys.executable, "-I", "-c", FROM_WHEEL, str(wheel)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["FeedbackClient", "share"]
