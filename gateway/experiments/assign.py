"""Which variant a call gets: deterministic, sticky, cheap.

The scheme is weighted rendezvous hashing. For a unit (a user, a session or a request id)
each variant scores `weight / -ln(h)`, where `h` in (0, 1) is BLAKE2b of
(experiment, variant, unit id); the highest score wins. Hence:
- the same unit gets the same variant in every process, replica and restart (BLAKE2b,
  not Python's salted `hash()`), and each variant gets its weight's share of the units;
- changing weights moves units only towards the change: raising one variant's weight
  moves units into it and nowhere else, lowering one moves units out of it and nowhere
  else, and each such step moves the fewest units possible (its change in share; with
  two variants, 50/50 -> 60/40 moves exactly 10% of the units, all from B to A). A new
  variant takes its share from the others; nobody moves between the old ones. Changing
  several weights at once moves no unit that making the changes one by one would not.
  A unit that was moved shows up under two variants; the analysis leaves such units out.

Calls without the unit's id are left out of the experiment (`missing_unit: exclude`) or
assigned by their request id (`per-request`).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from gateway.experiments.spec import Experiment, Variant
from gateway.recording.record import CallRecord

_TWO64 = float(2**64)
# Calls sent to a declared winner (auto_route_winner) carry this property = the winner;
# the analysis leaves them out: they were not randomised.
ROUTED_PROPERTY = "experiment_routed"


class Assignment(NamedTuple):
    experiment: str
    variant: Variant
    routed: bool = False  # every unit sent to the declared winner (auto_route_winner)


# Which id a call is assigned by: an experiment's `unit`.
_BY_USER, _BY_SESSION, _BY_REQUEST = 0, 1, 2


class _Compiled:
    __slots__ = (
        "equal", "model", "name", "per_request", "props", "start", "stop", "table", "unit",
    )  # fmt: skip

    def __init__(self, exp: Experiment) -> None:
        self.name = exp.name
        self.model = exp.match.model
        self.props = tuple(exp.match.properties.items())
        self.start = exp.start.timestamp() if exp.start else -math.inf
        self.stop = exp.stop.timestamp() if exp.stop else math.inf
        self.unit = {"user": _BY_USER, "session": _BY_SESSION}.get(exp.unit, _BY_REQUEST)
        self.per_request = exp.missing_unit == "per-request"  # a call without the unit's id
        # (BLAKE2b of (experiment, variant): copied, not hashed again, for each unit; weight)
        self.table = tuple(
            (hashlib.blake2b(f"{exp.name}\x00{v.name}\x00".encode(), digest_size=8), v.weight, v)
            for v in exp.variants
        )
        # Equal weights: the highest score is the highest hash (see variant()). Only where
        # every score is a plain float: a weight too large (or infinite) or too small makes
        # scores overflow or underflow into ties, which the first variant wins.
        weights = {v.weight for v in exp.variants}
        self.equal = len(weights) == 1 and 1e-250 < next(iter(weights)) < 1e250

    def variant(self, unit: str) -> Variant:
        """The highest score `weight / -ln(h)` wins, `h` in (0, 1) the unit's BLAKE2b (8
        bytes) under the variant's prefix."""
        b = unit.encode()
        # Equal weights: the score rises with `h`, so the largest digest wins, compared as
        # bytes (equal lengths, big-endian: as the integers compare), without a logarithm
        # per variant. The first of equal digests wins, as the first of equal scores does.
        # (Where the float scores break down, hashes within about 2**-52 of each other or
        # of 2**64, a chance near 2**-50 per unit, the float path keeps the first variant
        # or passes over the highest hash; the bytes still pick the highest.)
        equal, log = self.equal, math.log
        best, top = self.table[0][2], b"" if equal else -1.0
        for prefix, weight, v in self.table:
            h = prefix.copy()
            h.update(b)
            d = h.digest()
            s = d if equal else weight / -log((int.from_bytes(d, "big") + 0.5) / _TWO64)
            if s > top:  # type: ignore[operator]  # bytes with bytes, float with float
                best, top = v, s
        return best


class Assigner:
    """The request path's view of the experiments: `assign()` per call, in microseconds.
    The first active experiment whose match fits a call takes it (one per call)."""

    def __init__(self, experiments: Iterable[Experiment]) -> None:
        by_app: dict[str | None, list[_Compiled]] = {}
        self._winners: dict[str, Variant] = {}
        self.experiments = tuple(experiments)
        for exp in self.experiments:
            by_app.setdefault(exp.match.app, []).append(_Compiled(exp))
        # The candidates of a call, in the order they take it: its app's experiments, then
        # those of any app (the latter alone for an app no experiment names).
        self._any_app = tuple(by_app.pop(None, ()))
        self._by_app = {app: (*cs, *self._any_app) for app, cs in by_app.items()}
        self._timed = any(e.start is not None or e.stop is not None for e in self.experiments)

    def __bool__(self) -> bool:
        return bool(self.experiments)

    def route_to_winner(self, experiment: str, variant: str) -> bool:
        """Send every unit of `experiment` to `variant` from now on (auto_route_winner);
        False when the experiment does not allow it or has no such variant."""
        for exp in self.experiments:
            if exp.name == experiment and exp.auto_route_winner:
                for v in exp.variants:
                    if v.name == variant:
                        self._winners[experiment] = v
                        return True
        return False

    def winners(self) -> dict[str, str]:
        return {e: v.name for e, v in self._winners.items()}

    def assign(
        self,
        *,
        app: str,
        model: str,
        properties: Mapping[str, str],
        user: str,
        session: str,
        request_id: str,
        now: float | None = None,
    ) -> Assignment | None:
        a = self._assign(app, model, properties, user, session, request_id, now)
        return None if a is None else Assignment(*a)

    def _assign(
        self, app: str, model: str, properties: Mapping[str, str], user: str, session: str,
        request_id: str, now: float | None,
    ) -> tuple[str, Variant, bool] | None:  # fmt: skip
        # An Assignment's fields as a plain tuple: a NamedTuple costs a call per call.
        # Called on every call: the clock is read only when an experiment has a window.
        t = (time.time() if now is None else now) if self._timed else 0.0
        for c in self._by_app.get(app, self._any_app):
            if not c.start <= t < c.stop:
                continue
            if c.model is not None and model != c.model:
                continue
            if c.props and not all(properties.get(k) == v for k, v in c.props):
                continue
            winner = self._winners.get(c.name)
            if winner is not None:
                return c.name, winner, True
            unit = request_id if c.unit == _BY_REQUEST else user if c.unit == _BY_USER else session
            if not unit:
                if not (c.per_request and request_id):
                    return None  # excluded: no unit id, and the experiment wants one
                unit = request_id
            return c.name, c.variant(unit), False
        return None

    def apply(self, rec: CallRecord, model: str) -> str:
        """Assign the call, if an experiment takes it: the record gets the experiment, the
        variant and the variant's properties. Returns the model to route."""
        a = self._assign(rec.app, model, rec.properties, rec.end_user, rec.session_id,
                         rec.request_id, None)  # fmt: skip
        if a is None:
            return model
        rec.experiment, v, routed = a
        rec.variant = v.name
        if v.properties or routed:
            rec.properties = {**rec.properties, **v.properties}
            if routed:
                rec.properties[ROUTED_PROPERTY] = v.name
        return v.model or model
