"""The `feedback:` section: who may send end-user signals, and how much at once."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta
from msgspec.structs import force_setattr

from gateway.sections import FieldError, Positive, Section


class FeedbackKey(Section, frozen=True):
    key: Annotated[str, Meta(min_length=8)]  # the secret senders present
    kind: Literal["server", "publishable"]
    origins: tuple[str, ...] = ()  # publishable: browser origins allowed (CORS)
    rate_per_minute: Positive = 600  # publishable: per key and client IP
    app: str = ""  # when set, events sent with this key belong to this app

    def __post_init__(self) -> None:
        for o in self.origins:
            if o != "*" and not o.startswith(("http://", "https://")):
                raise FieldError("origins", "must be a list of origins like https://app.example")
        if self.kind == "publishable" and not self.origins:
            raise FieldError("origins", "a publishable key needs origins")
        force_setattr(self, "origins", tuple(o.rstrip("/") for o in self.origins))


class FeedbackConfig(Section, frozen=True):
    keys: tuple[FeedbackKey, ...] = ()  # none: server-side senders need no key
    max_batch: Positive = 500
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 1024 * 1024
    session_idle_minutes: Positive = 30  # a session quiet this long, not ended, is abandoned
