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
    def root(self) -> str:
        """`scheme://host[:port]`: with a target (path and query), a whole URL."""
        return f"{self.scheme}://{self.host_header.decode()}"

    @property
    def url(self) -> str:
        return self.root + self.prefix

    @classmethod
    def of(cls, base_url: str, tls: ssl.SSLContext | None = None) -> Origin:
        """The origin of an http(s) base URL (ValueError for anything else)."""
        scheme, host, port, prefix, header = parse_base_url(base_url)
        return cls(
            scheme=scheme,
            host=host,
            port=port,
            prefix=prefix,
            host_header=header,
            tls=(tls or tls_context()) if scheme == "https" else None,
        )


def parse_base_url(base_url: str) -> tuple[str, str, int, str, bytes]:
    """(scheme, host, port, path prefix, host header) of an http(s) base URL; ValueError
    naming what is wrong with it."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL with a host, got {base_url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"must have no query, fragment or credentials, got {base_url!r}")
    if not base_url.isascii() or any(c in base_url for c in " \t\r\n"):
        raise ValueError(f"must be ASCII without spaces (percent-encode), got {base_url!r}")
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default  # ValueError for a port out of range
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host  # an IPv6 literal
    header = shown if port == default else f"{shown}:{port}"
    return parts.scheme, host, port, parts.path.rstrip("/"), header.encode("ascii")
