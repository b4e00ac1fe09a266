"""The gateway's exceptions, one tree, and the answers it gives in OpenAI's error shape.

    GatewayError                 the root: the CLI and the app catch it
    ├── ConfigError              config: names the key (and the file and line it came from)
    ├── StoreError               store: refused or unreachable
    │   ├── StoreBusy            a data directory or record log held by another process
    │   └── StoreMissing         no store where a command looked (it creates none)
    ├── UpstreamError            upstream: what the gateway could not get from a provider
    │   ├── MissingCredentials   no credential to send
    │   ├── MalformedStream      a stream whose framing cannot be read
    │   ├── UpstreamConnectError no connection (refused, unreachable, DNS, TLS)
    │   ├── UpstreamConnectTimeout  no connection in time
    │   ├── UpstreamClosed       closed before or during the answer
    │   └── UpstreamProtocolError  not HTTP/1.1
    ├── AccessError              access: gateway keys and their limits
    │   ├── LimiterUnavailable   the shared counters (Redis) cannot be reached
    │   └── KeyCommandError      a key command that cannot be done
    └── ApiError                 an answer to a client: status, type, code, param
        └── AccessDenied         a refusal by keys and limits (also an AccessError)

Each command of the CLI reports a `GatewayError` as one line and exits with its
`exit_code`; on the request path an `ApiError` becomes the answer, any other error a 500.
"""

from __future__ import annotations

from typing import Any

import msgspec

_encode = msgspec.json.encode
_decode = msgspec.json.decode

# What decoding untrusted JSON can raise: bad syntax, bytes that are not UTF-8, nesting
# deeper than the decoder's limit.
JSON_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)

Headers = list[tuple[bytes, bytes]]


class GatewayError(Exception):
    """Anything the gateway raises on purpose; the message says what and why."""

    exit_code = 1  # the CLI's exit status when a command ends with it


# -- config ------------------------------------------------------------------------------
class ConfigError(GatewayError):
    """A configuration problem. `key` is the dotted path of the bad key
    (`providers.openai.base_url`, `routes[0].provider`); `where` the file and line it came
    from, when it came from a file; `hint` a key or value that was probably meant."""

    exit_code = 2

    def __init__(self, key: str, message: str, where: str = "", hint: str = "") -> None:
        self.key, self.message, self.where, self.hint = key, message, where, hint
        text = f"{key}: {message}"
        if hint:
            text += f" (did you mean {hint!r}?)"
        if where:
            text += f" [{where}]"
        super().__init__(text)


# -- store -------------------------------------------------------------------------------
class StoreError(GatewayError):
    """The store refused or could not be reached; the message says why."""


class StoreBusy(StoreError):
    """The embedded store's data directory, or a record log, is held by another process."""


class StoreMissing(StoreError):
    """A command that reads the store found none where it looked; the message says where
    and how to point the command at one."""


# -- upstream ----------------------------------------------------------------------------
class UpstreamError(GatewayError):
    """What the gateway could not get from, or could not read of, a provider."""


class MissingCredentials(UpstreamError):
    """No credential for a provider: the gateway has none and the client sent none."""


class MalformedStream(UpstreamError):
    """An upstream stream whose framing cannot be read (a bad checksum, a cut frame)."""


class UpstreamConnectError(UpstreamError):
    """No connection: refused, unreachable, a name that does not resolve, TLS failed."""


class UpstreamConnectTimeout(UpstreamError):
    """No connection within the provider's connect timeout."""


class UpstreamClosed(UpstreamError):
    """The upstream closed the connection before or during its answer."""


class UpstreamProtocolError(UpstreamError):
    """The upstream's bytes are not HTTP/1.1: a bad status line or header, or bytes past
    the end of its answer."""


# -- access ------------------------------------------------------------------------------
class AccessError(GatewayError):
    """Gateway keys and their limits."""


class LimiterUnavailable(AccessError):
    """The shared counters (Redis) could not be reached or did not answer in time."""


class KeyCommandError(AccessError):
    """A key command (`llm-gateway keys ...`) that cannot be done; the message says why."""

    exit_code = 2


# -- answers -----------------------------------------------------------------------------
def error_envelope(
    message: str, code: str | None, param: str | None = None, type_: str = "invalid_request_error"
) -> dict[str, Any]:
    """OpenAI's error shape: `{"error": {message, type, param, code}}`."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ApiError(GatewayError):
    """An error the gateway answers itself: `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | None = None,
        param: str | None = None,
        headers: Headers | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers: Headers = headers or []  # extra response headers (Retry-After...)

    def body(self) -> bytes:
        return _encode(error_envelope(self.message, self.code, self.param, self.type))


class AccessDenied(ApiError, AccessError):
    """A refusal by gateway keys and limits; `outcome` names it in the call's row and the
    metric label."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str,
        outcome: str,  # a `recording.record.Outcome` (a str)
        headers: Headers | None = None,
    ) -> None:
        super().__init__(status, message, type_, code, headers=headers)
        self.outcome = outcome


_BAD = "invalid_request_error"


def bad_json(detail: str) -> ApiError:
    msg = f"We could not parse the JSON body of your request: {detail}"
    return ApiError(400, msg, _BAD, "invalid_json")


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


# The gateway's own answers, by what went wrong: (status, type, code, param, message).
_ANSWERS = {
    "too_large": (413, _BAD, "request_too_large", None,
                  "Request body exceeds the gateway limit of {} bytes."),
    "missing_model": (400, _BAD, "missing_model", "model", "You must provide a model parameter."),
    "model_not_found": (404, _BAD, "model_not_found", "model",
                        "The model `{}` does not exist or has no route on this gateway."),
    "no_credentials": (401, "authentication_error", "missing_api_key", None,
                       "Missing credentials: {}."),
    "upstream_timeout": (504, "timeout_error", "upstream_timeout", None,
                         "The upstream did not answer in time ({})."),
    "wrong_dialect": (400, _BAD, "unsupported_endpoint", "model", "The model `{}` is not "
                      "routed to an Anthropic provider; /v1/messages needs one."),
}  # fmt: skip


def _answer(kind: str, *args: object) -> ApiError:
    status, type_, code, param, message = _ANSWERS[kind]
    return ApiError(status, message.format(*args), type_, code, param)


def too_large(limit: int) -> ApiError:
    return _answer("too_large", limit)


def missing_model() -> ApiError:
    return _answer("missing_model")


def wrong_type(param: str, expected: str) -> ApiError:
    return ApiError(400, f"`{param}` must be {expected}.", _BAD, "invalid_type", param)


def model_not_found(model: str) -> ApiError:
    return _answer("model_not_found", model)


def no_credentials(detail: str) -> ApiError:
    return _answer("no_credentials", detail)


def upstream_timeout(what: str) -> ApiError:
    return _answer("upstream_timeout", what)


def upstream_unreachable(provider: str, what: str = "could not be reached") -> ApiError:
    """The client learns which configured provider failed, never its address: the detail
    goes to the log and the row."""
    msg = f"The provider `{provider}` {what}."
    return ApiError(502, msg, "api_connection_error", "upstream_unreachable")


PROTOCOL_ERROR = "upstream_protocol_error"


def upstream_protocol_error(provider: str) -> ApiError:
    """An upstream whose answer is not HTTP (an invalid status line, a broken head)."""
    msg = f"The provider `{provider}` answered with something that is not valid HTTP."
    return ApiError(502, msg, "api_connection_error", PROTOCOL_ERROR)


def wrong_dialect(model: str) -> ApiError:
    return _answer("wrong_dialect", model)


def error_message(body: bytes) -> str:
    """The message of an answer in the OpenAI error shape (the raw text of any other)."""
    try:
        return str(_decode(body)["error"]["message"])
    except (*JSON_ERRORS, KeyError, TypeError):
        return body.decode(errors="replace").strip()
