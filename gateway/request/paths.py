"""The client's path, checked before it is routed: it must stay under the provider's base
URL, since the gateway may send its own credential with it."""

from __future__ import annotations

from urllib.parse import unquote

from gateway.errors import GatewayError

_SUSPECT = frozenset("%.\\")


def _escapes(path: str) -> bool:
    # Decoded as many times as anyone downstream might (bounded): `%252e%252e` is `..` to
    # an upstream that decodes twice.
    for _ in range(3):
        if "\\" in path or any(seg in (".", "..") for seg in path.split("/")):
            return True
        decoded = unquote(path)
        if decoded == path:
            return False
        path = decoded
    return True  # still encoded after three rounds: no client needs that


def checked_path(path: str) -> str:
    """`path` when it holds no dot segments, encoded ones (`%2e%2e`), encoded slashes or
    backslashes; otherwise a 400. Refused rather than normalised: a client that sends
    them is probing, and what it meant cannot be known."""
    if _SUSPECT.isdisjoint(path) or (not _escapes(path) and "%2f" not in path.lower()):
        return path
    raise GatewayError(
        400,
        "The request path may not contain dot segments, encoded slashes or backslashes.",
        "invalid_request_error",
        "invalid_path",
    )
