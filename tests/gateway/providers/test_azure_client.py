"""Azure OpenAI clients unchanged against the gateway: `openai.AzureOpenAI` with the
gateway as its endpoint, its deployment paths and `api-key` header, routed and recorded
like any other call."""

from __future__ import annotations

import uuid

import openai

from tests.conftest import GatewayProcess


def _client(gateway: GatewayProcess, rid: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=gateway.url,
        api_version="2024-10-21",
        api_key="az-client-key",
        default_headers={"X-Request-Id": rid},
        max_retries=0,
    )


def test_azure_client_chat_plain(gateway: GatewayProcess, fake):
    rid = uuid.uuid4().hex
    out = _client(gateway, rid).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    sent = fake.last_request
    # Routed by the deployment name (gpt-* → the openai provider), its own key and path.
    assert sent.path == "/v1/chat/completions"
    assert "api-version" not in sent.query
    assert sent.headers["authorization"] == "Bearer sk-gw-secret-1"
    assert "api-key" not in sent.headers
    assert sent.json["model"] == "gpt-4o-mini"
    assert out.choices[0].message.content == "Hello from the fake upstream!"
    assert out.model == "gpt-4o-mini-2024-08-06"
    row = gateway.call_row(rid)
    assert row["endpoint"] == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert row["operation"] == "chat" and row["provider"] == "openai"
    assert row["request_model"] == "gpt-4o-mini" and row["status_code"] == 200
    assert row["input_tokens"] == out.usage.prompt_tokens
    assert row["output_tokens"] == out.usage.completion_tokens
    assert row["cost_usd"] > 0 and row["latency_ms"] > 0


def test_azure_client_stream_through_alias_to_azure(gateway: GatewayProcess, fake):
    rid = uuid.uuid4().hex
    stream = _client(gateway, rid).chat.completions.create(
        model="gpt-4o-azure", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from the fake upstream!"
    sent = fake.last_request
    # To the azure provider: its own deployment map, api-version and key.
    assert sent.deployment == "my-deploy"
    assert sent.query["api-version"] == "2024-10-21"
    assert sent.headers["api-key"] == "az-secret-2"
    row = gateway.call_row(rid)
    assert row["provider"] == "azure" and row["stream"] is True
    assert row["output_tokens"] > 0 and row["ttft_ms"] is not None


def test_azure_client_embeddings_and_v1_path(gateway: GatewayProcess, fake):
    rid = uuid.uuid4().hex
    out = _client(gateway, rid).embeddings.create(model="text-embedding-3-small", input="x")
    assert len(out.data[0].embedding) == 8
    assert fake.last_request.path == "/v1/embeddings"
    row = gateway.call_row(rid)
    assert row["operation"] == "embeddings" and row["input_tokens"] == out.usage.prompt_tokens
    # The newer v1 path: the OpenAI client with base_url .../openai/v1 and an api-key header.
    rid = uuid.uuid4().hex
    v1 = openai.OpenAI(
        base_url=gateway.url + "/openai/v1",
        api_key="unused",
        default_headers={"X-Request-Id": rid},
        default_query={"api-version": "preview"},
    )
    out2 = v1.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    assert out2.choices[0].message.content
    assert fake.last_request.json["model"] == "gpt-4o-mini"  # the alias, resolved
    assert "api-version" not in fake.last_request.query
    assert gateway.call_row(rid)["endpoint"] == "/openai/v1/chat/completions"


def test_azure_deployment_path_unknown_model_is_404(gateway: GatewayProcess):
    c = _client(gateway, uuid.uuid4().hex)
    try:
        c.chat.completions.create(model="no-such", messages=[{"role": "user", "content": "x"}])
    except openai.NotFoundError as e:
        assert e.body["code"] == "model_not_found"  # type: ignore[index]
    else:
        raise AssertionError("expected a 404")
