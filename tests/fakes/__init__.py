"""Configurable fake LLM upstream HTTP servers for the gateway's tests.

``FakeUpstream`` runs a real aiohttp server on ``127.0.0.1`` (random port) in a background
thread with its own event loop, so both sync tests and tests running their own asyncio loop
can forward to it.  The wire formats follow the real APIs closely enough that the official
``openai`` and ``anthropic`` SDKs parse them when pointed at the fake directly::

    with FakeUpstream() as fake:
        fake.behaviour = Behaviour(chunk_delay=0.01, cached_tokens=4)
        client = openai.OpenAI(base_url=fake.url + "/v1", api_key="x")
        ...
        assert fake.requests[-1].json["model"] == "gpt-4o"

Routes
    POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses, GET /v1/models
    POST /openai/deployments/{deployment}/{chat/completions|completions|embeddings} (Azure)
    POST /v1/messages, /v1/messages/count_tokens (Anthropic)
    anything else: 200 ``{"echo": path}``

Deterministic token accounting (unless overridden by ``Behaviour.prompt_tokens`` /
``Behaviour.completion_tokens``):

* "items" = chat ``messages`` | completion prompts (a string counts 1, a list counts its
  length) | embedding inputs (same rule) | responses ``input`` (string = 1, list = length)
  plus 1 when ``instructions`` is set | anthropic ``messages`` plus 1 when ``system`` is set.
* OpenAI (chat, completions, responses):
  ``prompt_tokens = 10 * items + cached_tokens + cache_write_tokens`` (cached and
  cache-write tokens are *part* of the prompt, as OpenAI reports them), and
  ``completion_tokens = n_content_chunks + reasoning_tokens``;
  ``total_tokens = prompt_tokens + completion_tokens``.
* Embeddings: ``prompt_tokens = total_tokens = 10 * items``.
* Anthropic: ``input_tokens = 10 * items`` (uncached only, as Anthropic reports it),
  ``cache_read_input_tokens = cached_tokens``,
  ``cache_creation_input_tokens = cache_write_tokens``, ``output_tokens = n_content_chunks``.
* ``n_content_chunks`` = ``len(split_reply(reply_text, n_chunks))``: the reply split into
  ``n_chunks`` contiguous near-equal pieces (fewer if the text is shorter; 0 if empty).
  Non-stream answers use the same count.

Stream fault injection counts SSE events written (role chunk, ``ping`` etc. included;
``data: [DONE]`` not), see ``Behaviour.abort_after_chunks`` and
``Behaviour.stream_error_after_chunks``.
"""

from __future__ import annotations

from tests.fakes.base import Behaviour, RecordedRequest, split_reply
from tests.fakes.bedrock import BedrockRoutes
from tests.fakes.openai import OpenAIRoutes

__all__ = ["Behaviour", "FakeUpstream", "RecordedRequest", "split_reply"]


class FakeUpstream(OpenAIRoutes, BedrockRoutes):
    """A fake OpenAI / Azure OpenAI / Anthropic / Bedrock upstream on 127.0.0.1 in a thread."""
