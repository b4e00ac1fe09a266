"""Experiment declarations: the `experiments:` section of the config, validated at start.

```yaml
experiments:
  summarizer-model:
    match: {app: summarizer, model: summarize, properties: {feature: digest}}
    unit: user                 # user | session | request
    missing_unit: exclude      # calls without the unit id: exclude | per-request
    variants:
      - {name: control, model: gpt-4o, weight: 50}
      - {name: mini, model: gpt-4o-mini, properties: {prompt: v2}, weight: 50}
    primary: acceptance_rate
    guardrails: [error_rate, p95_latency, cost_per_call]
    margin: 0.01               # |difference| below this is "no meaningful difference"
    planned_units: 20000       # optional: the units you expect; intervals are tightest there
    pre_period_days: 14        # CUPED: each user's primary metric this long before the start
    start: 2026-12-01T00:00:00Z
    weights_since: 2026-12-08T00:00:00Z  # when the weights last changed (for the SRM check)
```

The first variant is the control. The metric names are `METRICS` below; the SQL that
computes them lives with the analysis (collectors/experiments/metrics.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from msgspec import Meta
from msgspec.structs import force_setattr

from gateway.errors import ConfigError
from gateway.sections import FieldError, Instant, Section, read

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class Metric:
    label: str
    higher_is_better: bool
    # The natural scale of a difference, for the default margin (a rate: one point).
    scale: float


# What the analysis can compute per unit. Rates are shares of calls (or of shown
# suggestions, or of sessions); all ratio metrics are ratios of per-unit sums.
METRICS: dict[str, Metric] = {
    "acceptance_rate": Metric("acceptance rate (accepted / shown)", True, 0.01),
    "thumbs_up_rate": Metric("thumbs-up rate (up / thumbs given)", True, 0.01),
    "mean_rating": Metric("mean rating", True, 0.05),
    "copy_rate": Metric("copy rate (calls copied / calls)", True, 0.01),
    "share_rate": Metric("share rate (calls shared / calls)", True, 0.01),
    "regenerate_rate": Metric("regenerate rate (calls regenerated / calls)", False, 0.01),
    "turns_per_session": Metric("turns per session", True, 0.1),
    "abandonment_rate": Metric("abandonment (abandoned sessions / sessions)", False, 0.01),
    "error_rate": Metric("error rate (failed calls / calls)", False, 0.005),
    "p95_latency": Metric("slow-call share (calls slower than control's p95)", False, 0.01),
    "cost_per_call": Metric("cost per call (USD)", False, 0.0001),
    "cost_per_session": Metric("cost per session (USD)", False, 0.001),
}


class Variant(Section, frozen=True):
    name: str
    weight: float = 1.0
    model: str | None = None  # requested model replaced by this one (routed as usual)
    properties: dict[str, str] = {}  # set on the call


class Match(Section, frozen=True):
    """Which calls an experiment applies to; every given field must match."""

    app: str | None = None
    model: str | None = None  # the requested model or alias, as the client sent it
    properties: dict[str, str] = {}


class Experiment(Section, frozen=True):
    """An `experiments:` entry, declared under its name."""

    name: str
    variants: tuple[Variant, ...]
    match: Match = Match()
    unit: Literal["user", "session", "request"] = "user"
    # calls without the unit's id: left out, or assigned by their request id
    missing_unit: Literal["exclude", "per-request"] = "exclude"
    primary: str = "acceptance_rate"
    guardrails: tuple[str, ...] = ("error_rate", "p95_latency", "cost_per_call")
    margin: float = math.nan  # |difference| below this is no meaningful difference;
    # default: the primary metric's natural scale (METRICS)
    alpha: float = 0.05
    min_units: int = 100  # per variant, before any verdict
    # All variants' units expected: the intervals are tuned to be narrowest there (None: a
    # mixture over horizons, valid and near-narrowest at any size).
    planned_units: int | None = None
    # CUPED (unit: user): each user's primary metric over these days before the experiment
    # started is the covariate; 0 turns it off.
    pre_period_days: Annotated[int, Meta(ge=0, le=365)] = 14
    start: Instant | None = None
    stop: Instant | None = None
    # When the weights last changed: the sample-ratio check counts the units first seen
    # since then (earlier units were assigned with the earlier weights).
    weights_since: Instant | None = None
    auto_route_winner: bool = False

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise FieldError("name", "experiment names are 1-64 letters, digits, '_', '.', '-'")
        if len(self.variants) < 2:
            raise FieldError("variants", "needs at least two variants (the first is control)")
        seen: set[str] = set()
        for i, v in enumerate(self.variants):
            if not _NAME.fullmatch(v.name) or v.name in seen:
                raise FieldError(
                    f"variants[{i}].name", f"must be a unique plain name, got {v.name!r}"
                )
            seen.add(v.name)
            if not v.weight > 0:
                raise FieldError(f"variants[{i}].weight", f"must be > 0, got {v.weight!r}")
        for i, metric in enumerate([self.primary, *self.guardrails]):
            if metric not in METRICS:
                where = "primary" if i == 0 else f"guardrails[{i - 1}]"
                raise FieldError(where, f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
        if not 0 < self.alpha < 0.5:
            raise FieldError("alpha", f"must be between 0 and 0.5, got {self.alpha!r}")
        if math.isnan(self.margin):
            force_setattr(self, "margin", METRICS[self.primary].scale)
        elif not self.margin > 0:
            raise FieldError("margin", f"must be > 0, got {self.margin!r}")
        if self.min_units < 10:
            raise FieldError("min_units", f"must be >= 10, got {self.min_units!r}")
        if self.planned_units is not None and self.planned_units < 2 * self.min_units:
            raise FieldError(
                "planned_units",
                f"must be at least twice min_units ({2 * self.min_units}), "
                f"got {self.planned_units!r}",
            )
        if self.start and self.stop and self.stop <= self.start:
            raise FieldError("stop", "must be after start")
        force_setattr(self, "guardrails", tuple(dict.fromkeys(self.guardrails)))

    @property
    def control(self) -> Variant:
        return self.variants[0]

    def weights(self) -> dict[str, float]:
        total = sum(v.weight for v in self.variants)
        return {v.name: v.weight / total for v in self.variants}


class _Declared(Section, frozen=True):
    keyed: ClassVar[tuple[str, ...]] = ("experiments",)

    experiments: tuple[Experiment, ...] = ()


def parse_experiments(data: Mapping[str, Any] | None) -> tuple[Experiment, ...]:
    """The `experiments:` mapping (name -> declaration) alone; ConfigError naming the key."""
    return read({"experiments": data}, _Declared).experiments


def check_models(experiments: tuple[Experiment, ...], routable: Callable[[str], bool]) -> None:
    """Every variant's model must have a route (checked at start, once routes are built)."""
    for e in experiments:
        for i, v in enumerate(e.variants):
            if v.model is not None and not routable(v.model):
                raise ConfigError(
                    f"experiments.{e.name}.variants[{i}].model",
                    f"no route matches model {v.model!r} (see routes and aliases)",
                )
