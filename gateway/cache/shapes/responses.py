"""OpenAI Responses: a `response` body and its event stream (`response.created`, per output
item `response.output_item.added` ... `.done` with the text or arguments in between, then
`response.completed`, or `response.incomplete`)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count
from typing import Any

from gateway.cache.shapes.sse import Events, named
from gateway.providers.wire.base import as_str, event_json

_ENDS = ("response.completed", "response.incomplete")


class ResponsesShape:
    def to_body(self, events: Events) -> dict[str, Any] | None:
        """The response its last event carries whole."""
        for event, raw in events:
            obj = event_json(raw)
            if obj is not None and (event or obj.get("type")) in _ENDS:
                resp = obj.get("response")
                return resp if isinstance(resp, dict) else None
        return None

    def to_stream(self, body: dict[str, Any], include_usage: bool) -> bytes:
        seq = count()

        def ev(kind: str, **fields: Any) -> bytes:
            return named(kind, {"type": kind, "sequence_number": next(seq), **fields})

        status = as_str(body.get("status")) or "completed"
        opening = {**body, "status": "in_progress", "output": [], "usage": None}
        out = [ev("response.created", response=opening),
               ev("response.in_progress", response=opening)]  # fmt: skip
        items = [i for i in body.get("output") or () if isinstance(i, dict)]
        for n, item in enumerate(items):
            out += self._item(ev, n, item)
        out.append(ev("response.incomplete" if status == "incomplete" else "response.completed",
                      response=body))  # fmt: skip
        return b"".join(out)

    @staticmethod
    def _item(ev: Any, n: int, item: dict[str, Any]) -> Iterator[bytes]:
        kind, item_id = item.get("type"), item.get("id")
        opened = {**item, "status": "in_progress"}
        if kind == "message":
            opened["content"] = []
        elif kind == "function_call":
            opened["arguments"] = ""
        yield ev("response.output_item.added", output_index=n, item=opened)
        at = {"item_id": item_id, "output_index": n}
        if kind == "message":
            for c, part in enumerate(p for p in item.get("content") or () if isinstance(p, dict)):
                text, lp = as_str(part.get("text")), part.get("logprobs", [])
                yield ev("response.content_part.added", **at, content_index=c,
                         part={**part, "text": ""})  # fmt: skip
                yield ev("response.output_text.delta", **at, content_index=c, delta=text,
                         logprobs=lp)  # fmt: skip
                yield ev("response.output_text.done", **at, content_index=c, text=text,
                         logprobs=lp)  # fmt: skip
                yield ev("response.content_part.done", **at, content_index=c, part=part)
        elif kind == "function_call":
            args = as_str(item.get("arguments"))
            yield ev("response.function_call_arguments.delta", **at, delta=args)
            yield ev("response.function_call_arguments.done", **at, arguments=args)
        yield ev("response.output_item.done", output_index=n, item=item)


RESPONSES = ResponsesShape()
