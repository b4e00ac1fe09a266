"""A client's `X-Request-Id` names one call: a repeat of an id this gateway already used
(an SDK retry that keeps its headers, an app that reuses an id) is stored under a fresh id
returned in the response's `X-Request-Id`; the client's id stays in `client_request_id`;
feedback for an id counts once."""

from __future__ import annotations

import time
import uuid

import httpx
import openai
import pytest

from gateway.recording.ids import RequestIds
from tests.conftest import GatewayProcess
from tests.fakes import Behaviour

MESSAGES = [{"role": "user", "content": "hi"}]


def test_request_ids_reuse_and_forget_oldest():
    ids = RequestIds(remember=2)
    assert ids.assign("a") == "a" and ids.assign("b") == "b"
    fresh = ids.assign("a")
    assert fresh != "a" and len(fresh) == 36
    assert ids.assign("c") == "c"  # "a" is forgotten now: the oldest goes first
    assert ids.assign("a") == "a"
    assert ids.assign("") not in ("", "a", "b", "c")


@pytest.fixture
def ready(gateway: GatewayProcess) -> GatewayProcess:
    """The gateway once its store is migrated (it listens before: queries of the new
    column would fail until then)."""
    deadline = time.monotonic() + 60
    while httpx.get(gateway.url + "/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the store was not migrated in time"
        time.sleep(0.1)
    return gateway


def test_reused_id_gives_one_row_per_id_and_feedback_counts_once(ready: GatewayProcess):
    gateway = ready
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    r = f"reuse-{uuid.uuid4()}"
    answers = [
        client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"X-Request-Id": r}
        )
        for _ in range(2)
    ]
    first, second = (a.headers["x-request-id"] for a in answers)
    assert first == r and second not in (r, "")
    rows = gateway.wait_rows(f"client_request_id = '{r}'", 2)
    assert sorted(row["request_id"] for row in rows) == sorted([first, second])
    for rid, name in ((r, "rating"), (second, "rating")):
        ev = {"request_id": rid, "name": name, "value": 4, "event_id": f"{rid}-{name}"}
        assert httpx.post(gateway.url + "/v1/feedback", json=ev).status_code == 200
    q = (
        "SELECT request_id, events FROM llm_call_feedback "
        f"WHERE request_id IN ('{first}', '{second}') ORDER BY request_id"
    )
    deadline = time.monotonic() + 30  # the feedback writer flushes in the background
    while True:
        got = {row["request_id"]: int(row["events"]) for row in gateway.sql(q)}
        if sum(got.values()) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got == {first: 1, second: 1}


def test_sdk_retry_with_the_same_id_is_stored_under_a_fresh_one(ready: GatewayProcess, fake):
    gateway = ready
    # The upstream fails the first calls; the SDK retries the call with the same headers.
    fake.behaviour = Behaviour(fail_times=2, fail_status=503)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=3)
    r = f"retry-{uuid.uuid4()}"
    ok = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"X-Request-Id": r}
    )
    assert ok.http_response.status_code == 200
    answered = ok.headers["x-request-id"]
    assert answered != r  # the call that answered is a repeat of the id
    rows = gateway.wait_rows(f"client_request_id = '{r}'", 2)
    by_id = {row["request_id"]: row for row in rows}
    assert len(by_id) == len(rows)  # one row per request id
    assert by_id[r]["status_code"] == 503 and by_id[answered]["status_code"] == 200
