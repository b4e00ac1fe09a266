"""Reports for product teams, as plain text (`llm-gateway report ...`)."""

from __future__ import annotations

from collectors.report.feedback import feedback_report, parse_since

__all__ = ["feedback_report", "parse_since"]
