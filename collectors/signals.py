"""The signal registry: every known end-user signal, what its value means, and the columns
of the views it feeds.

Adding a signal is one line in `SIGNALS`: the feedback API validates it by its data type
(and bounds), its OpenAPI description lists it, and the views `llm_call_feedback` and
`llm_sessions` (collectors/views/) get its columns the next time the store is migrated
(`llm-gateway migrate`, or any start of the gateway). Signals not listed here are accepted
too (custom names): they are stored in `llm_feedback` and counted in `events`.

What a value counts as is decided here and nowhere else: views, reports, experiment
metrics and drift all build their SQL from `counts_sql`, `value_sql` and `aggregate`.
- A boolean signal's value is 1 (true, a yes) or 0 (false, a no); sent without one it
  takes `BOOLEAN_DEFAULT` (a yes: "the user copied the answer" needs no value). A yes
  counts: `copy: false` is no copy, `suggestion_accepted: false` no acceptance, and an
  average (`thumbs`) is the share of yeses.
- A column may take a signal's events whatever their value (`Feed(agg, any_value=True)`):
  a suggestion accepted or declined (`suggestion_accepted: false`) was shown.
- A numeric signal's value is its figure (a rating, milliseconds); text and categorical
  signals carry theirs in `string_value`, and each of their events counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from collectors.sql import lit


class Agg(StrEnum):
    """How a view column sums up a call's (or a session's) events of its signals."""

    FLAG = "flag"  # UInt8: 1 when there is any counting event
    COUNT = "count"  # UInt64: the counting events
    COUNT_VALUES = "count_values"  # UInt64: the events that carry a value
    AVG = "avg"  # Nullable(Float64): the mean value, NULL without one
    SUM = "sum"  # Float64: the sum of the values (0 without one)
    LABELS = "labels"  # Array(String): the distinct string values, sorted


FLAG, COUNT, COUNT_VALUES = Agg.FLAG, Agg.COUNT, Agg.COUNT_VALUES
AVG, SUM, LABELS = Agg.AVG, Agg.SUM, Agg.LABELS

BOOLEAN_DEFAULT = 1.0  # a boolean signal sent without a value says yes


@dataclass(frozen=True, slots=True)
class Feed:
    """A column a signal feeds: the aggregate, and whether every event of the signal counts
    whatever its value (`any_value`), or only a boolean signal's yeses."""

    agg: Agg
    any_value: bool = False


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    data_type: str  # numeric | boolean | categorical | text
    meaning: str
    call: Mapping[str, Agg | Feed] = field(default_factory=dict)  # llm_call_feedback columns
    session: Mapping[str, Agg | Feed] = field(default_factory=dict)  # llm_sessions columns
    bounds: tuple[float, float] | None = None  # allowed values of a numeric signal

    @property
    def default(self) -> float | None:
        """The value of an event sent without one (None: a value is required, or none is
        read)."""
        return BOOLEAN_DEFAULT if self.data_type == "boolean" else None


INF = float("inf")
SHOWN = Feed(FLAG, any_value=True)  # accepted or declined, the suggestion was shown

# The order is the order of the views' columns.
SIGNALS: tuple[Signal, ...] = (
    Signal("suggestion_shown", "boolean", "the suggestion was shown (false: it was not)",
           {"shown": FLAG}),
    Signal("suggestion_accepted", "boolean",
           "true: the suggestion was accepted; false: shown and not accepted",
           {"shown": SHOWN, "accepted": FLAG}, {"accepted": COUNT}),
    Signal("suggestion_rejected", "boolean",
           "true: the suggestion was dismissed; false: shown and not dismissed",
           {"shown": SHOWN, "rejected": FLAG}),
    Signal("rating", "numeric", "a score, e.g. 1 to 5",
           {"rating": AVG, "ratings": COUNT_VALUES}, {"rating": AVG}),
    Signal("thumbs", "boolean", "true: thumbs up; false: thumbs down", {"thumbs": AVG}),
    Signal("copy", "boolean", "the answer was copied (false: it was not)", {"copies": COUNT}),
    Signal("share", "boolean", "the answer was shared (false: it was not)", {"shares": COUNT}),
    Signal("regenerate", "boolean", "the user asked for another answer (false: did not)",
           {"regenerations": COUNT}, {"regenerations": COUNT}),
    Signal("correction", "text", "the user's corrected text, in string_value",
           {"corrections": COUNT}),
    Signal("dwell", "numeric", "milliseconds the answer was visible", {"dwell_ms": SUM},
           bounds=(0.0, INF)),
    Signal("suggestion_retained", "numeric", "share of the accepted text still there later, 0..1",
           {"retained": AVG}, bounds=(0.0, 1.0)),
    Signal("defect", "categorical", "a category in string_value, e.g. hallucination",
           {"defects": LABELS}),
    Signal("session_end", "boolean", "the conversation ended (false: it goes on)",
           session={"ended": FLAG}),
)  # fmt: skip
BY_NAME: dict[str, Signal] = {s.name: s for s in SIGNALS}


@dataclass(frozen=True, slots=True)
class Column:
    """A view column: its aggregate over the events of `signals`; those in `any_value`
    count whatever their value."""

    name: str
    agg: Agg
    signals: tuple[str, ...]
    any_value: tuple[str, ...] = ()


def _signal(name: str) -> Signal:
    # looked up in SIGNALS as it is now (tests extend the registry)
    return next(s for s in SIGNALS if s.name == name)


def _feed(f: Agg | Feed) -> Feed:
    return f if isinstance(f, Feed) else Feed(f)


def columns(view: str) -> list[Column]:
    """The columns of `view` ("call" or "session") fed by signals, in registry order."""
    found: dict[str, Column] = {}
    for s in SIGNALS:
        for col, f in getattr(s, view).items():
            feed, prev = _feed(f), found.get(col)
            if prev is not None and prev.agg != feed.agg:
                raise ValueError(f"signal {s.name}: column {col} is {prev.agg} elsewhere")
            names = (*prev.signals, s.name) if prev else (s.name,)
            anyv = (*(prev.any_value if prev else ()), *((s.name,) if feed.any_value else ()))
            found[col] = Column(col, feed.agg, names, anyv)
    return list(found.values())


def column(view: str, name: str) -> Column:
    return next(c for c in columns(view) if c.name == name)


def feeding(view: str, column_name: str) -> tuple[str, ...]:
    """The signals that feed a column of a view."""
    return column(view, column_name).signals


def in_list(names: tuple[str, ...] | list[str]) -> str:
    return "(" + ", ".join(lit(n) for n in names) + ")"


def value_sql(names: tuple[str, ...], name: str = "n", value: str = "v") -> str:
    """The value of an event of one of `names` (columns `name`, `value`), its default
    filled in."""
    defaulted = [n for n in names if _signal(n).default is not None]
    if not defaulted:
        return value
    defaults = {_signal(n).default for n in defaulted}
    (d,) = defaults  # one default for every boolean signal
    if len(defaulted) == len(names):
        return f"ifNull({value}, {d!r})"
    return f"if({name} IN {in_list(tuple(defaulted))}, ifNull({value}, {d!r}), {value})"


def counts_sql(c: Column, name: str = "n", value: str = "v") -> str:
    """The events (columns `name`, `value`) that count for column `c`: a boolean signal's
    yeses, every event of the others and of the signals in `c.any_value`."""
    yes = [n for n in c.signals if _signal(n).data_type == "boolean" and n not in c.any_value]
    every = tuple(n for n in c.signals if n not in yes)
    parts = []
    if yes:
        is_yes = f"{value_sql(tuple(yes), name, value)} != 0"
        parts.append(f"({name} IN {in_list(tuple(yes))} AND {is_yes})")
    if every:
        parts.append(f"{name} IN {in_list(every)}")
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"


def says_yes(view: str, column_name: str, name: str = "name", value: str = "value") -> str:
    """SQL: an event (of llm_feedback's columns, by default) that counts for a column of a
    view; for queries that read the signals themselves (drift, experiments)."""
    return counts_sql(column(view, column_name), name, value)


# (aggregate over events, its value as the column, value when nothing matched or None)
_SQL: dict[Agg, tuple[str, str, str | None]] = {
    FLAG: ("countIf({match})", "toUInt8({x} > 0)", "0"),
    COUNT: ("countIf({match})", "toUInt64({x})", "0"),
    COUNT_VALUES: ("countIf({match} AND {v} IS NOT NULL)", "toUInt64({x})", "0"),
    AVG: ("avgIfOrNull({v}, {match})", "{x}", None),
    SUM: ("sumIf(ifNull({v}, 0), {match})", "toFloat64({x})", "0"),
    LABELS: ("arraySort(groupUniqArrayIf(toString({sv}), {match} AND {sv} != ''))", "{x}", None),
}


def aggregate(c: Column, name: str = "n", value: str = "v", text: str = "sv") -> str:
    """The aggregate of a column over events whose name, value and string value are in the
    columns `name`, `value` and `text`."""
    if c.agg in (FLAG, COUNT):
        match = counts_sql(c, name, value)
    else:
        match = f"{name} IN {in_list(c.signals)}"
    return _SQL[c.agg][0].format(match=match, v=value_sql(c.signals, name, value), sv=text)


def finish(c: Column, x: str, outer_join: bool = False) -> str:
    """The column's value from its aggregate `x`; `outer_join`: `x` is NULL (or the type's
    default) for a row without events."""
    _, out, default = _SQL[c.agg]
    if outer_join and default is not None:
        x = f"ifNull({x}, {default})"
    return out.format(x=x)
