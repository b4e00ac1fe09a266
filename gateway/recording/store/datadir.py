"""Ownership of the embedded store's data directory.

chDB is an engine inside one process: two processes opening the same directory would each
see a stale picture. The serving gateway holds an exclusive lock on `gateway.lock` and
writes where it listens, with a random admin token, to `gateway.json` (mode 0600); the
`sql` and `migrate` commands then go through the running gateway instead of opening the
directory themselves.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import StoreBusy
from gateway.recording.filelock import try_lock

LOCK_FILE = "gateway.lock"
INFO_FILE = "gateway.json"


@dataclass(frozen=True, slots=True)
class RunningGateway:
    pid: int
    url: str
    token: str


class DataDirLock:
    def __init__(self, path: str) -> None:
        self.dir = Path(path).resolve()
        self._fd: int | None = None

    def acquire(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # Captured bodies live here: private to the gateway's user, even in a directory made
        # before (or by another tool with a looser umask).
        self.dir.chmod(0o700)
        fd = try_lock(self.dir / LOCK_FILE)
        if fd is None:
            running = running_gateway(str(self.dir))
            who = f" (gateway pid {running.pid} at {running.url})" if running else ""
            raise StoreBusy(f"the data directory {self.dir} is in use by another process{who}")
        self._fd = fd

    def publish(self, url: str) -> str:
        """Write where this gateway listens; returns the admin token."""
        token = secrets.token_urlsafe(24)
        info = self.dir / INFO_FILE
        tmp = info.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "url": url, "token": token}, f)
        os.replace(tmp, info)
        return token

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                (self.dir / INFO_FILE).unlink()
            os.close(self._fd)
            self._fd = None


def has_store(path: str, database: str) -> bool:
    """Whether the directory holds the embedded store with the gateway's database, judged
    from ClickHouse's own layout (`metadata/<database>.sql`) without opening it: opening
    creates the engine's files."""
    meta = Path(path) / "metadata"
    return (meta / f"{database}.sql").is_file() or (meta / database).is_dir()


def _locked(path: Path) -> bool:
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def running_gateway(path: str) -> RunningGateway | None:
    """The gateway serving this data directory, if one is running."""
    d = Path(path).resolve()
    if not _locked(d):
        return None
    try:
        info = json.loads((d / INFO_FILE).read_text())
        return RunningGateway(int(info["pid"]), str(info["url"]), str(info["token"]))
    except (OSError, ValueError, KeyError):
        return None
