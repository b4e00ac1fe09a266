"""The shared limits on a real three-node Redis Cluster: the client finds out it is one, a
key's counters stay in one slot (hash tag), keys whose slots live on different nodes are
counted where they live, and a slot moved to another node while the gateway runs is
followed (MOVED) with its counters."""

from __future__ import annotations

import binascii
from collections.abc import Iterator

import pytest

from gateway.access.keys import GatewayKey, Limits, hash_secret, new_secret
from gateway.access.policy import period_id
from gateway.access.redis_limiter import RedisLimiter
from tests.redisproc import RedisClusterServers


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers() as c:
        yield c


def key(key_id: str, **limits: object) -> GatewayKey:
    return GatewayKey(key_id=key_id, name=key_id, key_hash=hash_secret(new_secret()),
                      limits=Limits(**limits))  # type: ignore[arg-type]  # fmt: skip


def slot(name: str) -> int:
    """Redis Cluster's slot of a key (CRC16/XMODEM of its hash tag, mod 16384)."""
    tag = name[name.index("{") + 1 : name.index("}")] if "{" in name else name
    return binascii.crc_hqx(tag.encode(), 0) % 16384


def keys_on_each_node(cluster: RedisClusterServers, n: int = 3) -> list[GatewayKey]:
    """Gateway keys whose counters live on each node of the cluster."""
    found: dict[int, GatewayKey] = {}
    i = 0
    while len(found) < len(cluster.nodes):
        k = key(f"key_{i}", rpm=n)
        found.setdefault(cluster.owner(slot(f"lgw:{{{k.key_id}}}:rpm")).port, k)
        i += 1
    return list(found.values())


async def test_cluster_is_discovered_and_each_key_counted_on_its_node(cluster):
    lim = RedisLimiter(cluster.url, "closed")  # mode auto: asks the server
    try:
        spread = keys_on_each_node(cluster)
        for k in spread:
            got = [await lim.admit(k, "alice", 0) for _ in range(4)]
            assert [a.ok for a in got] == [True, True, True, False], got[-1].refusal
        assert lim._client.cluster
        # Every counter of a key, the user's too, hashes to the key's slot: one script.
        k = spread[0]
        names = lim._keys(k, "alice", period_id("month"))
        assert len({slot(n) for n in names}) == 1
        # ... and the nodes hold them where the slots say
        for k in spread:
            node = cluster.owner(slot(f"lgw:{{{k.key_id}}}:rpm"))
            assert cluster.command(node, "EXISTS", f"lgw:{{{k.key_id}}}:rpm") == "1"
            others = [n for n in cluster.nodes if n is not node]
            assert all(cluster.command(o, "EXISTS", f"lgw:{{{k.key_id}}}:rpm").startswith("MOVED")
                       for o in others)  # fmt: skip
    finally:
        await lim.close()


async def test_a_slot_moved_to_another_node_is_followed_with_its_counters(cluster):
    lim = RedisLimiter(cluster.url, "closed", mode="cluster")
    try:
        k = key("key_moving", rpm=3, budget_usd=1.0)
        s = slot(f"lgw:{{{k.key_id}}}:rpm")
        assert (await lim.admit(k, "", 0)).ok and (await lim.admit(k, "", 0)).ok
        a = await lim.admit(k, "", 0)
        await lim.settle(a, 0, 0.25)
        before = cluster.owner(s)
        after = next(n for n in cluster.nodes if n is not before)
        cluster.move_slot(s, after)  # the client still thinks `before` serves it: MOVED
        assert cluster.owner(s) is after
        refused = await lim.admit(k, "", 0)  # the bucket moved with the slot: still empty
        assert not refused.ok and refused.refusal == "rpm"
        assert await lim.spent(k) == pytest.approx(0.25)
        assert lim.failures == 0  # a redirect is not a failure
        assert cluster.command(after, "EXISTS", f"lgw:{{{k.key_id}}}:rpm") == "1"
        # the node the client first asked now redirects whoever asks it
        assert cluster.command(before, "EXISTS", f"lgw:{{{k.key_id}}}:rpm").startswith("MOVED")
    finally:
        await lim.close()


async def test_a_busy_key_is_leased_on_a_cluster_too(cluster):
    lim = RedisLimiter(cluster.url, "closed")
    try:
        k = key("key_leased", rpm=1600, concurrency=64)
        got = [await lim.admit(k, "", 0) for _ in range(5)]
        assert all(a.ok and a.lease is not None for a in got)
        node = cluster.owner(slot(f"lgw:{{{k.key_id}}}:slots"))
        assert cluster.command(node, "ZCARD", f"lgw:{{{k.key_id}}}:slots") == "8"
        assert float(cluster.command(node, "HGET", f"lgw:{{{k.key_id}}}:rpm", "l")) < 1600 - 99
    finally:
        await lim.close()
