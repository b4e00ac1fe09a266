"""Metric sampling: the running figures of the request path, the writers, the gate and the
background jobs, set into /metrics every second and at each scrape (never on the request
path). Running totals become counter increments here, by their difference since the last
sample."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from gateway.jobs import Job, Periodic
from gateway.observability.metrics import Metrics


class RequestFigures(Protocol):
    in_flight: int
    streams_in_flight: int

    @property
    def upstream_failures(self) -> dict[tuple[str, str], int]: ...


class PipelineFigures(Protocol):
    @property
    def depth(self) -> int: ...
    def log_bytes(self) -> int: ...
    def totals(self) -> dict[str, int]: ...
    @property
    def store_ok(self) -> bool: ...


class AccessFigures(Protocol):
    refusals: dict[str, int]

    @property
    def limiter_failures(self) -> int: ...


class Sampler:
    def __init__(
        self,
        metrics: Metrics,
        requests: RequestFigures,
        pipeline: PipelineFigures,
        access: AccessFigures | None,
        jobs: Callable[[], Iterable[Job]],
        log_budget: int,
    ) -> None:
        self.metrics = metrics
        self.requests, self.pipeline, self.access, self.jobs = requests, pipeline, access, jobs
        self.log_budget = log_budget
        self._last: dict[object, int] = {}  # a running total's value at the last sample

    def _delta(self, key: object, value: int) -> int:
        delta = value - self._last.get(key, 0)
        self._last[key] = value
        return max(delta, 0)

    def sample(self) -> None:
        m, r, p = self.metrics, self.requests, self.pipeline
        m.in_flight.set(r.in_flight)
        m.streams_in_flight.set(r.streams_in_flight)
        m.queue_depth.set(p.depth)
        m.log_bytes.set(p.log_bytes())
        m.store_up.set(1 if p.store_ok else 0)
        m.log_budget.set(self.log_budget)
        b = m.budget
        for labels, value in r.upstream_failures.items():
            if delta := self._delta(("upstream", labels), value):
                b.child(m.upstream_failures, labels, (1,)).inc(delta)
        for name, value in p.totals().items():
            if delta := self._delta(("pipeline", name), value):
                (m.write_retries if name == "retries" else m.pipeline[name]).inc(delta)
        if self.access is not None:
            for outcome, value in self.access.refusals.items():
                if delta := self._delta(("refused", outcome), value):
                    b.child(m.refusals, (outcome.removeprefix("refused_"),)).inc(delta)
            if delta := self._delta("limiter", self.access.limiter_failures):
                m.limiter_failures.inc(delta)
        for job in self.jobs():
            h = job.health()
            b.child(m.job_age, (job.name,)).set(-1 if h.last_ok_s is None else h.last_ok_s)
            b.child(m.job_failures, (job.name,)).set(h.failures)
        for metric, n in list(b.folded.items()):
            if delta := self._delta(("folded", metric), n):
                b.child(m.series_folded, (metric,)).inc(delta)
        m.series.set(b.used)

    def job(self, every: float = 1.0) -> Periodic:
        async def sample() -> None:
            self.sample()

        return Periodic("metric_sampling", every, sample)
