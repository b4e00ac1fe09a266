"""An exclusive, non-blocking lock on a file: held by one process, released by the kernel
when that process dies (so a `kill -9` never leaves a stale lock)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def try_lock(path: Path) -> int | None:
    """Create and lock `path`; the open descriptor holds the lock (close it to release).
    None when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
