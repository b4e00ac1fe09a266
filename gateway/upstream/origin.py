"""Where a provider's calls go, parsed once at start-up: scheme, host, port, TLS and the
request line's prefix, so that a call builds nothing but its own path and headers."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from functools import cache
from urllib.parse import urlsplit


@cache
def tls_context() -> ssl.SSLContext:
    """Certificates from certifi's bundle (as httpx and aiohttp use), one context for every
    origin: building one costs milliseconds."""
    import certifi

    ctx = ssl.create_default_context(cafile=certifi.where())
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@dataclass(frozen=True, slots=True)
class Origin:
    """One upstream server: what a connection to it needs, and the `host` header its
    requests carry. `prefix` is the base URL's path (without the trailing slash)."""

    scheme: str
    host: str
    port: int
    prefix: str
    host_header: bytes = field(repr=False)
    tls: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header.decode()}{self.prefix}"

    @classmethod
    def of(cls, base_url: str, tls: ssl.SSLContext | None = None) -> Origin:
        """The origin of an http(s) base URL (ValueError for anything else)."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"a base URL has no query, fragment or credentials: {base_url!r}")
        secure = parts.scheme == "https"
        default = 443 if secure else 80
        port = parts.port or default
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host  # an IPv6 literal
        header = shown if port == default else f"{shown}:{port}"
        return cls(
            scheme=parts.scheme,
            host=host,
            port=port,
            prefix=parts.path.rstrip("/"),
            host_header=header.encode("ascii"),
            tls=(tls or tls_context()) if secure else None,
        )
