"""The request path, one module per step in reading order: `headers` → `exchange` (body,
record) → `attempts` (hops, deadlines, retries) → `streaming` (pass-through, usage filter,
capture); `proxy` is the ASGI entry that strings them together."""

from __future__ import annotations

from gateway.request.proxy import Proxy

__all__ = ["Proxy"]
