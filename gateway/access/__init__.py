"""Who may call the gateway and how much: gateway keys, per-key limits and budgets, the
browser guard. The request path asks `gate.Gate`; `admin` and `report` serve the CLI."""

from gateway.access.keys import token_matches

__all__ = ["token_matches"]
