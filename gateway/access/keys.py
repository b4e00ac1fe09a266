"""Gateway keys: the secret a caller presents, and what the gateway keeps of it.

A secret is `lgw_` followed by 32 random bytes (256 bits) in URL-safe base64. It is shown
once, at creation; the gateway keeps only its SHA-256. A fast hash is the right one here:
slow password hashes (bcrypt, argon2) exist to make guessing low-entropy passwords
expensive, but nobody can enumerate 2^256 candidates however fast each guess is, and a
slow hash would cost every request tens of milliseconds. Lookup goes by the hash, and the
stored hash is compared in constant time once found.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Annotated, Literal

from msgspec import Meta
from msgspec.structs import asdict

from gateway.sections import Amount, Count, Section

PREFIX = "lgw_"
HASH_PREFIX = "sha256:"
_SECRET_BYTES = 32


class Limits(Section, frozen=True):
    """What a key may do. Zero means no limit; `models` empty means every model. Read from
    the config file (a key's entry), the `keys create` command and the key table alike."""

    models: tuple[Annotated[str, Meta(min_length=1, max_length=256)], ...] = ()  # exact or globs
    rpm: Count = 0  # requests per minute
    tpm: Count = 0  # tokens (input + output) per minute
    concurrency: Count = 0  # requests in flight at once
    budget_usd: Amount = 0.0  # spend per budget_period
    budget_period: Literal["day", "month"] = "month"  # UTC
    user_rpm: Count = 0  # the same, per end user within the key
    user_tpm: Count = 0

    def to_json(self) -> dict[str, object]:
        return {f: list(v) if isinstance(v, tuple) else v for f, v in asdict(self).items()}

    def only(self) -> Limits:
        """The limits alone, without what a subclass adds (a declared key's name...)."""
        return Limits(**{f: getattr(self, f) for f in Limits.__struct_fields__})


@dataclass(frozen=True, slots=True)
class GatewayKey:
    key_id: str
    name: str
    key_hash: str  # "sha256:<hex>"
    app: str = ""  # calls made with the key are recorded as this app (when set)
    team: str = ""
    hint: str = ""  # the last characters of the secret, to tell keys apart in listings
    limits: Limits = field(default_factory=Limits)
    created_at: float = 0.0
    revoked: bool = False
    source: str = "store"  # store | config


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def hash_secret(secret: str) -> str:
    return HASH_PREFIX + hashlib.sha256(secret.encode()).hexdigest()


def hint_of(secret: str) -> str:
    return PREFIX + "…" + secret[-4:]


def looks_like_key(value: str) -> bool:
    return value.startswith(PREFIX)


def token_matches(presented: str, expected: str) -> bool:
    """Constant-time comparison of a presented secret (or its hash) with the expected one;
    an empty expected secret matches nothing. Shared by the gateway keys, the admin token
    and the feedback intake's keys."""
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())


def valid_hash(value: str) -> bool:
    hexpart = value.removeprefix(HASH_PREFIX)
    return (
        value.startswith(HASH_PREFIX)
        and len(hexpart) == 64
        and all(c in "0123456789abcdef" for c in hexpart)
    )


def presented_secret(authorization: bytes, x_api_key: bytes, api_key: bytes) -> str | None:
    """The gateway key a client sent where its SDK puts an API key (OpenAI: Bearer,
    Anthropic: x-api-key, Azure: api-key); None when none of them holds one."""
    if authorization[:7].lower() == b"bearer ":
        value = authorization[7:].strip()
        if value.startswith(PREFIX.encode()):
            return value.decode("latin-1")
    for value in (x_api_key, api_key):
        value = value.strip()
        if value.startswith(PREFIX.encode()):
            return value.decode("latin-1")
    return None


def any_credential(authorization: bytes, x_api_key: bytes, api_key: bytes) -> bool:
    """Whether the client sent some key (a gateway key or not) where SDKs put one."""
    token = authorization[7:] if authorization[:7].lower() == b"bearer " else authorization
    return bool(token.strip() or x_api_key.strip() or api_key.strip())
