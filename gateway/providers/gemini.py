"""Google Gemini through its OpenAI-compatible endpoint (chat, embeddings, streams with
usage): the Gemini API key as a bearer token, priced by genai-prices as `google`.

Not a zero-config default: configure it, e.g. `kind: gemini` with
`api_key: ${GEMINI_API_KEY}`, and route `gemini*` to it.
"""

from __future__ import annotations

from gateway.providers.base import register
from gateway.providers.openai import OpenAI


@register
class Gemini(OpenAI):
    kind = "gemini"
    genai_name = "gcp.gemini"
    default_base_url = "https://generativelanguage.googleapis.com/v1beta/openai"
    price_as = "google"
    base_url_env = "GEMINI_BASE_URL"
    api_key_env = "GEMINI_API_KEY"
    zero_config = False
    default_models = "gemini*"

    __slots__ = ()

    @classmethod
    def default_price_as(cls, base_url: str) -> str:
        return cls.price_as
