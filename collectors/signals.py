"""The signal registry: every known end-user signal, what its value means, and the columns
of the views it feeds.

Adding a signal is one line in `SIGNALS`: the feedback API validates it by its data type
(and bounds), its OpenAPI description lists it, and the views `llm_call_feedback` and
`llm_sessions` (collectors/views.py) get its columns the next time the store is migrated
(`llm-gateway migrate`, or any start of the gateway). Signals not listed here are accepted
too (custom names): they are stored in `llm_feedback` and counted in `events`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from collectors.sql import lit


class Agg(StrEnum):
    """How a view column sums up a call's (or a session's) events of its signals."""

    FLAG = "flag"  # UInt8: 1 when there is any such event
    COUNT = "count"  # UInt64: the events
    COUNT_VALUES = "count_values"  # UInt64: the events that carry a value
    AVG = "avg"  # Nullable(Float64): the mean value, NULL without one
    SUM = "sum"  # Float64: the sum of the values (0 without one)
    LABELS = "labels"  # Array(String): the distinct string values, sorted


FLAG, COUNT, COUNT_VALUES = Agg.FLAG, Agg.COUNT, Agg.COUNT_VALUES
AVG, SUM, LABELS = Agg.AVG, Agg.SUM, Agg.LABELS


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    data_type: str  # numeric | boolean | categorical | text
    meaning: str
    call: Mapping[str, Agg] = field(default_factory=dict)  # llm_call_feedback columns
    session: Mapping[str, Agg] = field(default_factory=dict)  # llm_sessions columns
    bounds: tuple[float, float] | None = None  # allowed values of a numeric signal


INF = float("inf")

# The order is the order of the views' columns. Values of boolean signals are 1/0.
SIGNALS: tuple[Signal, ...] = (
    Signal("suggestion_shown", "boolean", "the suggestion was shown; value defaults to 1",
           {"shown": FLAG}),
    Signal("suggestion_accepted", "boolean", "the suggestion was accepted; value defaults to 1",
           {"shown": FLAG, "accepted": FLAG}, {"accepted": COUNT}),
    Signal("suggestion_rejected", "boolean", "the suggestion was dismissed; value defaults to 1",
           {"shown": FLAG, "rejected": FLAG}),
    Signal("rating", "numeric", "a score, e.g. 1 to 5",
           {"rating": AVG, "ratings": COUNT_VALUES}, {"rating": AVG}),
    Signal("thumbs", "boolean", "true (1) for up, false (0) for down", {"thumbs": AVG}),
    Signal("copy", "boolean", "the answer was copied; value defaults to 1", {"copies": COUNT}),
    Signal("share", "boolean", "the answer was shared; value defaults to 1", {"shares": COUNT}),
    Signal("regenerate", "boolean", "the user asked for another answer; value defaults to 1",
           {"regenerations": COUNT}, {"regenerations": COUNT}),
    Signal("correction", "text", "the user's corrected text, in string_value",
           {"corrections": COUNT}),
    Signal("dwell", "numeric", "milliseconds the answer was visible", {"dwell_ms": SUM},
           bounds=(0.0, INF)),
    Signal("suggestion_retained", "numeric", "share of the accepted text still there later, 0..1",
           {"retained": AVG}, bounds=(0.0, 1.0)),
    Signal("defect", "categorical", "a category in string_value, e.g. hallucination",
           {"defects": LABELS}),
    Signal("session_end", "boolean", "the conversation ended; value defaults to 1",
           session={"ended": FLAG}),
)  # fmt: skip
BY_NAME: dict[str, Signal] = {s.name: s for s in SIGNALS}


@dataclass(frozen=True, slots=True)
class Column:
    """A view column: its aggregate over the events of `signals`."""

    name: str
    agg: Agg
    signals: tuple[str, ...]


def columns(view: str) -> list[Column]:
    """The columns of `view` ("call" or "session") fed by signals, in registry order."""
    found: dict[str, Column] = {}
    for s in SIGNALS:
        for col, agg in getattr(s, view).items():
            prev = found.get(col)
            if prev is not None and prev.agg != agg:
                raise ValueError(f"signal {s.name}: column {col} is {prev.agg} elsewhere")
            found[col] = Column(col, agg, (*prev.signals, s.name) if prev else (s.name,))
    return list(found.values())


def feeding(view: str, column: str) -> tuple[str, ...]:
    """The signals that feed a column of a view."""
    return next(c.signals for c in columns(view) if c.name == column)


# (aggregate over events, its value as the column, value when nothing matched or None)
_SQL: dict[Agg, tuple[str, str, str | None]] = {
    FLAG: ("countIf({match})", "toUInt8({x} > 0)", "0"),
    COUNT: ("countIf({match})", "toUInt64({x})", "0"),
    COUNT_VALUES: ("countIf({match} AND {v} IS NOT NULL)", "toUInt64({x})", "0"),
    AVG: ("avgIfOrNull({v}, {match})", "{x}", None),
    SUM: ("sumIf(ifNull({v}, 0), {match})", "toFloat64({x})", "0"),
    LABELS: ("arraySort(groupUniqArrayIf(toString({sv}), {match} AND {sv} != ''))", "{x}", None),
}


def in_list(names: tuple[str, ...]) -> str:
    return "(" + ", ".join(lit(n) for n in names) + ")"


def aggregate(c: Column, name: str = "n", value: str = "v", text: str = "sv") -> str:
    """The aggregate of a column over events whose name, value and string value are in the
    columns `name`, `value` and `text`."""
    match = f"{name} IN {in_list(c.signals)}"
    return _SQL[c.agg][0].format(match=match, v=value, sv=text)


def finish(c: Column, x: str, outer_join: bool = False) -> str:
    """The column's value from its aggregate `x`; `outer_join`: `x` is NULL (or the type's
    default) for a row without events."""
    _, out, default = _SQL[c.agg]
    if outer_join and default is not None:
        x = f"ifNull({x}, {default})"
    return out.format(x=x)
