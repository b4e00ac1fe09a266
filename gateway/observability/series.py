"""One budget of series for the whole /metrics registry.

Every label set of every metric counts: a counter's or a gauge's is one series, a
histogram's as many as its buckets plus `_sum` and `_count`. Label values are already
bounded one by one (`LabelCap`: so many models, so many apps); their combinations are
bounded here. Once the budget is spent, a new label set has its open labels (model, app,
error type, properties: whatever a client's traffic can vary) replaced by `other`, and
`gateway_metric_series_folded_total{metric}` counts it. Label sets already admitted keep
their series. The folded sets themselves are admitted past the budget: there are only as
many of them as combinations of the closed labels (provider, operation, status class),
which the config bounds.

With several worker processes each keeps its own budget (each writes its own series).
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import Histogram

OTHER = "other"


def series_of(metric: Any) -> int:
    """Series one label set of `metric` writes to the exposition."""
    if isinstance(metric, Histogram):
        return len(metric._upper_bounds) + 2  # buckets (+Inf included), _sum, _count
    return 1


class SeriesBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._known: set[tuple[int, tuple[str, ...]]] = set()
        self.folded: dict[str, int] = {}  # metric name -> label sets folded into "other"
        self._lock = threading.Lock()  # the writer thread prices (and labels) calls too

    def fixed(self, *metrics: Any) -> None:
        """Metrics without labels: one set each, counted from the start."""
        self.used += sum(series_of(m) for m in metrics)

    def child(self, metric: Any, values: tuple[str, ...], fold: tuple[int, ...] = ()) -> Any:
        """`metric.labels(*values)`, within the budget: past it, the labels at the `fold`
        positions of a new label set become `other`."""
        key = (id(metric), values)
        if key not in self._known:
            with self._lock:
                if key not in self._known:
                    cost = series_of(metric)
                    if fold and self.used + cost > self.limit:
                        values = tuple(OTHER if i in fold else v for i, v in enumerate(values))
                        name = metric._name
                        self.folded[name] = self.folded.get(name, 0) + 1
                        key = (id(metric), values)
                    if key not in self._known:
                        self._known.add(key)
                        self.used += cost
        return metric.labels(*values)
