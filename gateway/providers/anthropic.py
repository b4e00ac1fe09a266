"""Anthropic, native Messages API: `x-api-key` and `anthropic-version` headers."""

from __future__ import annotations

from gateway.providers.base import Headers, Provider, register


@register
class Anthropic(Provider):
    kind = "anthropic"
    genai_name = "anthropic"
    dialect = "anthropic"
    default_base_url = "https://api.anthropic.com"
    default_api_version = "2023-06-01"
    inject_stream_usage = False
    price_as = "anthropic"
    base_url_env = "ANTHROPIC_BASE_URL"
    api_key_env = "ANTHROPIC_API_KEY"
    zero_config = True
    default_models = "claude*"

    __slots__ = ()

    def target(self, path: str, query: str, model: str) -> str:
        rest = path[4:] if path.startswith("/v1/") else path.lstrip("/")
        url = f"{self.origin.prefix}/v1/{rest}"
        return f"{url}?{query}" if query else url

    def own_credentials(self, key: bytes) -> Headers:
        return [(b"x-api-key", key)]

    def client_credentials(self, authorization: bytes, api_key: bytes, x_api_key: bytes) -> Headers:
        if x_api_key:
            return [(b"x-api-key", x_api_key)]
        bearer = authorization[7:].strip() if authorization[:7].lower() == b"bearer " else b""
        if bearer:
            return [(b"x-api-key", bearer)]
        return []

    def version_header(self, client_value: bytes) -> Headers:
        return [(b"anthropic-version", client_value or (self.cfg.api_version or "").encode())]
