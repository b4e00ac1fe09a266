"""HTTP/1.1 to the upstreams: origins parsed once, keep-alive connections, answers read as
they arrive (see client.py for why the gateway has its own)."""

from gateway.upstream.client import UpstreamClient
from gateway.upstream.connection import UpstreamResponse
from gateway.upstream.origin import Origin, tls_context

__all__ = ["Origin", "UpstreamClient", "UpstreamResponse", "tls_context"]
