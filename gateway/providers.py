"""Provider kinds: where a call goes upstream and with which credential.

`openai` covers OpenAI and every OpenAI-compatible server; `azure` rewrites to deployment
URLs with `api-version` and the `api-key` header; `anthropic` speaks the native Messages
API with `x-api-key` and `anthropic-version`.
"""

from __future__ import annotations

from urllib.parse import quote

from gateway.config import ProviderConfig

# Azure serves these per deployment: /openai/deployments/{deployment}/{rest}
_AZURE_DEPLOYMENT_PATHS = frozenset(
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


class MissingCredentials(Exception):
    pass


class Provider:
    """Builds upstream URLs and auth headers for one configured provider."""

    __slots__ = ("_extra", "auth_headers", "cfg", "kind", "name")

    def __init__(self, cfg: ProviderConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.kind = cfg.kind
        extra = [(k.lower().encode(), v.encode()) for k, v in cfg.headers.items()]
        self._extra = extra
        key = (cfg.api_key or "").encode()
        if cfg.auth == "gateway":
            if cfg.kind == "azure":
                own = [(b"api-key", key)]
            elif cfg.kind == "anthropic":
                own = [(b"x-api-key", key)]
            else:
                own = [(b"authorization", b"Bearer " + key)]
            self.auth_headers: list[tuple[bytes, bytes]] | None = own + extra
        else:
            self.auth_headers = None  # taken from the client per request

    def url(self, path: str, query: str, model: str) -> str:
        """Upstream URL for a client path such as `/v1/chat/completions`."""
        cfg = self.cfg
        rest = path[4:] if path.startswith("/v1/") else path.lstrip("/")
        if self.kind == "azure":
            if rest in _AZURE_DEPLOYMENT_PATHS:
                deployment = cfg.deployments.get(model, model)
                url = f"{cfg.base_url}/openai/deployments/{quote(deployment, safe='')}/{rest}"
            elif rest == "responses" or rest.startswith("responses/"):
                url = f"{cfg.base_url}/openai/v1/{rest}"
            else:
                url = f"{cfg.base_url}/openai/{rest}"
            sep = "&" if query else ""
            return f"{url}?{query}{sep}api-version={cfg.api_version}"
        url = f"{cfg.base_url}/v1/{rest}" if self.kind == "anthropic" else f"{cfg.base_url}/{rest}"
        return f"{url}?{query}" if query else url

    def credentials(
        self, authorization: bytes, api_key: bytes, x_api_key: bytes
    ) -> list[tuple[bytes, bytes]]:
        """Headers that authenticate upstream; raises MissingCredentials when there are none."""
        if self.auth_headers is not None:
            return self.auth_headers
        bearer = authorization[7:].strip() if authorization[:7].lower() == b"bearer " else b""
        if self.kind == "azure":
            if api_key:
                return [(b"api-key", api_key), *self._extra]
            if authorization:
                return [(b"authorization", authorization), *self._extra]
        elif self.kind == "anthropic":
            if x_api_key:
                return [(b"x-api-key", x_api_key), *self._extra]
            if bearer:
                return [(b"x-api-key", bearer), *self._extra]
        elif bearer or authorization:
            return [(b"authorization", authorization), *self._extra]
        raise MissingCredentials(
            f"no credentials for provider {self.name!r}: the gateway has no key for it and the "
            "request carried none"
        )

    def version_header(self, client_value: bytes) -> list[tuple[bytes, bytes]]:
        if self.kind == "anthropic":
            return [(b"anthropic-version", client_value or (self.cfg.api_version or "").encode())]
        return []
