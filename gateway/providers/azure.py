"""Azure OpenAI: deployment URLs with `api-version`, and the `api-key` header."""

from __future__ import annotations

from urllib.parse import quote

from gateway.providers.base import Headers, Provider, register

# Azure serves these per deployment: /openai/deployments/{deployment}/{rest}
_DEPLOYMENT_PATHS = frozenset(
    {
        "chat/completions",
        "completions",
        "embeddings",
        "audio/transcriptions",
        "audio/translations",
        "audio/speech",
        "images/generations",
    }
)


@register
class Azure(Provider):
    kind = "azure"
    genai_name = "azure.ai.openai"
    default_api_version = "2024-10-21"
    price_as = "azure"

    __slots__ = ()

    def target(self, path: str, query: str, model: str) -> str:
        cfg = self.cfg
        rest = path[4:] if path.startswith("/v1/") else path.lstrip("/")
        if rest in _DEPLOYMENT_PATHS:
            deployment = cfg.deployments.get(model, model)
            url = f"{self.origin.prefix}/openai/deployments/{quote(deployment, safe='')}/{rest}"
        elif rest == "responses" or rest.startswith("responses/"):
            url = f"{self.origin.prefix}/openai/v1/{rest}"
        else:
            url = f"{self.origin.prefix}/openai/{rest}"
        sep = "&" if query else ""
        return f"{url}?{query}{sep}api-version={cfg.api_version}"

    def own_credentials(self, key: bytes) -> Headers:
        return [(b"api-key", key)]

    def client_credentials(self, authorization: bytes, api_key: bytes, x_api_key: bytes) -> Headers:
        if api_key:
            return [(b"api-key", api_key)]
        if authorization:
            return [(b"authorization", authorization)]
        return []
