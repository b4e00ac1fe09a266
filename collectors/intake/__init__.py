"""Signal intake: `POST /v1/feedback` (api.py), who may send (access.py), what an event is
and how it is validated (events.py), its OpenAPI description (openapi.py)."""

from __future__ import annotations

from collectors.intake.api import feedback_handlers
from collectors.intake.events import FeedbackEvent, Invalid, validate

__all__ = ["FeedbackEvent", "Invalid", "feedback_handlers", "validate"]
