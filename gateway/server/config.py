"""The `server:` section: where the gateway listens and how long it waits for clients."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from msgspec import Meta

from gateway.sections import FieldError, Positive, Section

Seconds = Annotated[float, Meta(ge=0.1)]


class ServerConfig(Section, frozen=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8080
    max_body_bytes: Positive = 10 * 1024 * 1024
    workers: Positive = 1
    shutdown_grace_s: Annotated[float, Meta(ge=0)] = 30.0  # in-flight streams get this long
    header_timeout_s: Seconds = 10.0  # from a request's first byte to the end of its head
    body_timeout_s: Seconds = 60.0  # from the end of the head to the end of the body
    idle_timeout_s: Seconds = 5.0  # a connection with no request in flight
    max_connections: Positive = 1024
    trusted_proxies: tuple[str, ...] = ()  # whose X-Forwarded-For counts; IPs or networks

    def __post_init__(self) -> None:
        for i, item in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                msg = f"must be an IP address or network, got {item!r}"
                raise FieldError(f"trusted_proxies[{i}]", msg) from None
