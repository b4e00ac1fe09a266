"""OpenAI, and every OpenAI-compatible server given its base URL."""

from __future__ import annotations

from gateway.providers.base import Provider, register


@register
class OpenAI(Provider):
    kind = "openai"
    genai_name = "openai"
    default_base_url = "https://api.openai.com/v1"
    price_as = "openai"
    base_url_env = "OPENAI_BASE_URL"
    api_key_env = "OPENAI_API_KEY"
    zero_config = True

    __slots__ = ()
