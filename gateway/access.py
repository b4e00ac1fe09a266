"""Access checks shared by the gateway's own endpoints and the feedback intake."""

from __future__ import annotations

import hmac


def token_matches(presented: str, expected: str) -> bool:
    """Constant-time comparison of a presented secret with the expected one; an empty
    expected secret matches nothing."""
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())
