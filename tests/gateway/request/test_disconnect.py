"""A call learns that its client left in both ways the server can tell it: through the
scope extension our server sets (no task per call), or, under another ASGI server, by
watching receive() for `http.disconnect`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway.providers.wire import wire_api_for
from gateway.recording.record import CallRecord
from gateway.request.exchange import Exchange
from gateway.request.headers import RequestHeaders
from gateway.server import ON_DISCONNECT


def _exchange() -> Exchange:
    async def send(msg: dict[str, Any]) -> None:
        pass

    wire = wire_api_for("POST", "/v1/chat/completions")
    return Exchange(CallRecord(request_id="r"), 0.0, lambda r: None, send, "POST",
                    RequestHeaders([]), wire)  # fmt: skip


async def _call(ex: Exchange, scope: dict[str, Any], receive: Any) -> str:
    ex.watch_disconnect(receive, scope)
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        return "cancelled"
    return "finished"


def test_the_servers_hook_cancels_a_call_whose_client_left():
    async def main() -> None:
        told: list[Callable[[], None]] = []
        ex = _exchange()

        async def receive() -> dict[str, Any]:
            raise AssertionError("with the hook, nobody waits on receive()")

        task = asyncio.create_task(_call(ex, {"extensions": {ON_DISCONNECT: told.append}}, receive))
        await asyncio.sleep(0)
        assert len(told) == 1 and ex.watcher is None
        told[0]()  # the connection is lost
        assert await task == "cancelled" and ex.client_gone

        done = _exchange()  # an answered call is not cancelled by a later close
        task = asyncio.create_task(
            _call(done, {"extensions": {ON_DISCONNECT: told.append}}, receive)
        )
        await asyncio.sleep(0)
        done.done = True
        told[1]()
        await asyncio.sleep(0)
        assert not task.done() and not done.client_gone
        task.cancel()

    asyncio.run(main())


def test_without_the_hook_a_watcher_reads_receive():
    async def main() -> None:
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await gone.wait()
            return {"type": "http.disconnect"}

        ex = _exchange()
        task = asyncio.create_task(_call(ex, {}, receive))
        await asyncio.sleep(0)
        assert ex.watcher is not None
        gone.set()
        assert await task == "cancelled" and ex.client_gone

    asyncio.run(main())
