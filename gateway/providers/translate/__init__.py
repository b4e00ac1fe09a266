"""Translation between wire dialects, for a call whose client speaks one API and whose
upstream speaks another (the OpenAI SDK calling a Claude model, and the reverse).

A `Translation` turns the client's request into the upstream's, and the upstream's answer
(whole body, error body, or stream events) back into the client's. The record is read
from the upstream's own answer by the upstream dialect's observer, so usage, finish reason
and ids are the upstream's, as for any other call. What the target API cannot carry is a
400 naming the parameter, unless the provider's `drop_params` lists it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from gateway.providers.base import Provider, ProviderConfig
from gateway.providers.wire import Observer, WireAPI
from gateway.providers.wire.sse import SSEEvent
from gateway.recording.record import UsageSource


class Splitter(Protocol):
    """Splits an upstream stream into events: SSE (`wire.sse`) or the AWS event stream."""

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]: ...

    def flush(self) -> SSEEvent | None: ...


class StreamTranslator(Protocol):
    def event(self, event: str, data: bytes) -> bytes:
        """One upstream SSE event (already split) as the client's SSE bytes ("" for none)."""
        ...


class Translation(Protocol):
    client_api: str  # the client's dialect: openai | anthropic
    upstream_api: str  # the upstream's dialect
    observer: type[Observer]  # reads the upstream's answer into the record

    def path(self, stream: bool) -> str:
        """The path called upstream, e.g. /v1/messages."""
        ...

    def splitter(self) -> Splitter:
        """Splits the upstream's stream into events."""
        ...

    def request(self, payload: dict[str, Any], model: str, cfg: ProviderConfig) -> bytes:
        """The upstream's request body; raises a 400 ApiError for what cannot be carried."""
        ...

    def response(
        self, obj: dict[str, Any], payload: dict[str, Any], usage: UsageSource | None = None
    ) -> dict[str, Any]:
        """A whole (non-streamed) answer in the client's shape; `usage`: the observer that
        read it, as for `stream`."""
        ...

    def error(self, obj: Any, status: int) -> dict[str, Any]:
        """An error answer in the client's shape."""
        ...

    def stream(self, payload: dict[str, Any], usage: UsageSource | None = None) -> StreamTranslator:
        """A translator for one streamed answer to this request; `usage` is the observer
        reading the upstream's stream (what the gateway records of it), for a client
        dialect that reports usage the upstream may not have sent."""
        ...


from gateway.providers.translate.chat_to_converse import CHAT_TO_CONVERSE  # noqa: E402
from gateway.providers.translate.chat_to_messages import CHAT_TO_MESSAGES  # noqa: E402
from gateway.providers.translate.messages_to_chat import MESSAGES_TO_CHAT  # noqa: E402

# (client wire path, upstream dialect) -> translation
TRANSLATIONS: dict[tuple[str, str], Translation] = {
    ("/v1/chat/completions", "anthropic"): CHAT_TO_MESSAGES,
    ("/v1/messages", "openai"): MESSAGES_TO_CHAT,
    ("/v1/chat/completions", "bedrock"): CHAT_TO_CONVERSE,
}


def translation_for(wire: WireAPI, provider: Provider) -> Translation | None:
    """The translation a call of `wire` needs to reach `provider`; None: same dialect."""
    return TRANSLATIONS.get((wire.path, provider.dialect))


__all__ = ["StreamTranslator", "Translation", "translation_for"]
