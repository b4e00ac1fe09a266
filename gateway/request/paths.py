"""The client's path: mapped from other SDKs' shapes onto the wire API paths (`/v1/...`),
and checked before it is routed.

Azure OpenAI clients (`openai.AzureOpenAI`) call
`/openai/deployments/{deployment}/chat/completions?api-version=...` (the deployment names
the model) or the newer `/openai/v1/...`; both are served like the `/v1/...` call they
stand for, so routes, aliases and records apply unchanged.

A path must stay under the provider's base URL, since the gateway may send its own
credential with it: dot segments, encoded ones and backslashes are refused.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import unquote

from gateway.errors import ApiError

_AZURE = "/openai/"
_DEPLOYMENTS = "deployments/"
_SUSPECT = frozenset("%.\\")


class ClientPath(NamedTuple):
    path: str  # the wire API path: /v1/chat/completions, ...
    deployment: str = ""  # Azure: the deployment named in the path (it is the model)
    azure: bool = False  # an Azure client path: its `api-version` is the client's own


def client_path(path: str) -> ClientPath:
    if not path.startswith(_AZURE):
        return ClientPath(path)
    rest = path[len(_AZURE) :]
    if rest.startswith("v1/"):
        return ClientPath("/" + rest, "", True)
    if rest.startswith(_DEPLOYMENTS):
        deployment, _, tail = rest[len(_DEPLOYMENTS) :].partition("/")
        if deployment and tail:
            return ClientPath("/v1/" + tail, unquote(deployment), True)
    return ClientPath(path, "", True)


def without_api_version(query: str) -> str:
    """The query minus the Azure client's `api-version` (each provider sets its own)."""
    if "api-version" not in query:
        return query
    return "&".join(p for p in query.split("&") if p.split("=", 1)[0] != "api-version")


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
    raise ApiError(
        400,
        "The request path may not contain dot segments, encoded slashes or backslashes.",
        "invalid_request_error",
        "invalid_path",
    )
