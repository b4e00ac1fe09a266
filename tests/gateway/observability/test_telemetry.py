"""Traces continue the client's traceparent over real OTLP/HTTP; metric cardinality is
bounded; several workers report one consistent /metrics."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.chhttp import ChHttpServer
from tests.conftest import GatewayProcess, gateway_config, seed_outage

MSG = [{"role": "user", "content": "hi"}]


class OtlpCollector:
    """Receives OTLP/HTTP protobuf trace exports, like an OpenTelemetry Collector would."""

    def __init__(self) -> None:
        self.spans: list[object] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        owner.spans.extend(ss.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def metric_lines(url: str) -> list[str]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        return [ln for ln in r.read().decode().splitlines() if ln and not ln.startswith("#")]


def test_trace_continues_client_traceparent(fake, selfhosted, tmp_path: Path):
    col = OtlpCollector()
    gw = GatewayProcess(
        gateway_config(fake.url, selfhosted.url), tmp_path,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": col.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
             "OTEL_SERVICE_NAME": "gw-test"},
    ).start()  # fmt: skip
    try:
        trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        rid = f"tr-{uuid.uuid4()}"
        openai.OpenAI(base_url=gw.url + "/v1", api_key="k").chat.completions.create(
            model="gpt-4o", messages=MSG,
            extra_headers={"traceparent": f"00-{trace}-{parent}-01", "X-Request-Id": rid},
        )  # fmt: skip
        upstream_tp = fake.requests[-1].headers["traceparent"].split("-")
        deadline = time.monotonic() + 10
        while not col.spans and time.monotonic() < deadline:
            time.sleep(0.05)
        (span,) = col.spans
        assert span.trace_id.hex() == trace and span.parent_span_id.hex() == parent
        assert span.kind == span.SPAN_KIND_CLIENT and span.name == "chat gpt-4o"
        attrs = {a.key: a.value for a in span.attributes}
        assert attrs["gen_ai.provider.name"].string_value == "openai"
        assert attrs["gen_ai.request.model"].string_value == "gpt-4o"
        assert attrs["gen_ai.response.model"].string_value == "gpt-4o-2024-08-06"
        assert attrs["gen_ai.usage.input_tokens"].int_value == 10
        assert attrs["gen_ai.usage.output_tokens"].int_value == 5
        assert "gen_ai.system" not in attrs  # the deprecated name
        # The upstream was called as a child of the gateway's span, and the row joins both.
        assert upstream_tp[1] == trace and upstream_tp[2] == span.span_id.hex()
        row = gw.call_row(rid)
        assert (row["trace_id"], row["span_id"], row["parent_span_id"]) == (
            trace, span.span_id.hex(), parent)  # fmt: skip
        # Without a traceparent the gateway starts a trace of its own.
        openai.OpenAI(base_url=gw.url + "/v1", api_key="k").chat.completions.create(
            model="gpt-4o", messages=MSG)  # fmt: skip
        deadline = time.monotonic() + 10
        while len(col.spans) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert col.spans[1].trace_id.hex() != trace and not col.spans[1].parent_span_id
    finally:
        gw.stop()
        col.server.shutdown()


def test_tracing_off_by_default(gateway: GatewayProcess, fake):
    rid = f"notr-{uuid.uuid4()}"
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    httpx.post(gateway.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": MSG},
               headers={"traceparent": tp, "X-Request-Id": rid})  # fmt: skip
    assert fake.requests[-1].headers["traceparent"] == tp  # passed through untouched
    row = gateway.call_row(rid)
    assert row["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and row["span_id"] == ""


def test_cardinality_is_bounded(fake, selfhosted, tmp_path: Path):
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["metrics"] = {"max_models": 3, "max_apps": 2, "property_labels": ["tier"]}
    gw = GatewayProcess(cfg, tmp_path).start()
    try:
        # The background jobs' own series (an experiment's gauges) first: then only the
        # flood could add any.
        gw.wait_jobs("store_migrations", "experiment_evaluation")

        def series() -> int:
            return len(metric_lines(gw.url))

        async def flood(n: int, off: int = 0) -> None:
            async with httpx.AsyncClient(base_url=gw.url) as c:
                await asyncio.gather(*(
                    c.post("/v1/chat/completions",
                           json={"model": f"gpt-flood-{i}", "messages": MSG, "user": f"u{i}"},
                           headers={"X-Gateway-App": f"app-{i}", "X-Gateway-User": f"u{i}",
                                    "X-Gateway-Session": f"s{i}",
                                    "X-Gateway-Property-Tier": f"t{i}"})
                    for i in range(off, off + n)))  # fmt: skip

        asyncio.run(flood(200))
        first = series()
        asyncio.run(flood(200, off=1000))
        lines = metric_lines(gw.url)
        assert len(lines) == first  # 200 more distinct users, models, apps: no new series
        text = "\n".join(lines)
        assert 'model="other"' in text and 'app="other"' in text
        assert "u150" not in text and "s150" not in text  # users, sessions: never labels
        models = {ln.split('gen_ai_request_model="')[1].split('"')[0]
                  for ln in lines if "gen_ai_request_model=" in ln}  # fmt: skip
        assert len(models) <= 4  # three kept + "other"
        apps = {ln.split('app="')[1].split('"')[0] for ln in lines if 'app="' in ln}
        assert len(apps) <= 3
        assert 'property_tier="' in text
    finally:
        gw.stop()


def test_workers_report_one_consistent_metrics(fake, selfhosted, tmp_path: Path):
    with ChHttpServer(str(tmp_path / "ch")) as ch:
        cfg = gateway_config(fake.url, selfhosted.url)
        cfg["server"]["workers"] = 2
        cfg["store"] = {"kind": "clickhouse", "url": ch.url, "database": "mw",
                        "flush_interval_ms": 50}  # fmt: skip
        cfg["log"] = {"dir": "log"}
        gw = GatewayProcess(cfg, tmp_path).start()
        try:
            # New connections each time so both workers take some of the calls.
            for _ in range(30):
                httpx.post(gw.url + "/v1/chat/completions", headers={"Connection": "close"},
                           json={"model": "gpt-4o", "messages": MSG})  # fmt: skip

            def total() -> float:
                return sum(float(ln.rsplit(" ", 1)[1]) for ln in metric_lines(gw.url)
                           if ln.startswith("gateway_requests_total{"))  # fmt: skip

            # Whichever worker answers the scrape, the sum over both is reported.
            assert {total() for _ in range(6)} == {30.0}
        finally:
            assert gw.stop() == 0


def test_drift_gauges_take_the_worst_row_per_key():
    from collectors.drift import DriftRow
    from gateway.observability.metrics import Metrics

    t = datetime.now(UTC)

    def row(metric: str, score: float, level: str) -> DriftRow:
        return DriftRow(computed_at=t, window_start=t, window_end=t, reference_start=t,
                        app="a", request_model="m", metric=metric, statistic="x",
                        score=score, threshold=0.2, level=level)  # fmt: skip

    m = Metrics()
    m.drift([row("version_change", 0.9, "alert"), row("version_change", 0.1, "alert"),
             row("latency", 0.05, "ok"), row("sample_size", 10, "skipped")])  # fmt: skip
    text = m.render().decode()
    assert 'gateway_drift_score{app="a",metric="version_change",model="m"} 0.9' in text
    assert 'gateway_drift_alert{app="a",metric="version_change",model="m"} 1.0' in text
    assert 'gateway_drift_alert{app="a",metric="latency",model="m"} 0.0' in text
    assert "sample_size" not in text


def test_periodic_drift_task_writes_rows(fake, selfhosted, tmp_path: Path):
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["drift"] = {"enabled": True, "interval_minutes": 0.1, "min_calls": 1}
    seed_outage(tmp_path / cfg["store"]["path"])  # a week of answers, then an outage
    gw = GatewayProcess(cfg, tmp_path).start()
    try:
        openai.OpenAI(base_url=gw.url + "/v1", api_key="k").chat.completions.create(
            model="gpt-4o", messages=MSG)  # fmt: skip
        deadline = time.monotonic() + 20
        rows: list[dict[str, object]] = []
        while not rows and time.monotonic() < deadline:
            time.sleep(0.3)
            rows = gw.sql("SELECT app, request_model, metric, level FROM llm_drift")
        levels = {(r["app"], r["metric"]): r["level"] for r in rows}
        assert levels[("outage", "error_rate")] == "alert", levels
        # gpt-4o of the default app has calls in the current window only: nothing to compare
        # yet, which the run's report says and the table does not
        assert "skipped" not in levels.values() and {a for a, _ in levels} == {"outage"}
        assert '"drift evaluated"' in gw.log()
    finally:
        assert gw.stop() == 0
