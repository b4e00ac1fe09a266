"""AWS Bedrock through the Converse API (`/model/{modelId}/converse`, and
`/converse-stream` with the AWS event-stream framing). OpenAI chat clients reach it by
translation. Requests are signed with SigV4 by `botocore`, credentials from the usual AWS
chain (environment, profile, SSO, container or instance role), resolved once at the first
call; a configured `api_key` is sent instead as a Bedrock API key (bearer token).

The region comes from the base URL (`https://bedrock-runtime.{region}.amazonaws.com`),
else `AWS_REGION` / `AWS_DEFAULT_REGION`.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote

from gateway.errors import MissingCredentials
from gateway.providers.base import Headers, Provider, ProviderConfig, register

_REGION = re.compile(r"bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com")


@register
class Bedrock(Provider):
    kind = "bedrock"
    genai_name = "aws.bedrock"
    dialect = "bedrock"
    default_base_url = "https://bedrock-runtime.us-east-1.amazonaws.com"
    inject_stream_usage = False
    price_as = "aws"
    needs_key = False  # signed instead
    signs = True

    __slots__ = ("_credentials", "region")

    def __init__(self, cfg: ProviderConfig) -> None:
        super().__init__(cfg)
        m = _REGION.search(cfg.base_url)
        self.region = (
            m.group(1)
            if m
            else os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        )
        self._credentials: Any = None

    @classmethod
    def default_price_as(cls, base_url: str) -> str:
        return cls.price_as

    def target(self, path: str, query: str, model: str) -> str:
        # `path` is the Converse operation: /converse or /converse-stream. ":" stays as is
        # (a model id's version): the HTTP client would send it unescaped, and the signature
        # must cover the path as sent; "/" (inference profile ARNs) is escaped.
        url = f"{self.origin.prefix}/model/{quote(model, safe=':@')}{path}"
        return f"{url}?{query}" if query else url

    def client_credentials(self, authorization: bytes, api_key: bytes, x_api_key: bytes) -> Headers:
        return []  # never the client's: calls are signed with the gateway's AWS identity

    def sign(self, method: str, url: str, body: bytes) -> Headers:
        """SigV4 headers for one request (`authorization`, `x-amz-date`, and the session
        token of temporary credentials)."""
        if self.auth_headers is not None:  # a Bedrock API key, sent as a bearer token
            return []
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        if self._credentials is None:
            from botocore.session import Session

            self._credentials = Session().get_credentials()
            if self._credentials is None:
                raise MissingCredentials(
                    f"no AWS credentials for provider {self.name!r}: set them in the "
                    "environment, a profile or a role, or configure a Bedrock api_key"
                )
        request = AWSRequest(method, url, data=body, headers={"content-type": "application/json"})
        frozen = self._credentials.get_frozen_credentials()
        SigV4Auth(frozen, "bedrock", self.region).add_auth(request)
        return [
            (k.lower().encode(), v.encode() if isinstance(v, str) else v)
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "x-amz-date", "x-amz-security-token")
        ]
