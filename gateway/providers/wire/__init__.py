"""Wire APIs, one module each, looked up by the path the client called."""

from __future__ import annotations

from gateway.providers.wire.base import Observer, PassObserver, WireAPI
from gateway.providers.wire.chat import CHAT, COMPLETIONS, ChatObserver
from gateway.providers.wire.embeddings import EMBEDDINGS, EmbeddingsObserver
from gateway.providers.wire.messages import MESSAGES, AnthropicObserver
from gateway.providers.wire.responses import RESPONSES, ResponsesObserver

WIRE_APIS: dict[str, WireAPI] = {
    w.path: w for w in (CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES, MESSAGES)
}
MODELS = WireAPI("/v1/models", "models", PassObserver, needs_model=False)
OTHER = WireAPI("", "other", PassObserver, needs_model=False)


def wire_api_for(method: str, path: str) -> WireAPI:
    """The wire API of a call: by path for POSTs; the models list; else `OTHER`."""
    wire = WIRE_APIS.get(path) if method == "POST" else None
    if wire is None:
        wire = MODELS if path.startswith("/v1/models") else OTHER
    return wire


__all__ = [
    "MODELS",
    "OTHER",
    "WIRE_APIS",
    "AnthropicObserver",
    "ChatObserver",
    "EmbeddingsObserver",
    "Observer",
    "PassObserver",
    "ResponsesObserver",
    "WireAPI",
    "wire_api_for",
]
