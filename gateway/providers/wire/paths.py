"""Client paths in other SDKs' shapes, mapped onto the wire API paths (`/v1/...`).

Azure OpenAI clients (`openai.AzureOpenAI`) call
`/openai/deployments/{deployment}/chat/completions?api-version=...` (the deployment names
the model) or the newer `/openai/v1/...`; both are served like the `/v1/...` call they
stand for, so routes, aliases and records apply unchanged.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import unquote

_AZURE = "/openai/"
_DEPLOYMENTS = "deployments/"


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
