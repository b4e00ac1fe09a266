"""Request ids: the client's own when it sent a sane one, else a time-ordered UUIDv7."""

from __future__ import annotations

import os
import re
import time

# What a client-supplied id (request id, feedback event id) may look like.
CLIENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def valid_client_id(value: str) -> bool:
    return bool(value) and CLIENT_ID.fullmatch(value) is not None


class _Entropy:
    """The OS's random bytes, fetched 4 KiB at a time instead of one syscall per id; a
    forked child starts with none, so that no two processes hand out the same bits."""

    __slots__ = ("_at", "_buf")

    def __init__(self) -> None:
        self._buf, self._at = b"", 0

    def take(self, n: int) -> bytes:
        at = self._at
        if at + n > len(self._buf):
            self._buf, at = os.urandom(4096), 0
        self._at = at + n
        return self._buf[at : at + n]

    def clear(self) -> None:
        self._buf, self._at = b"", 0


_entropy = _Entropy()
os.register_at_fork(after_in_child=_entropy.clear)


def new_request_id() -> str:
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(_entropy.take(10), "big")  # 80 bits, 74 of them used
    n = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62
    n |= rand & 0x3FFF_FFFF_FFFF_FFFF
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class RequestIds:
    """The id each call is stored under. A client's `X-Request-Id` names its call, unless
    this process stored a call under it recently (an SDK retry that reuses its id, a client
    that sends a constant): the repeat gets a fresh id, so a request id names one call and
    feedback for it counts once. The client's id is kept with every call either way
    (`client_request_id`); the id used is returned in the response's `X-Request-Id`.

    Memory is bounded: the oldest ids are forgotten first (dicts keep insertion order).
    """

    __slots__ = ("_remember", "_seen")

    def __init__(self, remember: int = 100_000) -> None:
        self._remember = remember
        self._seen: dict[str, None] = {}

    def assign(self, client_id: str) -> str:
        if not client_id or client_id in self._seen:
            return new_request_id()
        if len(self._seen) >= self._remember:
            del self._seen[next(iter(self._seen))]
        self._seen[client_id] = None
        return client_id
