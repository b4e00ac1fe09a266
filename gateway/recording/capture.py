"""The `capture:` section: which request and response bodies a row keeps, and how long."""

from __future__ import annotations

from typing import Literal

from gateway.sections import Count, Positive, Section


class CaptureConfig(Section, frozen=True):
    mode: Literal["metadata", "full"] = "metadata"  # metadata: no bodies
    max_body_bytes: Count = 32_768  # bodies are cut to this
    allow_header_override: bool = True  # honour X-Gateway-Capture
    body_ttl_days: Positive = 30  # bodies expire; the row's metadata stays

    def limit(self, header: str) -> int:
        """Bytes of each body to keep for a call (0: none), given its X-Gateway-Capture."""
        mode: str = self.mode
        if header in ("full", "metadata") and self.allow_header_override:
            mode = header
        return self.max_body_bytes if mode == "full" else 0
