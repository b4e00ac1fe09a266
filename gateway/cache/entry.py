"""A stored answer: the upstream's answer as it came (a whole body, or a stream's chunks in
order), in the upstream's dialect, and when it was stored. The same bytes live in the
process and in Redis (MessagePack)."""

from __future__ import annotations

import msgspec

ENTRY_OVERHEAD = 200  # bytes a stored entry costs beyond its chunks (key, object, list)


class Entry(msgspec.Struct, array_like=True, frozen=True):
    stored_at: float  # epoch seconds
    expires_at: float
    stream: bool  # chunks of a stream, as received; else one whole body
    content_type: str
    chunks: list[bytes]

    @property
    def size(self) -> int:
        return sum(map(len, self.chunks)) + ENTRY_OVERHEAD


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Entry).decode


def encode(entry: Entry) -> bytes:
    return _encode(entry)


def decode(data: bytes) -> Entry | None:
    """The entry, or None for bytes that are not one (another version's, or damaged)."""
    try:
        return _decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
