"""The Python feedback client (clients/python, `llm_gateway_feedback`) against a running
gateway: every signal lands in llm_feedback linked to its call, resending an event is
idempotent, refusals raise naming the field; plus the request's shape (key, app, retries)
against a mock transport, and the client as a wheel of its own."""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from llm_gateway_feedback import AsyncFeedbackClient, FeedbackClient, FeedbackError, event

from tests.conftest import ROOT, GatewayProcess
from tests.prereqs import program


def llm_call(gw: GatewayProcess) -> str:
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.headers["x-request-id"]


def rows(gw: GatewayProcess, where: str, n: int, timeout: float = 10) -> list[dict[str, Any]]:
    return gw.wait_rows(where, n, timeout, table="llm_feedback")


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


class Errors:
    """An on_error handler that keeps what it was given."""

    def __init__(self) -> None:
        self.seen: list[tuple[FeedbackError, list[dict[str, Any]]]] = []

    def __call__(self, error: FeedbackError, events: list[dict[str, Any]]) -> None:
        self.seen.append((error, events))

    def params(self) -> list[str | None]:
        return [e.param for e, _ in self.seen]


@pytest.mark.parametrize("sync_mode", [True, False], ids=["sync", "background"])
def test_refused_signals_are_reported_never_raised(gateway: GatewayProcess, sync_mode: bool):
    rid = llm_call(gateway)
    errors = Errors()
    with FeedbackClient(gateway.url, sync_mode=sync_mode, on_error=errors) as fb:
        bad = fb.rating(rid, "five")  # type: ignore[arg-type]
        fb.defect(rid, "")
        fb.track("copy", rid, colour="red")
        good = fb.copy(rid)
        fb.flush()
    assert errors.params() == ["value", "string_value", "colour"]
    error, events = errors.seen[0]
    assert (error.status, error.code) == (422, "invalid_feedback") and "`value`" in str(error)
    assert [e["event_id"] for e in events] == [bad]
    (row,) = rows(gateway, f"request_id = '{rid}'", 1)  # the valid one, in the same batch
    assert row["event_id"] == good


def test_send_raises_naming_the_field(gateway: GatewayProcess):
    """`send()` is the explicit call that returns the gateway's answer, so it raises."""
    rid = llm_call(gateway)
    with FeedbackClient(gateway.url) as fb:
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
    errors = Errors()
    async with AsyncFeedbackClient(gateway.url, app="client-async", on_error=errors) as fb:
        ids = await asyncio.gather(fb.accepted(rid), fb.rating(rid, 4), fb.dwell(rid, 500))
        refused = await fb.thumbs(rid, True, source="robot")  # reported, not raised
    assert errors.params() == ["source"] and errors.seen[0][1][0]["event_id"] == refused
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
    fb = FeedbackClient("http://gw.test/", key="sk_fb_secret_1", app="shop", http=http,
                        sync_mode=True)  # fmt: skip
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

    errors = Errors()
    fb = FeedbackClient("http://gw.test", http=httpx.Client(transport=httpx.MockTransport(refuse)),
                        sync_mode=True, on_error=errors)  # fmt: skip
    fb.copy("req-1")
    ((error, _),) = errors.seen
    assert (error.status, error.code, error.param) == (401, "missing_api_key", None)


def test_unreachable_gateway_is_reported():
    errors = Errors()
    fb = FeedbackClient("http://127.0.0.1:9", timeout=0.5, retries=1, on_error=errors)
    eid = fb.copy("req-1")
    assert fb.flush(30)
    ((error, events),) = errors.seen
    assert error.status == 0 and "unreachable" in str(error)
    assert [e["event_id"] for e in events] == [eid]
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
    uv = program("uv")
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


def test_the_readme_says_where_uv_build_writes_the_wheel(tmp_path: Path):
    """The README's build command, as written, from the root of a copy of the workspace:
    the wheel is where the README says it is."""
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"`uv build clients/python`\s+writes one,.*?into `([^`]+)` at the root of "
                  r"the checkout", readme, re.S)  # fmt: skip
    assert m, "the README does not say where `uv build clients/python` writes"
    for f in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / f, tmp_path / f)
    shutil.copytree(CLIENT_DIR, tmp_path / "clients" / "python",
                    ignore=shutil.ignore_patterns("dist", "__pycache__", "*.egg-info"))  # fmt: skip
    p = subprocess.run([program("uv"), "build", "clients/python"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr
    built = sorted(x.name for x in (tmp_path / m.group(1)).glob("llm_gateway_feedback-*"))
    assert sorted(x.rsplit(".", 1)[-1] for x in built) == ["gz", "whl"], (built, p.stderr)


# ---------------------------------------------------------------- sending in the background
class Gate:
    """An HTTP hop between the client and the gateway that holds each request until
    opened (a gateway that is slow to answer), can answer 503 first, and counts what it
    forwards: the batches, and the events in each."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.open = threading.Event()
        self.arrived = threading.Event()
        self.fail_first = 0
        self.batches: list[list[str]] = []  # event ids per request that reached it
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                gate.batches.append([e["event_id"] for e in json.loads(body)])
                gate.arrived.set()
                assert gate.open.wait(60), "the gate was never opened"
                if gate.fail_first:
                    gate.fail_first -= 1
                    status, answer = 503, b'{"error": {"message": "busy"}}'
                else:
                    r = httpx.post(gate.upstream + self.path, content=body, timeout=30,
                                   headers={"content-type": "application/json"})  # fmt: skip
                    status, answer = r.status_code, r.content
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.open.set()
        self.server.shutdown()


@pytest.fixture
def gate(gateway: GatewayProcess) -> Iterator[Gate]:
    g = Gate(gateway.url)
    yield g
    g.close()


def test_signals_return_before_the_gateway_answers(gateway: GatewayProcess, gate: Gate):
    """The app's thread only queues: with the gateway holding every request, each signal
    still returns its id; the events go later, in one batch, when flushed."""
    rid = llm_call(gateway)
    fb = FeedbackClient(gate.url, flush_at=5, flush_interval=60)
    ids = [fb.shown(rid), fb.accepted(rid), fb.copy(rid), fb.rating(rid, 5), fb.dwell(rid, 9)]
    assert gate.arrived.wait(30)  # five queued: one batch on its way, held at the gate
    assert gateway.sql(f"SELECT * FROM llm_feedback WHERE request_id = '{rid}'") == []
    gate.open.set()
    assert fb.flush(30)
    assert gate.batches == [ids]
    got = rows(gateway, f"request_id = '{rid}'", 5)
    assert sorted(r["event_id"] for r in got) == sorted(ids)
    fb.close()


def test_a_failed_batch_is_retried_and_counted_once(gateway: GatewayProcess, gate: Gate):
    rid = llm_call(gateway)
    gate.fail_first = 2
    gate.open.set()
    errors = Errors()
    with FeedbackClient(gate.url, flush_interval=0.05, on_error=errors) as fb:
        eid = fb.accepted(rid)
        assert fb.flush(30)
    assert gate.batches == [[eid]] * 3 and errors.seen == []
    (row,) = rows(gateway, f"request_id = '{rid}'", 1)
    assert row["event_id"] == eid


def test_a_full_queue_drops_new_events_and_says_so(gateway: GatewayProcess, gate: Gate):
    rid = llm_call(gateway)
    errors = Errors()
    fb = FeedbackClient(gate.url, max_queue_size=3, flush_at=1, on_error=errors)
    in_flight = fb.accepted(rid)
    assert gate.arrived.wait(30)  # taken off the queue, held at the gate
    queued = [fb.copy(rid), fb.share(rid), fb.regenerate(rid)]
    dropped = [fb.rating(rid, 1), fb.rating(rid, 2)]  # no room left: dropped, not blocked
    assert fb.dropped == 2
    assert [e["event_id"] for err, evs in errors.seen for e in evs] == dropped
    assert all("queue full" in str(err) for err, _ in errors.seen)
    gate.open.set()
    assert fb.close(30)
    got = rows(gateway, f"request_id = '{rid}'", 4)
    assert sorted(r["event_id"] for r in got) == sorted([in_flight, *queued])


def test_sync_mode_sends_before_returning(gateway: GatewayProcess, gate: Gate):
    rid = llm_call(gateway)
    gate.open.set()
    with FeedbackClient(gate.url, sync_mode=True) as fb:
        eid = fb.accepted(rid)
        assert gate.batches == [[eid]]  # delivered when the call returned, no flush
    (row,) = rows(gateway, f"request_id = '{rid}'", 1)
    assert row["event_id"] == eid


EXITS_WITH_QUEUED_EVENTS = """
import sys
from llm_gateway_feedback import FeedbackClient

fb = FeedbackClient(sys.argv[1], flush_interval=60)  # nothing would go before a minute
for name in ("suggestion_shown", "copy", "share"):
    print(fb.track(name, sys.argv[2]))
# no flush, no close: the interpreter's exit sends what is queued
"""


def app_process_sends(gateway: GatewayProcess, script: str, n: int) -> None:
    """Run `script` (an app: it prints the ids of the events it tracks) about one call;
    exactly those n events land."""
    rid = llm_call(gateway)
    p = subprocess.run([sys.executable, "-c", script, gateway.url, rid],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert p.returncode == 0, p.stderr
    got = rows(gateway, f"request_id = '{rid}'", n)
    assert sorted(r["event_id"] for r in got) == sorted(p.stdout.split())


def test_queued_events_are_sent_at_exit(gateway: GatewayProcess):
    app_process_sends(gateway, EXITS_WITH_QUEUED_EVENTS, 3)


FORKS = """
import os, sys
from llm_gateway_feedback import FeedbackClient

fb = FeedbackClient(sys.argv[1], flush_interval=0.05)
print(fb.accepted(sys.argv[2]), flush=True)  # the parent's worker thread starts
fb.flush(30)
pid = os.fork()
if pid == 0:  # a worker process (gunicorn, celery): the thread did not come along
    print(fb.copy(sys.argv[2]), flush=True)
    os._exit(0 if fb.close(30) else 1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_process_sends_its_own_events(gateway: GatewayProcess):
    app_process_sends(gateway, FORKS, 2)
