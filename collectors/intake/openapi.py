"""The OpenAPI description of `POST /v1/feedback` (schemathesis tests against it)."""

from __future__ import annotations

from typing import Any

from collectors.intake.events import DATA_TYPES, ID_RE, MAX_META, MAX_TEXT, NAME_RE, SOURCES
from collectors.signals import BY_NAME


def openapi(server_url: str = "/") -> dict[str, Any]:
    event = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "anyOf": [{"required": ["request_id"]}, {"required": ["session_id"]}],
        "properties": {
            "event_id": {"type": "string", "pattern": f"^{ID_RE.pattern}$", "maxLength": 128},
            "ts": {"type": "number", "description": "epoch seconds (or milliseconds)"},
            "request_id": {"type": "string", "pattern": f"^{ID_RE.pattern}$", "maxLength": 128},
            "session_id": {"type": "string", "minLength": 1, "maxLength": 256},
            "name": {"type": "string", "pattern": f"^{NAME_RE.pattern}$",
                     "description": "a known signal or a custom name: "
                     + ", ".join(BY_NAME)},
            "value": {"type": ["number", "boolean", "null"],
                      "description": "a number, or a boolean: true (1) is a yes, false (0) a "
                      "no; a boolean signal sent without a value says yes"},
            "string_value": {"type": "string", "maxLength": MAX_TEXT},
            "data_type": {"type": "string", "enum": list(DATA_TYPES)},
            "source": {"type": "string", "enum": list(SOURCES)},
            "comment": {"type": "string", "maxLength": MAX_TEXT},
            "end_user": {"type": "string", "maxLength": 256},
            "metadata": {"type": "object", "maxProperties": MAX_META,
                         "additionalProperties": {"type": "string", "maxLength": 1024}},
        },
    }  # fmt: skip
    error: dict[str, Any] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    }
    result: dict[str, Any] = {
        "type": "object",
        "required": ["accepted", "rejected", "results"],
        "properties": {
            "accepted": {"type": "integer"},
            "rejected": {"type": "integer"},
            "results": {"type": "array", "items": {
                        "type": "object", "required": ["index", "status"],
                        "properties": {"index": {"type": "integer"},
                                       "status": {"enum": ["accepted", "rejected"]},
                                       "event_id": {"type": "string"},
                                       "error": error["properties"]["error"]}}},
        },
    }  # fmt: skip

    # An error answer like any other; for a batch it carries the report too.
    rejected_all = {**error, "properties": {**error["properties"], **result["properties"]}}

    def resp(schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"description": description,
                "content": {"application/json": {"schema": schema}}}  # fmt: skip

    return {
        "openapi": "3.1.0",
        "info": {"title": "llm-gateway feedback API", "version": "1"},
        "servers": [{"url": server_url}],
        "paths": {
            "/v1/feedback": {
                "post": {
                    "summary": "Record end-user signals (one event or an array)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        event,
                                        {
                                            "type": "array",
                                            "items": event,
                                            "minItems": 1,
                                            "maxItems": 500,
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": resp(result, "all or some events accepted"),
                        "400": resp(error, "the body is not JSON"),
                        "401": resp(error, "a key is required and was missing or wrong"),
                        "403": resp(error, "origin not allowed for this key"),
                        "413": resp(error, "body too large"),
                        "422": resp(
                            rejected_all,
                            "no event was valid (a batch: with the report of every event)",
                        ),
                        "429": resp(error, "rate limited; see Retry-After"),
                    },
                }
            }
        },
    }
