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

    @classmethod
    def default_price_as(cls, base_url: str) -> str:
        if base_url.rstrip("/") == cls.default_base_url:
            return cls.price_as
        # An OpenAI-compatible host genai-prices knows (Groq, Together, ...) prices as itself.
        from genai_prices.data_snapshot import get_snapshot

        try:
            return get_snapshot().find_provider(None, None, base_url).id
        except LookupError:
            return ""
