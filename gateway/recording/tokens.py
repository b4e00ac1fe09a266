"""Token estimates for upstreams that report no usage (rows are marked `usage_estimated`).

A character-based estimate (about four characters a token for English text, the rule of
thumb OpenAI documents) keeps the gateway free of tokenizer downloads; it is an estimate
and the column says so.
"""

from __future__ import annotations

from typing import Any

CHARS_PER_TOKEN = 4


def from_chars(n: int) -> int:
    return (n + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN if n > 0 else 0


def _text_chars(value: Any, depth: int = 0) -> int:
    """Characters of text in a content value: a string, or a list of parts (nested a few
    levels at most: the body is the client's and may nest a thousand deep)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list) and depth < 4:
        n = 0
        for part in value:
            if isinstance(part, str):
                n += len(part)
            elif isinstance(part, dict):
                n += _text_chars(part.get("text"), depth + 1)
                n += _text_chars(part.get("content"), depth + 1)
        return n
    return 0


def estimate_input(payload: Any) -> int:
    """Estimated input tokens of a chat, completions, embeddings, responses or messages body."""
    if not isinstance(payload, dict):
        return 0
    chars = 0
    tokens = 0
    messages = payload.get("messages")
    for msg in messages if isinstance(messages, list) else ():  # a client's body: any shape
        if isinstance(msg, dict):
            content = msg.get("content")
            chars += len(content) if type(content) is str else _text_chars(content)
            tokens += 4  # per-message framing (role, separators)
    for key in ("system", "instructions"):
        if (value := payload.get(key)) is not None:
            chars += _text_chars(value)
    for key in ("prompt", "input"):
        value = payload.get(key)
        if value is None:
            continue
        if isinstance(value, list) and value and isinstance(value[0], int):
            tokens += len(value)  # already tokens
        elif isinstance(value, list) and value and isinstance(value[0], list):
            tokens += sum(len(v) for v in value if isinstance(v, list))
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    chars += _text_chars(item.get("content")) + _text_chars(item.get("text"))
                else:
                    chars += _text_chars(item)
        else:
            chars += _text_chars(value)
    return tokens + from_chars(chars)
