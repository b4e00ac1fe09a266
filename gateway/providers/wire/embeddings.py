"""OpenAI embeddings: usage has `prompt_tokens` (and `total_tokens`) only."""

from __future__ import annotations

from typing import Any

from gateway.providers.wire.base import Observer, WireAPI, as_int, as_str


class EmbeddingsObserver(Observer):
    __slots__ = ()

    def body(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        self.rec.response_model = as_str(obj.get("model"))
        u = obj.get("usage")
        if isinstance(u, dict):
            self.usage_seen = True
            self.rec.input_tokens = as_int(u.get("prompt_tokens"))


EMBEDDINGS = WireAPI("/v1/embeddings", "embeddings", EmbeddingsObserver)
