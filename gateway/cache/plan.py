"""One call's dealings with the response cache: its key, what it may do (look up, store),
what happened (the `X-Gateway-Cache` answer header and the row's `cache_status`), and, for
a miss whose answer is to be stored, the upstream's answer as it comes."""

from __future__ import annotations

HIT, MISS, BYPASS, REFRESH = "HIT", "MISS", "BYPASS", "REFRESH"


class Plan:
    __slots__ = ("chunks", "content_type", "key", "limit", "lookup", "max_age", "size",
                 "status", "store", "stream", "too_big", "ttl")  # fmt: skip

    def __init__(
        self,
        status: str = BYPASS,
        key: str = "",
        lookup: bool = False,
        store: bool = False,
        max_age: float | None = None,
        ttl: float = 0.0,
        limit: int = 0,
    ) -> None:
        self.status = status  # MISS or REFRESH until looked up; then HIT, MISS or BYPASS
        self.key = key
        self.lookup, self.store = lookup, store
        self.max_age = max_age  # seconds: an older answer is not served
        self.ttl = ttl
        self.limit = limit  # bytes: a larger answer is not stored
        self.chunks: list[bytes] = []
        self.size = 0
        self.too_big = False
        self.stream = False  # the upstream answered with a stream
        self.content_type = ""

    @property
    def header(self) -> tuple[bytes, bytes]:
        return (b"x-gateway-cache", self.status.encode())

    def bypass(self) -> None:
        """The cache is out of this call (Redis is unreachable)."""
        self.status, self.store = BYPASS, False

    def keep(self, chunk: bytes) -> None:
        """One piece of the upstream's answer, as it came."""
        if self.too_big:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            self.too_big, self.chunks = True, []
            return
        self.chunks.append(chunk)
