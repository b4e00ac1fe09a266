"""Errors the gateway itself answers with, in OpenAI's error shape."""

from __future__ import annotations

from typing import Any

import msgspec

_encode = msgspec.json.encode


def error_envelope(
    message: str, code: str | None, param: str | None = None, type_: str = "invalid_request_error"
) -> dict[str, Any]:
    """OpenAI's error shape: `{"error": {message, type, param, code}}`."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class GatewayError(Exception):
    """An error the gateway answers itself: `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers: list[tuple[bytes, bytes]] = []  # extra response headers (Retry-After...)

    def body(self) -> bytes:
        return _encode(error_envelope(self.message, self.code, self.param, self.type))


def bad_json(detail: str) -> GatewayError:
    return GatewayError(
        400,
        f"We could not parse the JSON body of your request: {detail}",
        "invalid_request_error",
        "invalid_json",
    )


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"Request body exceeds the gateway limit of {limit} bytes.",
        "invalid_request_error",
        "request_too_large",
    )


def missing_model() -> GatewayError:
    return GatewayError(
        400,
        "You must provide a model parameter.",
        "invalid_request_error",
        "missing_model",
        "model",
    )


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist or has no route on this gateway.",
        "invalid_request_error",
        "model_not_found",
        "model",
    )


def no_credentials(detail: str) -> GatewayError:
    return GatewayError(
        401, f"Missing credentials: {detail}.", "authentication_error", "missing_api_key"
    )


def upstream_timeout(what: str, seconds: float) -> GatewayError:
    return GatewayError(
        504,
        f"The upstream did not answer in time ({what} timeout, {seconds:g}s).",
        "timeout_error",
        "upstream_timeout",
    )


def upstream_unreachable(detail: str) -> GatewayError:
    return GatewayError(
        502,
        f"Could not reach the upstream: {detail}",
        "api_connection_error",
        "upstream_unreachable",
    )


def wrong_dialect(model: str) -> GatewayError:
    return GatewayError(
        400,
        f"The model `{model}` is not routed to an Anthropic provider; /v1/messages needs one.",
        "invalid_request_error",
        "unsupported_endpoint",
        "model",
    )
