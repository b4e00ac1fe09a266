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

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import msgspec

from gateway.config import ConfigError

UNITS = ("user", "session", "request")
MISSING_UNIT = ("exclude", "per-request")
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


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: float
    model: str | None = None  # requested model replaced by this one (routed as usual)
    properties: dict[str, str] = field(default_factory=dict)  # set on the call


@dataclass(frozen=True, slots=True)
class Match:
    """Which calls an experiment applies to; every given field must match."""

    app: str | None = None
    model: str | None = None  # the requested model or alias, as the client sent it
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Experiment:
    name: str
    variants: tuple[Variant, ...]
    match: Match = field(default_factory=Match)
    unit: str = "user"
    missing_unit: str = "exclude"
    primary: str = "acceptance_rate"
    guardrails: tuple[str, ...] = ("error_rate", "p95_latency", "cost_per_call")
    margin: float = 0.01
    alpha: float = 0.05
    min_units: int = 100  # per variant, before any verdict
    # All variants' units expected: the intervals are tuned to be narrowest there (None: a
    # mixture over horizons, valid and near-narrowest at any size).
    planned_units: int | None = None
    # CUPED (unit: user): each user's primary metric over these days before the experiment
    # started is the covariate; 0 turns it off.
    pre_period_days: int = 14
    start: datetime | None = None
    stop: datetime | None = None
    # When the weights last changed: the sample-ratio check counts the units first seen
    # since then (earlier units were assigned with the earlier weights).
    weights_since: datetime | None = None
    auto_route_winner: bool = False

    @property
    def control(self) -> Variant:
        return self.variants[0]

    def weights(self) -> dict[str, float]:
        total = sum(v.weight for v in self.variants)
        return {v.name: v.weight / total for v in self.variants}


_D = Experiment(name="", variants=())


# The YAML's shape, checked by msgspec; the dataclasses above are what the code uses.
class _VariantIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    weight: float = 1.0
    model: str | None = None
    properties: dict[str, str | int | float] = {}


class _MatchIn(msgspec.Struct, forbid_unknown_fields=True):
    app: str | None = None
    model: str | None = None
    properties: dict[str, str | int | float] = {}


class _ExperimentIn(msgspec.Struct, forbid_unknown_fields=True):
    variants: list[_VariantIn]
    match: _MatchIn = msgspec.field(default_factory=_MatchIn)
    unit: str = _D.unit
    missing_unit: str = _D.missing_unit
    primary: str = _D.primary
    guardrails: list[str] = msgspec.field(default_factory=lambda: list(_D.guardrails))
    margin: float | None = None
    alpha: float = _D.alpha
    min_units: int = _D.min_units
    planned_units: int | None = _D.planned_units
    pre_period_days: int = _D.pre_period_days
    start: Any = None  # a datetime, a date, or ISO 8601 text: checked by _time()
    stop: Any = None
    weights_since: Any = None
    auto_route_winner: bool = _D.auto_route_winner


_MSGSPEC_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)
_MSGSPEC_FIELD = re.compile(r"field `([^`]+)`")


def _key_of(error: msgspec.ValidationError, base: str) -> tuple[str, str]:
    """msgspec's 'Expected `int`, got `str` - at `$.variants[0].weight`' as
    ('<base>.variants[0].weight', 'expected `int`, got `str`')."""
    m = _MSGSPEC_AT.match(str(error))
    assert m is not None
    message, path = m.group(1), m.group(2) or ""
    f = _MSGSPEC_FIELD.search(message)
    if f and ("unknown field" in message or "missing required field" in message):
        path += "." + f.group(1)
        message = "unknown key" if "unknown" in message else "is required"
    return base + path, message[:1].lower() + message[1:]


def _time(value: Any, key: str) -> datetime | None:
    """YAML gives datetimes, dates or strings; naive times are UTC."""
    if value is None:
        return None
    t = value
    if isinstance(t, str):
        try:
            t = datetime.fromisoformat(t)
        except ValueError:
            t = None
    elif isinstance(t, date) and not isinstance(t, datetime):
        t = datetime(t.year, t.month, t.day)
    if not isinstance(t, datetime):
        raise ConfigError(key, f"must be an ISO 8601 date or time, got {value!r}")
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def _strs(d: dict[str, str | int | float]) -> dict[str, str]:
    return {str(k): str(v) for k, v in d.items()}


def parse_experiment(name: str, data: Any, base: str = "experiments") -> Experiment:
    key = f"{base}.{name}"
    if not _NAME.fullmatch(str(name)):
        raise ConfigError(key, "experiment names are 1-64 letters, digits, '_', '.', '-'")
    try:
        raw = msgspec.convert(data, _ExperimentIn, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(*_key_of(e, key)) from None
    if raw.unit not in UNITS:
        raise ConfigError(f"{key}.unit", f"must be one of {', '.join(UNITS)}; got {raw.unit!r}")
    if raw.missing_unit not in MISSING_UNIT:
        raise ConfigError(
            f"{key}.missing_unit",
            f"must be one of {', '.join(MISSING_UNIT)}; got {raw.missing_unit!r}",
        )
    if len(raw.variants) < 2:
        raise ConfigError(f"{key}.variants", "needs at least two variants (the first is control)")
    seen: set[str] = set()
    for i, v in enumerate(raw.variants):
        if not _NAME.fullmatch(v.name) or v.name in seen:
            raise ConfigError(
                f"{key}.variants[{i}].name", f"must be a unique plain name, got {v.name!r}"
            )
        seen.add(v.name)
        if not v.weight > 0:
            raise ConfigError(f"{key}.variants[{i}].weight", f"must be > 0, got {v.weight!r}")
    for i, metric in enumerate([raw.primary, *raw.guardrails]):
        if metric not in METRICS:
            where = f"{key}.primary" if i == 0 else f"{key}.guardrails[{i - 1}]"
            raise ConfigError(where, f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
    if not 0 < raw.alpha < 0.5:
        raise ConfigError(f"{key}.alpha", f"must be between 0 and 0.5, got {raw.alpha!r}")
    margin = METRICS[raw.primary].scale if raw.margin is None else raw.margin
    if not margin > 0:
        raise ConfigError(f"{key}.margin", f"must be > 0, got {raw.margin!r}")
    if raw.min_units < 10:
        raise ConfigError(f"{key}.min_units", f"must be >= 10, got {raw.min_units!r}")
    if raw.planned_units is not None and raw.planned_units < 2 * raw.min_units:
        raise ConfigError(
            f"{key}.planned_units",
            f"must be at least twice min_units ({2 * raw.min_units}), got {raw.planned_units!r}",
        )
    if not 0 <= raw.pre_period_days <= 365:
        raise ConfigError(
            f"{key}.pre_period_days", f"must be between 0 and 365, got {raw.pre_period_days!r}"
        )
    start, stop = _time(raw.start, f"{key}.start"), _time(raw.stop, f"{key}.stop")
    if start and stop and stop <= start:
        raise ConfigError(f"{key}.stop", "must be after start")
    return Experiment(
        name=name,
        variants=tuple(
            Variant(v.name, float(v.weight), v.model, _strs(v.properties)) for v in raw.variants
        ),
        match=Match(raw.match.app, raw.match.model, _strs(raw.match.properties)),
        unit=raw.unit,
        missing_unit=raw.missing_unit,
        primary=raw.primary,
        guardrails=tuple(dict.fromkeys(raw.guardrails)),
        margin=float(margin),
        alpha=raw.alpha,
        min_units=raw.min_units,
        planned_units=raw.planned_units,
        pre_period_days=raw.pre_period_days,
        start=start,
        stop=stop,
        weights_since=_time(raw.weights_since, f"{key}.weights_since"),
        auto_route_winner=raw.auto_route_winner,
    )


def parse_experiments(data: Any, base: str = "experiments") -> tuple[Experiment, ...]:
    """The `experiments:` mapping (name -> declaration); ConfigError naming the bad key."""
    if data is None:
        return ()
    if not isinstance(data, dict):
        raise ConfigError(base, "must be a mapping of experiment name to its declaration")
    return tuple(parse_experiment(str(name), spec, base) for name, spec in data.items())


def check_models(experiments: tuple[Experiment, ...], routable: Callable[[str], bool]) -> None:
    """Every variant's model must have a route (checked at start, once routes are built)."""
    for e in experiments:
        for i, v in enumerate(e.variants):
            if v.model is not None and not routable(v.model):
                raise ConfigError(
                    f"experiments.{e.name}.variants[{i}].model",
                    f"no route matches model {v.model!r} (see routes and aliases)",
                )
