"""Prometheus metrics for `/metrics`.

Names follow the OpenTelemetry GenAI semantic conventions where one exists, with the
spec's units and bucket boundaries, as an OTel-to-Prometheus exporter would name them:
`gen_ai_client_operation_duration_seconds`, `gen_ai_client_token_usage`,
`gen_ai_client_operation_time_to_first_chunk_seconds`. Gateway metrics are `gateway_*`.

The `model` label (`gen_ai_request_model` on the GenAI metrics) is the model that served
the call (`upstream_model`: after aliases, route rewrites and fallbacks), as reports and
dashboards compare it; a call that reached no upstream has none.

Cardinality is bounded: end users and sessions are never labels; the model and app labels
keep the first `max_models` / `max_apps` distinct values (64 characters at most) and fold
the rest into "other"; a model name the config does not spell out is a label only once
an upstream has answered it with success;
request properties become labels only when listed in `metrics.property_labels`. On top of
that, every label set of every metric counts toward one series budget (`max_series`,
`series.py`), past which new label sets fold into "other".

With several worker processes (`server.workers` > 1) the CLI points
`PROMETHEUS_MULTIPROC_DIR` at a shared directory before any worker starts, and every
worker's `/metrics` reports the sum over all of them.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from collections.abc import Iterable
from typing import Annotated, Any, Protocol

from msgspec import Meta
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.observability import genai
from gateway.observability.genai import DURATION_BUCKETS, TOKEN_BUCKETS
from gateway.observability.series import OTHER, SeriesBudget
from gateway.providers import genai_provider_name
from gateway.recording.record import FAILED_STATUS, REFUSALS, CallRecord, Outcome, is_failed
from gateway.sections import Positive, Section


class MetricsConfig(Section, frozen=True):
    """The `metrics:` section."""

    enabled: bool = True  # per-call metrics (pipeline gauges are always kept)
    max_models: Positive = 100  # distinct model label values; more fold into "other"
    max_apps: Positive = 50
    max_series: Positive = 2000  # series in /metrics (histogram buckets count); see series.py
    # X-Gateway-Property-<name>s that become labels
    property_labels: tuple[Annotated[str, Meta(pattern=r"^[a-z0-9_-]{1,32}$")], ...] = ()


class DriftRowLike(Protocol):
    @property
    def app(self) -> str: ...
    @property
    def request_model(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def level(self) -> str: ...
    @property
    def alert(self) -> bool: ...


class PricedRow(Protocol):
    """What the writer tells of a row it priced (recording/writer.py's PriceView)."""

    app: str
    provider: str
    request_model: str
    upstream_model: str
    cost_usd: float | None
    cost_saved_usd: float | None


class FeedbackEventLike(Protocol):
    name: str
    source: str


disable_created_metrics()  # `*_created` series double the count and nobody graphs them


def _mp_mode(mode: str, mp: bool) -> dict[str, Any]:
    """How a gauge's per-process values combine, in multiprocess mode."""
    return {"multiprocess_mode": mode} if mp else {}


def observe(h: Histogram, amount: float) -> None:
    """`h.observe(amount)` for a label child of this module's (observable, no exemplar),
    on every call: its bucket found by bisection, not by a loop over the bounds, and the
    checks of a child's kind and an exemplar skipped."""
    h._sum.inc(amount)
    h._buckets[bisect_left(h._upper_bounds, amount)].inc(1)  # the first bound >= amount


OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

LABEL_MAX_CHARS = 64


class LabelCap:
    """Keeps the first `limit` distinct values of a label, each at most `LABEL_MAX_CHARS`
    long; later and longer ones become "other". `known` values (from the config) are
    always kept and use none of the budget."""

    def __init__(self, limit: int, known: Iterable[str] = ()) -> None:
        self.limit = limit
        self.known = frozenset(v for v in known if len(v) <= LABEL_MAX_CHARS)
        self.seen: set[str] = set(self.known)
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(value) > LABEL_MAX_CHARS:
            return OTHER
        with self._lock:
            if len(self.seen) - len(self.known) < self.limit:
                self.seen.add(value)
                return value
        return OTHER


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    def __init__(self, cfg: MetricsConfig | None = None, known_models: Iterable[str] = ()) -> None:
        """`known_models`: the names the config routes exactly (routes and aliases)."""
        cfg = cfg or MetricsConfig()
        max_models, max_apps, property_labels = cfg.max_models, cfg.max_apps, cfg.property_labels
        mp = multiprocess()
        # In multiprocess mode values live in files; the exposition registry collects them.
        reg = None if mp else CollectorRegistry(auto_describe=True)
        self.registry = reg if reg is not None else CollectorRegistry()
        if mp:
            MultiProcessCollector(self.registry)
        self.budget = budget = SeriesBudget(cfg.max_series)
        self.models = LabelCap(max_models, known_models)
        self.error_types = LabelCap(32)
        self.apps = LabelCap(max_apps)
        self.property_labels = property_labels
        # `provider` (the configured provider) beside the semantic-convention labels, so that
        # two OpenAI-compatible upstreams can be told apart.
        genai_labels = [genai.L_OPERATION, genai.L_PROVIDER, genai.L_REQUEST_MODEL, "app",
                        "provider"]  # fmt: skip
        self.duration = Histogram(
            genai.OPERATION_DURATION, "GenAI operation duration.",
            [*genai_labels, "error_type"], buckets=DURATION_BUCKETS, registry=reg,
        )  # fmt: skip
        self.tokens = Histogram(
            genai.TOKEN_USAGE, "Number of input and output tokens used.",
            [*genai_labels, genai.L_TOKEN_TYPE], buckets=TOKEN_BUCKETS, registry=reg,
        )  # fmt: skip
        self.ttfc = Histogram(
            genai.TIME_TO_FIRST_CHUNK,
            "Time to receive the first chunk of a streamed response.",
            genai_labels, buckets=DURATION_BUCKETS, registry=reg,
        )  # fmt: skip
        props = [f"property_{p.replace('-', '_')}" for p in property_labels]
        self.prop_caps = [LabelCap(max_apps) for _ in property_labels]
        self.requests = Counter(
            "gateway_requests", "Calls through the gateway, by HTTP status class.",
            ["app", "provider", "model", "operation", "status_class", *props], registry=reg,
        )  # fmt: skip
        self.cost = Counter(
            "gateway_cost_usd", "Cost of calls in USD (calls with a known price).",
            ["app", "provider", "model"], registry=reg,
        )  # fmt: skip
        self.token_total = Counter(
            "gateway_tokens", "Tokens by type.", ["app", "provider", "model", "type"], registry=reg
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds", "Time spent in the gateway itself, not the upstream.",
            ["provider"], buckets=OVERHEAD_BUCKETS, registry=reg,
        )  # fmt: skip
        self.retries = Counter(
            "gateway_upstream_retries", "Upstream attempts beyond the first.", ["provider"],
            registry=reg,
        )  # fmt: skip
        self.fallbacks = Counter(
            "gateway_fallbacks", "Calls served by a fallback target.", ["provider"], registry=reg
        )
        self.unknown_price = Counter(
            "gateway_unknown_price_calls", "Calls with tokens whose model has no known price.",
            ["provider", "model"], registry=reg,
        )  # fmt: skip
        kw = _mp_mode("livesum", mp)
        self.in_flight = Gauge(
            "gateway_requests_in_flight", "Requests being served now.", registry=reg, **kw
        )
        self.streams_in_flight = Gauge(
            "gateway_streams_in_flight", "Streams being passed through now.", registry=reg, **kw
        )
        self.queue_depth = Gauge(
            "gateway_record_queue_depth", "Call records accepted but not yet in the store.",
            registry=reg, **kw,
        )  # fmt: skip
        self.log_bytes = Gauge(
            "gateway_record_log_bytes", "Bytes of the durable record log on disk.",
            registry=reg, **kw,
        )  # fmt: skip
        self.store_up = Gauge(
            "gateway_store_up", "1 when the last write to the store succeeded.", registry=reg,
            **_mp_mode("min", mp),
        )  # fmt: skip
        self.pipeline = {
            name: Counter(f"gateway_records_{name}", doc, registry=reg)
            for name, doc in (
                ("accepted", "Call records accepted by the pipeline."),
                ("written", "Call records written to the store."),
                ("replayed", "Call records from an earlier process's log written after a start."),
                ("dropped", "Call records that could not be kept (log or queue over budget)."),
            )
        }
        self.write_retries = Counter(
            "gateway_record_write_retries", "Failed batch inserts, retried later.", registry=reg
        )
        self.upstream_failures = Counter(
            "gateway_upstream_failures", "Upstream attempts that failed and were retried "
            "or fell back, by the provider that failed.", ["provider", "reason"], registry=reg,
        )  # fmt: skip
        self.log_budget = Gauge(
            "gateway_record_log_budget_bytes", "The record log's disk budget (log.max_bytes).",
            registry=reg, **_mp_mode("max", mp),
        )  # fmt: skip
        gauge_kw = _mp_mode("mostrecent", mp)
        self.drift_score = Gauge(
            "gateway_drift_score", "Latest drift score (PSI, JS distance, |z|, ...) per group "
            "and metric.", ["app", "model", "metric"], registry=reg, **gauge_kw,
        )  # fmt: skip
        self.drift_alert = Gauge(
            "gateway_drift_alert", "1 while the latest drift run alerts on this group and metric.",
            ["app", "model", "metric"], registry=reg, **gauge_kw,
        )  # fmt: skip
        # Experiments: labels are the declared experiments and variants (bounded by config).
        self.experiment_verdict = Gauge(
            "gateway_experiment_verdict", "Latest verdict per experiment: 0 keep running, "
            "1 winner, 2 no meaningful difference, 3 guardrail breached, 4 assignment broken "
            "(sample ratio mismatch).", ["experiment"], registry=reg, **gauge_kw,
        )  # fmt: skip
        self.experiment_units = Gauge(
            "gateway_experiment_units", "Units (users, sessions or requests) per variant at "
            "the latest evaluation.", ["experiment", "variant"], registry=reg, **gauge_kw,
        )  # fmt: skip
        self.experiment_effect = Gauge(
            "gateway_experiment_effect", "Primary metric, variant minus control, at the latest "
            "evaluation: the estimate and the always-valid interval's edges.",
            ["experiment", "variant", "bound"], registry=reg, **gauge_kw,
        )  # fmt: skip
        self.experiment_srm_p = Gauge(
            "gateway_experiment_srm_p", "Always-valid p-value of the sample-ratio check (below "
            "0.001: assignment broken).", ["experiment"], registry=reg, **gauge_kw,
        )  # fmt: skip
        self.feedback = Counter(
            "gateway_feedback_events", "End-user signals received, by name and source.",
            ["name", "source"], registry=reg,
        )  # fmt: skip
        self.feedback_names = LabelCap(64)
        self.refusals = Counter(
            "gateway_access_refusals", "Calls refused by gateway keys and limits, by reason.",
            ["reason"], registry=reg,
        )  # fmt: skip
        self.limiter_failures = Counter(
            "gateway_limiter_failures",
            "Times the shared limits store (Redis) could not be reached (auth.redis_failure "
            "says whether those calls were admitted).", registry=reg,
        )  # fmt: skip
        self.job_age = Gauge(
            "gateway_job_last_success_age_seconds", "Seconds since each background job last "
            "did its work (-1: not yet).", ["job"], registry=reg, **gauge_kw,
        )  # fmt: skip
        self.job_failures = Gauge(
            "gateway_job_failures", "Failed runs of each background job since start.", ["job"],
            registry=reg, **gauge_kw,
        )  # fmt: skip
        # The response cache (gateway/cache), by app and the model that served the call.
        self.cache_calls = Counter(
            "gateway_cache_calls", "Calls the response cache had a part in, by what it did "
            "(hit, miss, refresh, bypass) and the model that served them.",
            ["app", "provider", "model", "status"], registry=reg,
        )  # fmt: skip
        self.cache_saved = Counter(
            "gateway_cache_saved_usd", "What the calls the response cache answered would have "
            "cost, in USD (their answers' usage, priced).", ["app", "provider", "model"],
            registry=reg,
        )  # fmt: skip
        self.series_folded = Counter(
            "gateway_metric_series_folded", "Label sets folded into \"other\" because the "
            "series budget (metrics.max_series) was spent, by metric.", ["metric"], registry=reg,
        )  # fmt: skip
        self.series = Gauge(
            "gateway_metric_series", "Series counted against the budget (metrics.max_series).",
            registry=reg, **_mp_mode("max", mp),
        )  # fmt: skip
        budget.fixed(self.in_flight, self.streams_in_flight, self.queue_depth, self.log_bytes,
                     self.store_up, *self.pipeline.values(), self.write_retries,
                     self.log_budget, self.limiter_failures, self.series)  # fmt: skip
        self._children: dict[tuple[Any, ...], list[Any]] = {}

    def observe(self, rec: CallRecord) -> None:
        """One finished call. Label children are cached per label set, so this is a few
        dictionary lookups and additions on the request path."""
        rejected = rec.outcome == Outcome.REJECTED or rec.outcome in REFUSALS
        model = rec.upstream_model  # served (or tried); none when no upstream was called
        # A model an upstream answered with an error may be whatever the client typed
        # (a glob route passes names on): only names the config spells out are labels then.
        if model and (rejected or rec.status_code >= FAILED_STATUS):
            model = model if model in self.models.known else OTHER
        elif model:
            model = self.models(model)
        app = self.apps(rec.app)
        status_class = f"{rec.status_code // 100}xx" if rec.status_code else "none"
        props = tuple(
            cap(rec.properties.get(p, ""))
            for p, cap in zip(self.property_labels, self.prop_caps, strict=True)
        ) if self.property_labels else ()  # fmt: skip
        failed = is_failed(rec)
        error_type = self.error_types(rec.error_type or rec.outcome) if failed else ""
        key = (rec.operation, rec.provider, rec.provider_kind, model, app, status_class,
               error_type, props)  # fmt: skip
        ch = self._children.get(key)
        if ch is None:
            ch = self._make_children(key)
        observe(ch[0], rec.latency_ms / 1000.0)
        ch[1]._value.inc(1)  # `inc()` without its checks (a counter's child, 1)
        observe(ch[2], rec.overhead_ms / 1000.0)
        if rec.input_tokens or rec.output_tokens:
            if ch[3] is None:  # created on first use: no empty series for token-less calls
                g, b = ch[5], self.budget
                ch[3] = (
                    b.child(self.tokens, (*g, "input"), (2, 3)),
                    b.child(self.tokens, (*g, "output"), (2, 3)),
                    b.child(self.token_total, (app, rec.provider, model, "input"), (0, 2)),
                    b.child(self.token_total, (app, rec.provider, model, "output"), (0, 2)),
                )
            tin, tout, tok_in, tok_out = ch[3]
            observe(tin, rec.input_tokens)
            observe(tout, rec.output_tokens)
            tok_in.inc(rec.input_tokens)
            tok_out.inc(rec.output_tokens)
        if rec.stream and rec.ttft_ms is not None:
            if ch[4] is None:
                ch[4] = self.budget.child(self.ttfc, ch[5], (2, 3))
            observe(ch[4], rec.ttft_ms / 1000.0)
        if rec.attempts > 1:
            self.budget.child(self.retries, (rec.provider,)).inc(rec.attempts - 1)
        if rec.fallback_used:
            self.budget.child(self.fallbacks, (rec.provider,)).inc()
        if rec.cache_status:
            self._cache_call(app, rec)

    def _cache_call(self, app: str, rec: CallRecord) -> None:
        served = rec.upstream_model
        # As for the requested model: a name an upstream refused is a label only if known.
        served = (
            self.models(served)
            if rec.status_code < FAILED_STATUS
            else (served if served in self.models.known else OTHER)
        )
        key = (app, rec.provider, served, rec.cache_status)
        self.budget.child(self.cache_calls, key, (0, 2)).inc()

    def _make_children(self, key: tuple[Any, ...]) -> list[Any]:
        operation, provider, kind, model, app, status_class, error_type, props = key
        if len(self._children) > 20_000:  # bounded anyway; keep the cache from growing
            self._children.clear()
        gp = genai_provider_name(str(kind))
        g = (operation, gp, model, app, provider)
        b = self.budget
        request_labels = (app, provider, model, operation, status_class, *props)
        open_labels = (0, 2, *range(5, 5 + len(props)))  # app, model, properties
        ch: list[Any] = [
            b.child(self.duration, (*g, error_type), (2, 3, 5)),
            b.child(self.requests, request_labels, open_labels),
            b.child(self.overhead, (provider,)),
            None,  # token instruments, on first use
            None,  # time to first chunk, on first use
            g,
        ]
        self._children[key] = ch
        return ch

    def priced(self, provider: str, model: str, cost: float | None, known: bool, app: str) -> None:
        """Called by the writer once a record's price is known (off the request path);
        `model`: the one that served the call."""
        model = self.models(model) if model else ""
        if cost:
            self.budget.child(self.cost, (self.apps(app), provider, model), (0, 2)).inc(cost)
        if not known:
            self.budget.child(self.unknown_price, (provider, model), (1,)).inc()

    def priced_view(self, v: PricedRow, known: bool) -> None:
        """A row the writer priced: its cost, and what a response-cache hit saved."""
        self.priced(v.provider, v.upstream_model, v.cost_usd, known, v.app)
        if v.cost_saved_usd:
            labels = (self.apps(v.app), v.provider, self.models(v.upstream_model))
            self.budget.child(self.cache_saved, labels, (0, 2)).inc(v.cost_saved_usd)

    def feedback_event(self, event: FeedbackEventLike) -> None:
        name = self.feedback_names(event.name)
        self.budget.child(self.feedback, (name, event.source), (0,)).inc()

    def experiment(
        self,
        name: str,
        verdict: int,
        units: dict[str, int],
        srm_p: float,
        effects: Iterable[tuple[str, float, float, float]],
    ) -> None:
        """The latest evaluation of one experiment; `effects`: (variant, estimate, low,
        high) of the primary metric against the control."""
        b = self.budget  # experiments and variants are declared: bounded by the config
        b.child(self.experiment_verdict, (name,)).set(verdict)
        b.child(self.experiment_srm_p, (name,)).set(srm_p)
        for variant, n in units.items():
            b.child(self.experiment_units, (name, variant)).set(n)
        for variant, est, low, high in effects:
            for bound, value in (("estimate", est), ("low", low), ("high", high)):
                b.child(self.experiment_effect, (name, variant, bound)).set(value)

    def drift(self, rows: Iterable[DriftRowLike]) -> None:
        """The latest drift run. Several rows may share a key (one per new version): the
        gauge shows the highest score, and alerts if any of them does."""
        latest: dict[tuple[str, str, str], tuple[float, bool]] = {}
        for r in rows:
            if r.level == "skipped":
                continue
            key = (self.apps(r.app), self.models(r.request_model), r.metric)
            score, alert = latest.get(key, (float("-inf"), False))
            latest[key] = (max(score, r.score), alert or r.alert)
        for key, (score, alert) in latest.items():
            self.budget.child(self.drift_score, key, (0, 1)).set(score)
            self.budget.child(self.drift_alert, key, (0, 1)).set(1 if alert else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
