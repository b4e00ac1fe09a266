"""Lua scripts on Redis, for the shared limits: redis-py's asyncio client (hiredis parsing),
on one server or a Redis Cluster.

Which of the two is asked of the server at the first command (`INFO cluster`), unless
`auth.redis_mode` says; on a Cluster, redis-py routes each script call by its keys' slot
and follows `MOVED`/`ASK` when slots move. The limiter's keys share a hash tag, so that a
script's keys are always in one slot.

The limiter sends two script calls per request: the admission, whose answer the call
waits for, and the settlement, written at once and not waited for (`send`). The calls of
one key made in the same turn share one script call (`queue`: its arguments grow until it
is written; see `redis_limiter.py`). Calls made in the same turn of the event loop go out
together (one write). On one server they go down one connection of our own (`_Line`):
commands packed by hiredis, written as they come without waiting for earlier answers,
answers matched to calls in order as they are read; redis-py's pipeline machinery cost
more per call than the rest of the keys-on path. On a Cluster they go out in one redis-py
pipeline (one write, one read per node). A script Redis has forgotten (a restart, `SCRIPT
FLUSH`) is sent again whole (EVAL or SCRIPT LOAD), once.

Any failure — unreachable, no answer within the timeout, an error reply — is a
`LimiterUnavailable`; what that means for the call is the limiter's `failure` setting.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Literal

import hiredis
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


_pack: Callable[[tuple[Arg, ...]], bytes] = hiredis.pack_command  # type: ignore[assignment]


class Call:
    __slots__ = (
        "answered", "args", "future", "keys", "load", "on_error", "retried", "script", "written",
    )  # fmt: skip

    def __init__(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[Arg],
        load: bool = False,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.script, self.keys, self.args = script, keys, args
        # Nobody waits for a SCRIPT LOAD, nor for a call sent with an `on_error` instead.
        self.future: asyncio.Future[Any] | None = (
            None if load or on_error else asyncio.get_running_loop().create_future()
        )
        self.on_error = on_error
        self.answered = False
        self.retried = False  # sent again after Redis answered NOSCRIPT
        self.load = load  # SCRIPT LOAD of the script
        self.written = False  # packed and written: its `args` are final

    def fail(self, error: Exception) -> None:
        self.answered = True
        if self.future is not None:
            if not self.future.done():
                self.future.set_exception(error)
        elif self.on_error is not None:
            self.on_error(error)

    def packed(self) -> bytes:
        if self.load:
            return _pack(("SCRIPT", "LOAD", self.script.body))
        return _pack(("EVALSHA", self.script.sha, len(self.keys), *self.keys, *self.args))


class _Line:
    """One connection to one server, pipelined: calls are written as they come and
    answered in the order they were written. Connecting (URL, AUTH, SELECT, TLS) is
    redis-py's; the connection is then read and written here. Any failure (closed, an
    answer late by more than the timeout) fails every call waiting and ends the line: the
    next call opens another."""

    def __init__(self, conn: Any, timeout: float) -> None:
        self._conn = conn
        self._reader: asyncio.StreamReader = conn._reader
        self._writer: asyncio.StreamWriter = conn._writer
        self._timeout = timeout
        self._parser = hiredis.Reader()
        self._waiting: deque[Call] = deque()
        self._pending: list[Call] = []
        self._loading: set[str] = set()  # scripts whose SCRIPT LOAD is on its way
        self._preloaded: set[str] = set()  # loaded ahead of their first unwaited call
        self.error: Exception | None = None
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, client: aredis.Redis, timeout: float) -> _Line:
        conn = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        await conn.connect()
        return cls(conn, timeout)

    def call(
        self, script: Script, keys: Sequence[str], args: Sequence[Arg],
        on_error: Callable[[Exception], None] | None = None,
    ) -> Call:  # fmt: skip
        """Queue a call for this turn's write. With `on_error`, nobody waits for its answer
        (a failure goes to `on_error`), and its script is loaded ahead of its first such
        call: a NOSCRIPT retry would put the call behind calls written after it."""
        if on_error is not None and script.sha not in self._preloaded:
            self._preloaded.add(script.sha)
            self._queue(Call(script, (), (), load=True))
        return self._queue(Call(script, keys, args, on_error=on_error))

    def _queue(self, c: Call) -> Call:
        """Add a call to this turn's write (the first one queues the flush)."""
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(c)
        return c

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if self.error is not None:
            self._fail(batch, self.error)
            return
        self._write(batch)

    def _write(self, batch: list[Call]) -> None:
        for c in batch:
            c.written = True
        self._writer.write(b"".join([c.packed() for c in batch]))
        self._waiting.extend(batch)
        asyncio.get_running_loop().call_later(self._timeout, self._late, batch[-1])

    def _late(self, last: Call) -> None:
        if not last.answered and self.error is None:
            self._end(LimiterUnavailable(f"no answer from Redis within {self._timeout:g} s"))

    async def _read(self) -> None:
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    raise ConnectionError("Redis closed the connection")
                self._parser.feed(data)
                while (reply := self._parser.gets()) is not False:
                    self._answer(self._waiting.popleft(), reply)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._end(LimiterUnavailable(f"{type(e).__name__}: {e}"))

    def _answer(self, c: Call, reply: Any) -> None:
        if c.load:
            c.answered = True
            self._loading.discard(c.script.sha)
            return
        if isinstance(reply, hiredis.ReplyError):
            if str(reply).startswith("NOSCRIPT") and not c.retried:
                # Replies come in order: the calls sent before the script's body get
                # NOSCRIPT before it is loaded, and go again after it, by SHA.
                c.retried = True
                batch = [c]
                if c.script.sha not in self._loading:
                    self._loading.add(c.script.sha)
                    batch.insert(0, Call(c.script, (), (), load=True))
                self._write(batch)
                return
            reply = LimiterUnavailable(f"ResponseError: {reply}")
        if isinstance(reply, Exception):
            c.fail(reply)
            return
        c.answered = True
        if c.future is not None and not c.future.done():  # else: nobody waits, or gave up
            c.future.set_result(reply)

    def _fail(self, calls: Sequence[Call], error: Exception) -> None:
        for c in calls:
            c.fail(error)

    def _end(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
            self._writer.close()
            if asyncio.current_task() is not self._task:
                self._task.cancel()
        waiting, self._waiting = list(self._waiting), deque()
        self._fail(waiting, error)

    async def close(self) -> None:
        for c in self._waiting:  # written: Redis runs them; their replies are not needed
            c.on_error = None
        self._end(LimiterUnavailable("closed"))
        pending, self._pending = self._pending, []
        self._fail(pending, LimiterUnavailable("closed"))
        await self._conn.disconnect()


class RedisScripts:
    def __init__(self, url: str, timeout_s: float = 1.0, mode: Mode = "auto") -> None:
        self.url = url
        self.timeout = timeout_s
        self.mode = mode
        self._client: aredis.Redis | RedisCluster | None = None
        self._connecting = asyncio.Lock()
        self._pending: list[Call] = []
        self._in_flight = 0  # calls and pipelines sent and not yet answered
        self._sending: set[asyncio.Task[None]] = set()
        self._line: _Line | None = None  # one server's: the calls' own connection
        self._opening = asyncio.Lock()

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

    async def _open_line(self) -> _Line | None:
        """The line to one server (None: a Cluster's calls go through redis-py)."""
        client = await self._connect()
        if isinstance(client, RedisCluster):
            return None
        async with self._opening:
            line = self._line
            if line is None or line.error is not None:
                try:
                    line = self._line = await _Line.open(client, self.timeout)
                except (RedisError, OSError) as e:
                    raise LimiterUnavailable(f"{type(e).__name__}: {e}") from None
            return line

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """The script's answer. Calls made in the same turn of the event loop go out in one
        write."""
        line = self._line
        if line is None or line.error is not None:
            line = await self._open_line()
        if line is not None:
            future = line.call(script, keys, args).future
            assert future is not None
            return await future
        return await self._run_pipelined(script, keys, args)

    async def send(
        self, script: Script, keys: Sequence[str], args: Sequence[Arg],
        on_error: Callable[[Exception], None],
    ) -> None:  # fmt: skip
        """A call whose answer nobody waits for. On one server it has been written when
        this returns, so that what follows it (an answer's last bytes) goes after it
        without waiting a round trip for Redis's reply: the client's next call, on any
        replica, reaches Redis after it. The caller yields to the loop once, for the
        turn's write (the flush was queued before its wake-up), so that the calls of
        one turn still share one write. On a Cluster it is awaited like `run`. A failure
        known before this returns is raised, like `run`'s; one that comes with the reply
        goes to `on_error`."""
        line = self._line
        if line is None or line.error is not None:
            line = await self._open_line()
        if line is not None:
            line.call(script, keys, args, on_error)
            await asyncio.sleep(0)
            return
        await self._run_pipelined(script, keys, args)

    def queue(
        self, script: Script, keys: Sequence[str], args: list[Arg],
        on_error: Callable[[Exception], None] | None = None,
    ) -> Call | None:  # fmt: skip
        """A call queued for this turn's write on the open line to one server, like `run`
        (its answer in its `future`) or, with `on_error`, like `send` (the caller then
        yields once). Until it is written (`written`) the caller may add to its `args`.
        None when no line is open (not yet, failed, or a Cluster): use `run` or `send`."""
        line = self._line
        if line is None or line.error is not None:
            return None
        return line.call(script, keys, args, on_error)

    async def _run_pipelined(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """On a Cluster: a call made while none is in flight goes at once; calls made while
        others are in flight go out together in the next pipeline."""
        if self._in_flight or self._pending or self._client is None:
            call = Call(script, keys, args)
            if not self._pending:
                asyncio.get_running_loop().call_soon(self._flush)
            self._pending.append(call)
            assert call.future is not None
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

    async def _send(self, batch: list[Call]) -> None:
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
            call.fail(failed)

    async def _answer(self, client: aredis.Redis | RedisCluster, batch: list[Call]) -> None:
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
            if isinstance(result, Exception):
                call.fail(LimiterUnavailable(f"{type(result).__name__}: {result}"))
            elif call.future is not None and not call.future.done():
                call.answered = True
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
        line, self._line = self._line, None
        if line is not None:
            await line.close()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
