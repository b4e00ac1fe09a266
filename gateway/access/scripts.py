"""Lua scripts on Redis, for the shared limits: redis-py's asyncio client (hiredis parsing),
on one server or a Redis Cluster.

Which of the two is asked of the server at the first command (`INFO cluster`), unless
`auth.redis_mode` says; on a Cluster, redis-py routes each script call by its keys' slot
and follows `MOVED`/`ASK` when slots move. The limiter's keys share a hash tag, so that a
script's keys are always in one slot.

The limiter sends two script calls per request. Calls made in the same turn of the event
loop go out together in one pipeline (one write, one read per node), so that under load
the client's own cost per call stays a few µs; a lone call goes out by itself. A script
Redis has forgotten (a restart, `SCRIPT FLUSH`) is sent again whole (EVAL), once.

Any failure — unreachable, no answer within the timeout, an error reply — is a
`LimiterUnavailable`; what that means for the call is the limiter's `failure` setting.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any, Literal

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from gateway.errors import LimiterUnavailable

Arg = bytes | str | int | float
Mode = Literal["auto", "standalone", "cluster"]
Client = aredis.Redis | RedisCluster


class Script:
    __slots__ = ("body", "sha")

    def __init__(self, body: str) -> None:
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()


class _Call:
    __slots__ = ("args", "future", "keys", "script")

    def __init__(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> None:
        self.script, self.keys, self.args = script, keys, args
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class RedisScripts:
    def __init__(self, url: str, timeout_s: float = 1.0, mode: Mode = "auto") -> None:
        self.url = url
        self.timeout = timeout_s
        self.mode = mode
        self._client: aredis.Redis | RedisCluster | None = None
        self._connecting = asyncio.Lock()
        self._pending: list[_Call] = []
        self._in_flight = 0  # calls and pipelines sent and not yet answered
        self._sending: set[asyncio.Task[None]] = set()

    @property
    def cluster(self) -> bool:
        return isinstance(self._client, RedisCluster)

    def _options(self) -> dict[str, Any]:
        # No retries of our own: the limiter leaves Redis alone for a moment after a failure.
        return {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "retry": Retry(NoBackoff(), 0),
        }

    async def _connect(self) -> aredis.Redis | RedisCluster:
        if self._client is not None:
            return self._client
        async with self._connecting:
            if self._client is None:
                self._client = await self._open()
            return self._client

    async def _open(self) -> aredis.Redis | RedisCluster:
        mode = self.mode
        if mode != "cluster":
            single = aredis.Redis.from_url(self.url, **self._options())
            if mode == "standalone":
                return single
            try:
                info = await single.info("cluster")
            except RedisError as e:
                await single.aclose()
                raise LimiterUnavailable(f"cannot reach Redis: {e}") from None
            if not info.get("cluster_enabled"):
                return single
            await single.aclose()
        cluster = RedisCluster.from_url(self.url, **self._options())
        try:
            await cluster.initialize()
        except RedisError as e:
            await cluster.aclose()
            raise LimiterUnavailable(f"cannot reach the Redis Cluster: {e}") from None
        return cluster

    async def call(self, *args: Arg) -> Any:
        """One command (not a script): SET, GET, ..."""
        client = await self._connect()
        try:
            return await client.execute_command(*args)
        except RedisError as e:
            raise LimiterUnavailable(f"{type(e).__name__}: {e}") from None

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """The script's answer. A call made while none is in flight goes at once; calls
        made while others are in flight go out together in the next pipeline."""
        if self._in_flight or self._pending or self._client is None:
            call = _Call(script, keys, args)
            if not self._pending:
                asyncio.get_running_loop().call_soon(self._flush)
            self._pending.append(call)
            return await call.future
        self._in_flight += 1
        try:
            return await self._evalsha(self._client, script, keys, args)
        except RedisError as e:
            raise LimiterUnavailable(f"{type(e).__name__}: {e}") from None
        finally:
            self._in_flight -= 1

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)  # held: the loop keeps only weak references to tasks
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        self._in_flight += 1
        try:
            client = await self._connect()
            await self._answer(client, batch)
        except LimiterUnavailable as e:
            failed: Exception = e
        except RedisError as e:
            failed = LimiterUnavailable(f"{type(e).__name__}: {e}")
        except Exception as e:  # a bug of ours must still answer every waiting call
            failed = e
        else:
            return
        finally:
            self._in_flight -= 1
        for call in batch:
            if not call.future.done():
                call.future.set_exception(failed)

    async def _answer(self, client: aredis.Redis | RedisCluster, batch: list[_Call]) -> None:
        if len(batch) == 1:
            (c,) = batch
            try:
                results: list[Any] = [await self._evalsha(client, c.script, c.keys, c.args)]
            except RedisError as e:
                results = [e]
        else:
            pipe = client.pipeline(transaction=False)
            for call in batch:
                pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
            results = list(await pipe.execute(raise_on_error=False))
            forgotten = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if forgotten:  # loaded once (on every primary of a Cluster), then run again
                for body in {batch[i].script.body for i in forgotten}:
                    await client.script_load(body)
                again = client.pipeline(transaction=False)
                for i in forgotten:
                    c = batch[i]
                    again.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
                for i, result in zip(
                    forgotten, await again.execute(raise_on_error=False), strict=True
                ):
                    results[i] = result
        for call, result in zip(batch, results, strict=True):
            if call.future.done():
                continue
            if isinstance(result, Exception):
                call.future.set_exception(LimiterUnavailable(f"{type(result).__name__}: {result}"))
            else:
                call.future.set_result(result)

    @staticmethod
    async def _evalsha(
        client: aredis.Redis | RedisCluster,
        script: Script,
        keys: Sequence[str],
        args: Sequence[Arg],
    ) -> Any:
        try:
            return await client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:  # EVAL runs it and caches it under the same SHA
            return await client.eval(script.body, len(keys), *keys, *args)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
