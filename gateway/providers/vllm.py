"""vLLM's OpenAI-compatible server (`vllm serve`): local by default, no key needed.

It reports usage in streams when asked (`stream_options.include_usage`), so the gateway
asks; its models are the operator's own, so no public price list applies (prices come
from the `prices` section of the config).
"""

from __future__ import annotations

from gateway.providers.base import register
from gateway.providers.openai import OpenAI


@register
class VLLM(OpenAI):
    kind = "vllm"
    genai_name = "vllm"
    default_base_url = "http://localhost:8000/v1"
    price_as = ""
    needs_key = False
    base_url_env = api_key_env = ""
    zero_config = False

    __slots__ = ()

    @classmethod
    def default_price_as(cls, base_url: str) -> str:
        return ""
