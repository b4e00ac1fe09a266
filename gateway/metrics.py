"""Prometheus exposition for `/metrics`.

The recording pipeline's figures are read from the writer's counters at scrape time, so
they cost the request path nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.writer import BatchWriter


class PipelineCollector(Collector):
    def __init__(self, writer: BatchWriter, in_flight: Callable[[], int]) -> None:
        self.writer = writer
        self.in_flight = in_flight

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        w = self.writer
        c = w.counters
        yield GaugeMetricFamily(
            "gateway_record_queue_depth", "Call records accepted but not yet in the store.",
            value=w.depth,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "gateway_record_log_bytes", "Bytes of the durable record log on disk.",
            value=w.queue.size_bytes(),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "gateway_store_up", "1 when the last write to the store succeeded.",
            value=1 if c.store_ok else 0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "gateway_requests_in_flight", "Requests being served now.", value=self.in_flight()
        )
        for name, doc, value in (
            ("gateway_records_accepted", "Call records accepted by the pipeline.", c.accepted),
            ("gateway_records_written", "Call records written to the store.", c.written),
            ("gateway_records_replayed",
             "Call records from an earlier process's log written after a restart.", c.replayed),
            ("gateway_record_write_retries", "Failed batch inserts, retried later.", c.retries),
            ("gateway_records_dropped",
             "Call records that could not be kept (record log or queue over budget).", c.dropped),
            ("gateway_unpriced_calls", "Calls with tokens but no known price.", c.unpriced),
        ):  # fmt: skip
            yield CounterMetricFamily(name, doc, value=value)


class Metrics:
    def __init__(self, writer: BatchWriter, in_flight: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PipelineCollector(writer, in_flight))

    def render(self) -> bytes:
        return generate_latest(self.registry)
