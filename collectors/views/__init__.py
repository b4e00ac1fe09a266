"""The views over `llm_calls` and `llm_feedback`, rendered from the signal registry
(collectors/signals.py).

`views(db, session_idle_minutes)` gives each view's name and SELECT; the app and the CLI hand
it to the store's migration step (gateway/store/migrate.py), which creates or replaces a view
whenever its text changed, after the numbered migrations. A new signal thus needs no
migration of its own: a line in the registry, then `llm-gateway migrate` (or any start of the
gateway).

Both views are joined when queried: a signal that arrived before its call's row is linked
as soon as the row exists. Each side is read in its own subquery and the join is done on
the results: on a cluster each subquery reads its Distributed table, with no
double-distributed JOIN. Calls are read with FINAL (a replayed call counts once), signals
one row per `event_id` (a re-sent or replayed event counts once, see `events.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from collectors.intake.config import FeedbackConfig
from collectors.views.call_feedback import call_feedback_sql
from collectors.views.experiment_variants import experiment_variants_sql
from collectors.views.sessions import sessions_sql


@dataclass(frozen=True, slots=True)
class View:
    name: str
    select: str


def views(db: str, session_idle_minutes: int = FeedbackConfig().session_idle_minutes) -> list[View]:
    return [
        View("llm_call_feedback", call_feedback_sql(db)),
        View("llm_sessions", sessions_sql(db, session_idle_minutes)),
        View("llm_experiment_variants", experiment_variants_sql(db)),
    ]


__all__ = ["View", "views"]
