"""Request ids: the client's own when it sent a sane one, else a time-ordered UUIDv7."""

from __future__ import annotations

import os
import re
import time

# What a client-supplied id (request id, feedback event id) may look like.
CLIENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def valid_client_id(value: str) -> bool:
    return bool(value) and CLIENT_ID.fullmatch(value) is not None


def new_request_id() -> str:
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 of them used
    n = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62
    n |= rand & 0x3FFF_FFFF_FFFF_FFFF
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
