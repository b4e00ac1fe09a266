"""Errors the gateway itself answers with, in OpenAI's error shape."""

from __future__ import annotations

from typing import Any

import msgspec

_encode = msgspec.json.encode
_decode = msgspec.json.decode

# What decoding untrusted JSON can raise: bad syntax, bytes that are not UTF-8, nesting
# deeper than the decoder's limit.
JSON_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


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


def parse_json(body: bytes) -> Any:
    """A client's JSON body, or a 400 `invalid_json` saying what is wrong with it."""
    try:
        return _decode(body)
    except msgspec.DecodeError as e:
        raise bad_json(str(e)) from None
    except UnicodeDecodeError:
        raise bad_json("the body is not valid UTF-8") from None
    except RecursionError:
        raise bad_json("the JSON is nested too deeply") from None


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


def wrong_type(param: str, expected: str) -> GatewayError:
    return GatewayError(
        400, f"`{param}` must be {expected}.", "invalid_request_error", "invalid_type", param
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


def upstream_timeout(what: str) -> GatewayError:
    return GatewayError(
        504,
        f"The upstream did not answer in time ({what}).",
        "timeout_error",
        "upstream_timeout",
    )


def upstream_unreachable(provider: str, what: str = "could not be reached") -> GatewayError:
    """The client learns which configured provider failed, never its address: the detail
    goes to the log and the row."""
    return GatewayError(
        502, f"The provider `{provider}` {what}.", "api_connection_error", "upstream_unreachable"
    )


def wrong_dialect(model: str) -> GatewayError:
    return GatewayError(
        400,
        f"The model `{model}` is not routed to an Anthropic provider; /v1/messages needs one.",
        "invalid_request_error",
        "unsupported_endpoint",
        "model",
    )


def error_message(body: bytes) -> str:
    """The message of an answer in the OpenAI error shape (the raw text of any other)."""
    try:
        return str(_decode(body)["error"]["message"])
    except (*JSON_ERRORS, KeyError, TypeError):
        return body.decode(errors="replace").strip()
