"""Background jobs (gateway/jobs.py): the one interface, and their health in /readyz and
/metrics of a running gateway."""

from __future__ import annotations

import asyncio
import time

import httpx

from gateway.jobs import Periodic
from tests.conftest import GatewayProcess


async def test_a_periodic_job_counts_failures_retries_and_recovers():
    outcomes = [RuntimeError("store down"), RuntimeError("still down"), None, None]
    runs: list[float] = []

    async def work() -> None:
        runs.append(time.monotonic())
        e = outcomes.pop(0) if outcomes else None
        if e is not None:
            raise e

    job = Periodic("probe", 0.05, work, backoff=0.01)
    assert job.health().last_ok_s is None and job.health().failures == 0
    job.start()
    while len(runs) < 4:
        await asyncio.sleep(0.01)
    await job.stop()
    h = job.health()
    assert h.failures == 2 and h.error == "" and h.last_ok_s is not None
    stopped_at = len(runs)
    await asyncio.sleep(0.1)
    assert len(runs) == stopped_at  # stopped means stopped


async def test_a_job_waits_for_its_precondition_and_once_ends_after_success():
    ready = False
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1

    job = Periodic("once", 0.01, work, until=lambda: ready, once=True)
    job.start()
    await asyncio.sleep(0.1)
    assert calls == 0  # not before its precondition
    ready = True
    await asyncio.sleep(0.7)
    assert calls == 1 and job.health().last_ok_s is not None
    await job.stop()


def test_readyz_and_metrics_show_every_job(gateway: GatewayProcess):
    deadline = time.monotonic() + 10
    while True:
        body = httpx.get(gateway.url + "/readyz").json()
        jobs = body["jobs"]
        if all(j["last_ok_s"] is not None for j in jobs.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert body["status"] == "ready"  # the detail changes nothing of the answer
    assert {"store_migrations", "writer", "feedback_writer", "key_refresh", "spend_seeding",
            "metric_sampling"} <= set(jobs)  # fmt: skip
    for name in ("store_migrations", "writer", "feedback_writer"):
        assert jobs[name]["last_ok_s"] is not None and jobs[name]["failures"] == 0, name
    # the keys are read once their table exists: never a failure at start
    assert jobs["key_refresh"]["last_ok_s"] is not None and jobs["key_refresh"]["failures"] == 0
    assert jobs["spend_seeding"]["failures"] == 0  # its first run is a minute after start
    metrics = httpx.get(gateway.url + "/metrics").text
    ages = {line.split('job="')[1].split('"')[0]: float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("gateway_job_last_success_age_seconds{")}  # fmt: skip
    assert set(ages) == set(jobs) and 0 <= ages["writer"] < 60
    # -1 until a job's first success, as /readyz's null
    assert all((ages[n] == -1) == (j["last_ok_s"] is None) for n, j in jobs.items())
