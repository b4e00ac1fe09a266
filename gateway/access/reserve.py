"""What a call reserves of its key's limits before it is forwarded: its input tokens as
estimated from the body (`recording/tokens.py`) plus the output it may produce, at the
call's prices. TPM buckets take the tokens; a budget holds the cost until the call settles
(`limiter.py`), when the reported usage replaces both.

The output a call may produce is its own `max_tokens` (`max_completion_tokens`,
`max_output_tokens`) when it names one, else `auth.reserve.output_tokens` (or the model's
entry in `auth.reserve.models`). Embeddings produce none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.access.policy import ModelRule
from gateway.recording.tokens import estimate_input
from gateway.sections import Count, Section

_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# A client's `max_tokens` of a billion reserves at most this many (the reservation is
# settled to the real usage anyway; this keeps float sums sane).
_MAX_RESERVED = 10_000_000
_CACHE_LIMIT = 4096


class ReserveConfig(Section, frozen=True):
    """The `auth.reserve` section."""

    output_tokens: Count = 1024  # reserved for a call that names no max_tokens
    models: dict[str, Count] = {}  # the same per model (exact name or glob, after aliases)


class Reserver:
    def __init__(self, cfg: ReserveConfig) -> None:
        self.default = cfg.output_tokens
        self._rules = [(ModelRule((pattern,)), n) for pattern, n in cfg.models.items()]
        self._by_model: dict[str, int] = {}

    def _model_default(self, model: str) -> int:
        n = self._by_model.get(model)
        if n is None:
            n = next((n for rule, n in self._rules if rule.allows(model)), self.default)
            if len(self._by_model) >= _CACHE_LIMIT:  # model names come from clients
                self._by_model.clear()
            self._by_model[model] = n
        return n

    def tokens(
        self,
        payload: dict[str, Any] | None,
        model: str,
        operation: str,
        input_tokens: Callable[[], int] | None = None,
    ) -> tuple[int, int]:
        """(input, output) tokens the call reserves; `input_tokens`: the payload's input
        estimate where one is kept (else made here)."""
        if payload is None:
            return 0, 0
        est_in = input_tokens() if input_tokens is not None else estimate_input(payload)
        if operation == "embeddings":
            return est_in, 0
        for name in _LIMIT_FIELDS:
            value = payload.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return est_in, min(value, _MAX_RESERVED)
        return est_in, self._model_default(model)
