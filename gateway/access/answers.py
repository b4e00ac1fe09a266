"""How the gateway says no, the way the providers do, so the official SDKs react as usual.

401 for a missing or unknown key, 403 for a model the key may not use and for a request
from a foreign browser origin or Host, 429 with `Retry-After` (and `retry-after-ms`, which
the OpenAI and Anthropic SDKs prefer) for a rate limit, 429 `insufficient_quota` for a spent
budget (with `x-should-retry: false`: waiting a few seconds will not help, and both SDKs
honour that header), or for a budget whose rest is reserved by calls in flight (with
`Retry-After`: they may cost less than they reserved). OpenAI's `x-ratelimit-*` headers go
on every answer of a limited key.
"""

from __future__ import annotations

import math

from gateway.access import limiter as L
from gateway.access.limiter import Quota
from gateway.errors import AccessDenied, Headers
from gateway.recording.money import usd
from gateway.recording.record import Outcome

__all__ = ["AccessDenied", "Headers"]  # the request path takes them from here too


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        ms = math.ceil(seconds * 1000)
        return f"{ms if ms > 0 else 0}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    m, s = divmod(seconds, 60)
    return f"{int(m)}m{round(s):d}s"


_REQUESTS, _TOKENS = (
    (b"x-ratelimit-limit-" + what, b"x-ratelimit-remaining-" + what, b"x-ratelimit-reset-" + what)
    for what in (b"requests", b"tokens")
)


def _reset(seconds: float) -> bytes:
    if seconds < 1:  # `duration`'s most common case, without a string: on every answer
        return b"%dms" % math.ceil(seconds * 1000) if seconds > 0 else b"0ms"
    return duration(seconds).encode()


def ratelimit_headers(q: Quota) -> Headers:
    # remaining: truncated, as int() does
    r, t = q
    out: Headers = [] if r is None else [
        (_REQUESTS[0], b"%d" % r[0]), (_REQUESTS[1], b"%d" % r[1]), (_REQUESTS[2], _reset(r[2]))
    ]  # fmt: skip
    if t is not None:
        out += ((_TOKENS[0], b"%d" % t[0]), (_TOKENS[1], b"%d" % t[1]), (_TOKENS[2], _reset(t[2])))
    return out


def _retry(seconds: float) -> Headers:
    return [
        (b"retry-after", str(max(math.ceil(seconds), 1)).encode()),
        (b"retry-after-ms", str(max(math.ceil(seconds * 1000), 1)).encode()),
    ]


_BAD = "invalid_request_error"
# The refusals of a key or a browser, by code: (status, type, outcome, message, Retry-After).
_REFUSALS = {
    "missing_api_key": (401, _BAD, Outcome.REFUSED_KEY, "You didn't provide a gateway key. "
                        "Send it where your SDK puts its API key (Authorization: Bearer "
                        "lgw_..., x-api-key or api-key).", None),
    "invalid_api_key": (401, _BAD, Outcome.REFUSED_KEY,
                        "Incorrect gateway key provided (unknown or revoked).", None),
    # A credential that is no gateway key at all: a provider's key sent to a gateway that
    # requires its own. Said plainly: the caller did send a key, only not one of ours.
    "not_gateway_key": (401, _BAD, Outcome.REFUSED_KEY, "The key provided is not a gateway "
                        "key: this gateway requires one (lgw_...), where your SDK puts its "
                        "API key. A provider's key (sk-..., sk-ant-...) is not accepted here; "
                        "ask the gateway's operator for a gateway key.", None),
    "keys_loading": (503, "server_error", Outcome.REFUSED_KEY,
                     "The gateway is still reading its keys; try again in a moment.", 1.0),
    "model_not_allowed": (403, _BAD, Outcome.REFUSED_MODEL,
                          "This gateway key is not allowed to use the model `{}`.", None),
    "origin_not_allowed": (403, _BAD, Outcome.REFUSED_ORIGIN, "Requests from the browser "
                           "origin {!r} are not allowed (auth.allowed_origins).", None),
    "host_not_allowed": (403, _BAD, Outcome.REFUSED_HOST,
                         "The Host {!r} is not this gateway's (auth.allowed_hosts).", None),
}  # fmt: skip


# Refusals that answer with another refusal's code (what SDKs and scripts key on).
_CODES = {"not_gateway_key": "invalid_api_key"}


def refusal(code: str, what: str = "") -> AccessDenied:
    """A refusal of `_REFUSALS` (a model, an origin or a Host named in the message)."""
    status, type_, outcome, message, retry = _REFUSALS[code]
    headers = _retry(retry) if retry is not None else None
    code = _CODES.get(code, code)
    return AccessDenied(status, message.format(what[:256]), type_, code, outcome, headers)


_LIMIT_TEXT = {
    L.RPM: "requests per minute",
    L.TPM: "tokens per minute",
    L.USER_RPM: "requests per minute for this end user",
    L.USER_TPM: "tokens per minute for this end user",
    L.CONCURRENCY: "concurrent requests",
}


def refused(adm: L.Admission) -> AccessDenied:
    """The answer to an admission that failed."""
    headers = ratelimit_headers(adm.quota)
    key = adm.key
    if adm.refusal == L.BUDGET and adm.held:
        lim = key.limits
        return AccessDenied(
            429,
            f"The rest of the gateway key {key.name!r}'s budget of ${usd(lim.budget_usd)} for "
            f"this {lim.budget_period} is reserved by its calls in flight, and this call may "
            "cost more than what is left (a smaller max_tokens reserves less).",
            "insufficient_quota",
            "insufficient_quota",
            Outcome.REFUSED_BUDGET,
            [*headers, *_retry(adm.retry_after)],  # the calls in flight may cost less
        )
    if adm.refusal == L.BUDGET:
        lim = key.limits
        return AccessDenied(
            429,
            f"The gateway key {key.name!r} has spent its budget of "
            f"${usd(lim.budget_usd)} for this {lim.budget_period}, or this call may cost "
            "more than what is left (a smaller max_tokens reserves less).",
            "insufficient_quota",
            "insufficient_quota",
            Outcome.REFUSED_BUDGET,
            [*headers, (b"x-should-retry", b"false")],
        )
    if adm.refusal == L.UNAVAILABLE:
        return AccessDenied(
            503,
            "The gateway cannot check this key's limits right now; try again shortly.",
            "server_error",
            "limiter_unavailable",
            Outcome.REFUSED_LIMITER,
            [*headers, *_retry(adm.retry_after)],
        )
    what = _LIMIT_TEXT.get(adm.refusal, adm.refusal)
    return AccessDenied(
        429,
        f"Rate limit reached for gateway key {key.name!r} on {what}. "
        f"Please try again in {duration(adm.retry_after)}.",
        "requests",
        "rate_limit_exceeded",
        Outcome(f"refused_{adm.refusal}"),
        [*headers, *_retry(adm.retry_after)],
    )
