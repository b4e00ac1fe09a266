"""The cache key: what determines an answer, in a canonical form.

A key is a digest of:
- the scope: one gateway key, one app, or everyone (`global`); and, for a provider that
  takes the caller's own credential (`auth: passthrough`), that credential, so that an
  answer never reaches a caller the upstream would have refused;
- the provider, the API called there and the model sent there (after aliases, routes and
  experiments);
- the query string, and the request headers that change an answer (`ANSWER_HEADERS`);
- the request body as the upstream gets it (translated, for a call between dialects: an
  OpenAI client and an Anthropic client asking a Claude model the same thing share the
  answer), in a canonical form: keys sorted, whitespace gone, top-level whole numbers
  written one way (`0.0` is `0`), and without the fields that do not change the answer
  (`IGNORED`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

VERSION = b"v1"  # bumped when the stored form or the key's parts change

# Top-level request fields that do not change the answer: who asks (`user`, `metadata`,
# `safety_identifier`, Bedrock's `requestMetadata`), how it is delivered (`stream`,
# `stream_options`) and the upstream's own prompt-cache routing hint (`prompt_cache_key`).
IGNORED = frozenset(
    {"user", "metadata", "safety_identifier", "requestMetadata", "stream", "stream_options",
     "prompt_cache_key"}
)  # fmt: skip
# Request headers sent upstream that select a version or a beta feature.
ANSWER_HEADERS = frozenset({b"anthropic-version", b"anthropic-beta", b"openai-beta"})

_sorted = msgspec.json.Encoder(order="sorted").encode
_WHOLE = float(2**53)


def _number(value: Any) -> Any:
    if type(value) is float and value.is_integer() and abs(value) < _WHOLE:
        return int(value)
    return value


def _text_blocks(messages: Any) -> Any:
    if not isinstance(messages, list):
        return messages
    return [
        {**m, "content": [{"type": "text", "text": m["content"]}]}
        if isinstance(m, dict) and isinstance(m.get("content"), str) and m["content"]
        else m
        for m in messages
    ]


def canonical(payload: dict[str, Any], dialect: str) -> bytes:
    """The request body, in `dialect` (the upstream's), in its canonical form (the model is
    part of it, as sent upstream)."""
    body = {k: _number(v) for k, v in payload.items() if k not in IGNORED}
    if dialect == "anthropic" and "messages" in body:
        body["messages"] = _text_blocks(body["messages"])
    return _sorted(body)


def sampled(operation: str, payload: dict[str, Any]) -> bool:
    """Whether the answer is drawn at random: a temperature above 0, or none given (the
    chat APIs default to 1). Embeddings are never sampled."""
    if operation == "embeddings":
        return False
    t = payload.get("temperature")
    if t is None:
        return True
    return isinstance(t, bool) or not isinstance(t, int | float) or t > 0


def digest(*parts: bytes) -> str:
    """A key from its parts (each length-prefixed: no two lists of parts share a key)."""
    h = hashlib.blake2b(VERSION, digest_size=20)
    for p in parts:
        h.update(len(p).to_bytes(4, "big"))
        h.update(p)
    return h.hexdigest()
