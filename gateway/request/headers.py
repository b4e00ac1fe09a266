"""Request headers, read in one pass: what the gateway takes from them (ids, app, user,
session, properties, capture override, credentials) and what it forwards upstream.

The policy: headers that describe one hop of HTTP are never forwarded; credentials are
replaced per provider and never stored or logged; `X-Gateway-*` headers are the
gateway's own.
"""

from __future__ import annotations

from gateway.access.keys import presented_secret
from gateway.recording.record import CallRecord
from gateway.upstream import UpstreamResponse

Headers = list[tuple[bytes, bytes]]

_HOP_BY_HOP = frozenset(
    {
        b"host",
        b"content-length",
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-connection",
        b"accept-encoding",
        b"expect",
    }
)
SECRETS = frozenset({b"authorization", b"api-key", b"x-api-key", b"cookie", b"proxy-authorization"})
_NOT_FORWARDED = _HOP_BY_HOP | SECRETS | {b"x-request-id", b"anthropic-version"}
_RESPONSE_DROP = _HOP_BY_HOP | {b"x-request-id", b"content-encoding"}
_IDENTITY = (b"accept-encoding", b"identity")

MAX_PROPERTIES = 32


class RequestHeaders:
    """What the gateway reads from the client's request headers, in one pass."""

    __slots__ = (
        "anthropic_version",
        "api_key",
        "app",
        "authorization",
        "cache",
        "cache_control",
        "capture",
        "content_length",
        "forward",
        "host",
        "origin",
        "properties",
        "request_id",
        "session",
        "traceparent",
        "user",
        "user_agent",
        "x_api_key",
    )

    def __init__(self, headers: Headers) -> None:
        self.request_id = self.app = self.user = self.session = self.capture = ""
        self.traceparent = self.user_agent = self.host = self.origin = ""
        self.cache = self.cache_control = ""  # what the call asks of the response cache
        self.authorization = self.api_key = self.x_api_key = self.anthropic_version = b""
        self.content_length = -1
        self.properties: dict[str, str] = {}  # lengths capped with the record's (`finish`)
        forward: Headers = [_IDENTITY]
        for name, value in headers:
            if name.startswith(b"x-gateway-"):
                key = name[10:]
                if key == b"app":
                    self.app = value.decode("latin-1")
                elif key == b"user":
                    self.user = value.decode("latin-1")
                elif key == b"session":
                    self.session = value.decode("latin-1")
                elif key == b"capture":
                    self.capture = value.decode("latin-1").strip().lower()
                elif key == b"cache":
                    self.cache = value.decode("latin-1")
                elif key.startswith(b"property-") and len(self.properties) < MAX_PROPERTIES:
                    self.properties[key[9:].decode("latin-1")] = value.decode("latin-1")
                continue
            if name in _NOT_FORWARDED:
                if name == b"authorization":
                    self.authorization = value
                elif name == b"x-api-key":
                    self.x_api_key = value
                elif name == b"api-key":
                    self.api_key = value
                elif name == b"x-request-id":
                    self.request_id = value.decode("latin-1")
                elif name == b"content-length":
                    self.content_length = int(value) if value.isdigit() else -1
                elif name == b"anthropic-version":
                    self.anthropic_version = value
                elif name == b"host":
                    self.host = value.decode("latin-1")
                continue
            if name == b"user-agent":
                self.user_agent = value.decode("latin-1")
            elif name == b"traceparent":
                self.traceparent = value.decode("latin-1")
            elif name == b"origin":
                self.origin = value.decode("latin-1")
            elif name == b"cache-control":
                self.cache_control = value.decode("latin-1")
            forward.append((name, value))
        self.forward = forward

    def parent_trace(self) -> tuple[str, str]:
        """(trace id, parent span id) of the W3C traceparent; empty strings when absent
        or malformed."""
        if not self.traceparent:
            return "", ""
        parts = self.traceparent.strip().split("-")
        if len(parts) >= 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
            trace, span = parts[1].lower(), parts[2].lower()
            try:
                int(trace, 16), int(span, 16)
            except ValueError:
                return "", ""
            if trace != "0" * 32 and span != "0" * 16:
                return trace, span
        return "", ""

    def continue_trace(self, trace_id: str, span_id: str) -> None:
        """The upstream sees the gateway's span as its parent."""
        self.forward = [h for h in self.forward if h[0] != b"traceparent"]
        self.forward.append((b"traceparent", f"00-{trace_id}-{span_id}-01".encode()))

    def consume_gateway_key(self) -> None:
        """Drop the gateway key from the credentials: it is the gateway's, never an
        upstream's (a passthrough provider then finds no credential: 401)."""
        if presented_secret(self.authorization, b"", b""):
            self.authorization = b""
        if presented_secret(b"", self.x_api_key, self.api_key):
            self.x_api_key = self.api_key = b""


def response_headers(resp: UpstreamResponse, rec: CallRecord, extra: Headers) -> Headers:
    """The upstream's response headers as the client gets them, with the gateway's own
    (`own_headers`)."""
    out = []
    for lname, value in resp.headers:  # names already in lower case
        if lname in _RESPONSE_DROP:
            if lname == b"x-request-id":
                rec.upstream_request_id = value.decode("latin-1")[:128]
                out.append((b"x-upstream-request-id", value))
            continue
        out.append((lname, value))
    return out + own_headers(rec, extra)


def own_headers(rec: CallRecord, extra: Headers) -> Headers:
    """What the gateway adds to an answer: its request id, the call's experiment, and
    `extra` (a gateway key's x-ratelimit-* headers, X-Gateway-Cache)."""
    out = [(b"x-request-id", rec.request_id.encode())]
    if rec.experiment:  # so the app can show what the variant goes with (e.g. its prompt)
        out.append((b"x-gateway-experiment", rec.experiment.encode()))
        out.append((b"x-gateway-variant", rec.variant.encode()))
    out += extra
    return out
