"""The per-call instruments: what `Metrics.observe` writes for a call, and the histogram
shortcut it takes, checked against prometheus_client's own `observe`."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability import genai
from gateway.observability.metrics import OVERHEAD_BUCKETS, Metrics, MetricsConfig, observe
from gateway.recording.record import CallRecord


def samples(h: Histogram) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in h.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@pytest.mark.parametrize(
    "bounds", [genai.DURATION_BUCKETS, genai.TOKEN_BUCKETS, OVERHEAD_BUCKETS], ids=str
)
def test_observe_fills_the_buckets_prometheus_clients_own_observe_fills(bounds):
    amounts = [0.0, -1.0, 1e12, math.inf]
    for b in bounds:  # on each bound, and on either side of it
        amounts += [b, math.nextafter(b, -math.inf), math.nextafter(b, math.inf)]
    reg = CollectorRegistry()
    ours = Histogram("ours", "", ["x"], buckets=bounds, registry=reg)
    theirs = Histogram("theirs", "", ["x"], buckets=bounds, registry=reg)
    for a in amounts:
        observe(ours.labels("1"), a)
        theirs.labels("1").observe(a)
    got = {(n.replace("ours", "theirs"), labels): v for (n, labels), v in samples(ours).items()}
    assert got == samples(theirs)
    assert got[("theirs_count", (("x", "1"),))] == len(amounts)


def call() -> CallRecord:
    return CallRecord(
        request_id="r1", operation="chat", provider="openai", provider_kind="openai",
        upstream_model="gpt-4o", request_model="gpt-4o", status_code=200, input_tokens=24,
        output_tokens=19, latency_ms=1200.0, overhead_ms=0.3, stream=True, ttft_ms=300.0,
        app="shop", properties={"prompt": "v2"},
    )  # fmt: skip


def exposed(m: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """What /metrics says, by sample name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(m.render().decode())
        for s in family.samples
    }


@pytest.mark.parametrize("property_labels", [(), ("prompt",)])
def test_a_call_is_counted_in_every_instrument(property_labels):
    m = Metrics(MetricsConfig(property_labels=property_labels), ["gpt-4o"])
    m.observe(call())
    m.observe(call())
    got = exposed(m)

    def value(name: str, **labels: str) -> float:
        return got[(name, frozenset(labels.items()))]

    prop = {"property_prompt": "v2"} if property_labels else {}
    requests = dict(app="shop", model="gpt-4o", operation="chat", provider="openai")
    assert value("gateway_requests_total", **requests, **prop, status_class="2xx") == 2
    g = {"app": "shop", "gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
         "gen_ai_request_model": "gpt-4o", "provider": "openai"}  # fmt: skip
    duration = genai.OPERATION_DURATION
    assert value(f"{duration}_bucket", **g, error_type="", le="1.28") == 2
    assert value(f"{duration}_bucket", **g, error_type="", le="0.64") == 0
    assert value(f"{duration}_sum", **g, error_type="") == pytest.approx(2.4)
    tokens = genai.TOKEN_USAGE
    assert value(f"{tokens}_bucket", **g, gen_ai_token_type="input", le="64.0") == 2
    assert value(f"{tokens}_bucket", **g, gen_ai_token_type="input", le="16.0") == 0
    assert value(f"{tokens}_sum", **g, gen_ai_token_type="output") == 38
    chunk = genai.TIME_TO_FIRST_CHUNK
    assert value(f"{chunk}_bucket", **g, le="0.32") == 2
    assert value(f"{chunk}_bucket", **g, le="0.16") == 0
    assert value("gateway_overhead_seconds_bucket", provider="openai", le="0.0005") == 2
    assert value("gateway_overhead_seconds_bucket", provider="openai", le="0.00025") == 0
    tokens_total = dict(app="shop", model="gpt-4o", provider="openai")
    assert value("gateway_tokens_total", **tokens_total, type="input") == 48
