"""A real `redis-server` (Debian's package) in a child process, on a free port and a
temporary directory, for the tests of the shared limits. `stop()` and `start()` simulate
an outage; the data is not persisted across them."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType

from tests.prereqs import program


def require_redis() -> str:
    return program("redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randrange(20000, 50000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisServer:
    def __init__(self, *args: str) -> None:
        self.args = args  # extra redis-server options, e.g. "--requirepass", "s3cret"
        self.binary = require_redis()
        self.dir = tempfile.mkdtemp(prefix="redis-test-")
        self.port = _free_cluster_port() if "--cluster-enabled" in args else _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "no", "--protected-mode", "yes", *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64)[:1] in (b"+", b"-"):  # PONG, or NOAUTH: it answers
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisClusterServers:
    """A real three-node Redis Cluster (`--cluster-enabled yes` x3, then `redis-cli --cluster
    create ... --cluster-replicas 0`): every slot has one primary, no replicas."""

    def __init__(self, nodes: int = 3) -> None:
        self.nodes = [RedisServer("--cluster-enabled", "yes", "--cluster-config-file",
                                  "nodes.conf", "--cluster-node-timeout", "5000")
                      for _ in range(nodes)]  # fmt: skip
        self.cli: str | None = None

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def command(self, node: RedisServer, *args: str) -> str:
        assert self.cli is not None
        out = subprocess.run([self.cli, "-p", str(node.port), *args], capture_output=True,
                             text=True, timeout=30, check=True)  # fmt: skip
        return out.stdout.strip()

    def start(self) -> RedisClusterServers:
        self.cli = program("redis-cli")
        for n in self.nodes:
            n.start()
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        self.command(self.nodes[0], "--cluster", "create", *addrs, "--cluster-replicas", "0",
                     "--cluster-yes")  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in self.command(n, "CLUSTER", "INFO") for n in self.nodes):
                return self
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not become ready")

    def node_id(self, node: RedisServer) -> str:
        return self.command(node, "CLUSTER", "MYID")

    def owner(self, slot: int) -> RedisServer:
        """The node serving `slot` (as the cluster itself says)."""
        for line in self.command(self.nodes[0], "CLUSTER", "NODES").splitlines():
            parts = line.split()
            port = int(parts[1].split(":")[1].split("@")[0])
            for r in parts[8:]:
                lo, _, hi = r.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(slot)

    def move_slot(self, slot: int, to: RedisServer) -> None:
        """Migrate `slot` with its keys to node `to`, as `redis-cli --cluster reshard` does."""
        src = self.owner(slot)
        src_id, dst_id = self.node_id(src), self.node_id(to)
        self.command(to, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", src_id)
        self.command(src, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", dst_id)
        keys = self.command(src, "CLUSTER", "GETKEYSINSLOT", str(slot), "1000").split()
        if keys:
            self.command(src, "MIGRATE", "127.0.0.1", str(to.port), "", "0", "5000", "KEYS", *keys)
        for n in self.nodes:
            self.command(n, "CLUSTER", "SETSLOT", str(slot), "NODE", dst_id)

    def stop(self) -> None:
        for n in self.nodes:
            n.__exit__(None, None, None)

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
