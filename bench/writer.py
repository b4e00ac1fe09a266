"""Recording pipeline benchmark: how fast records are appended on the request path, how
many records/s the writer sustains into chDB and over ClickHouse's HTTP interface, and
what a row costs on disk with and without bodies.

    uv run python bench/writer.py [--records 100000]

Each scenario runs in its own process (chDB hosts one engine per process).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOW = time.time()
BODY_REQ = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant for a support desk. " * 8},
            {"role": "user", "content": "My order #12345 did not arrive, what can I do? " * 6},
        ],
    }
)
BODY_RESP = json.dumps(
    {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant",
                     "content": "I am sorry to hear that. Please check the tracking link. " * 10},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 180, "completion_tokens": 120, "total_tokens": 300},
    }
)  # fmt: skip


_WORDS = [
    "order",
    "delivery",
    "refund",
    "account",
    "password",
    "reset",
    "invoice",
    "shipping",
    "address",
    "tracking",
    "parcel",
    "warranty",
    "replacement",
    "broken",
    "screen",
    "battery",
    "charger",
    "subscription",
    "cancel",
    "renew",
    "discount",
    "coupon",
    "payment",
    "card",
    "declined",
    "bank",
    "transfer",
    "store",
    "pickup",
    "return",
    "label",
    "courier",
    "delay",
]


def _vary(body: str, i: int) -> str:
    """Bodies differ from call to call, as real conversations do (compression is honest)."""
    rng = random.Random(i)
    words = " ".join(rng.choice(_WORDS) for _ in range(len(body) // 14))
    return body[: len(body) // 3] + words


def make_record(i: int, bodies: bool):  # type: ignore[no-untyped-def]
    from gateway.recording.ids import new_request_id
    from gateway.recording.record import CallRecord

    return CallRecord(
        request_id=new_request_id(),
        started_at=NOW - i * 0.01,  # recent: older bodies would expire (TTL)
        app=f"app-{i % 5}",
        end_user=f"user-{i % 1000}",
        session_id=f"s-{i % 5000}",
        turn_index=i % 7,
        provider="openai",
        provider_kind="openai",
        endpoint="/v1/chat/completions",
        operation="chat",
        request_model="gpt-4o-mini",
        upstream_model="gpt-4o-mini",
        response_model="gpt-4o-mini-2024-07-18",
        response_id="chatcmpl-" + random.Random(i).randbytes(12).hex(),
        trace_id=random.Random(-i).randbytes(16).hex(),
        system_fingerprint="fp_44709d6fcb",
        stream=i % 2 == 0,
        status_code=200,
        finish_reason="stop",
        input_tokens=150 + i % 100,
        output_tokens=80 + i % 60,
        cache_read_tokens=(i % 3) * 64,
        latency_ms=random.Random(i).lognormvariate(6, 0.5),
        ttft_ms=random.Random(i + 1).lognormvariate(5, 0.4) if i % 2 == 0 else None,
        upstream_ms=random.Random(i).lognormvariate(6, 0.5) - 0.4,
        overhead_ms=random.Random(i + 2).uniform(0.2, 0.8),
        attempts=1,
        request_bytes=900,
        response_bytes=1200,
        user_agent="OpenAI/Python 2.0",
        properties={"prompt": f"v{i % 3}"},
        request_body=_vary(BODY_REQ, i) if bodies else "",
        response_body=_vary(BODY_RESP, i) if bodies else "",
    )


def scenario(kind: str, n: int, bodies: bool) -> dict[str, float]:
    from gateway.recording.log import RecordLog
    from gateway.recording.pricing import Pricer
    from gateway.recording.queue import LogQueue
    from gateway.recording.store import migrate
    from gateway.recording.writer import BatchWriter

    tmp = Path(tempfile.mkdtemp(prefix="gw-writer-bench-"))
    server = None
    if kind == "chdb":
        from gateway.recording.store.chdb_store import ChdbStore

        store = ChdbStore(str(tmp / "db"), "bench")
    else:
        from gateway.recording.store.clickhouse_store import ClickHouseStore
        from tests.chhttp import ChHttpServer

        server = ChHttpServer(str(tmp / "db")).start()
        store = ClickHouseStore(server.url, "default", "", "bench")
    migrate(store)
    rlog = RecordLog(tmp / "log", fsync_interval=1.0)
    rlog.open()
    writer = BatchWriter(store, LogQueue(rlog), Pricer(), {"openai": "openai"}, batch_size=5000)
    records = [make_record(i, bodies) for i in range(n)]
    t = time.perf_counter()
    for rec in records:
        writer.record(rec)
    append_s = time.perf_counter() - t
    t = time.perf_counter()
    while writer._flush_sync():
        pass
    write_s = time.perf_counter() - t
    store.command("OPTIMIZE TABLE bench.llm_calls FINAL")
    out = json.loads(
        store.query(
            "SELECT sum(rows) AS rows, sum(bytes_on_disk) AS bytes FROM system.parts "
            "WHERE database = 'bench' AND table = 'llm_calls' AND active"
        )
    )
    writer.queue.close()
    store.close()
    if server is not None:
        server.close()
    return {
        "records": n,
        "append_us_per_record": append_s / n * 1e6,
        "writer_records_per_s": n / write_s,
        "rows": float(out["rows"]),
        "bytes_per_row_on_disk": float(out["bytes"]) / max(float(out["rows"]), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--scenario", help=argparse.SUPPRESS)
    p.add_argument("--bodies", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.scenario:
        print(json.dumps(scenario(args.scenario, args.records, args.bodies)))
        return
    results = {}
    for kind in ("chdb", "http"):
        for bodies in (False, True):
            cmd = [sys.executable, __file__, "--scenario", kind, "--records", str(args.records)]
            out = subprocess.run(cmd + (["--bodies"] if bodies else []), check=True,
                                 capture_output=True, text=True, cwd=ROOT)  # fmt: skip
            results[f"{kind}{'+bodies' if bodies else ''}"] = json.loads(
                out.stdout.splitlines()[-1]
            )
    print(f"{'scenario':<14}{'append µs/rec':>15}{'writer rec/s':>15}{'bytes/row':>12}")
    for name, r in results.items():
        print(f"{name:<14}{r['append_us_per_record']:>15.2f}{r['writer_records_per_s']:>15,.0f}"
              f"{r['bytes_per_row_on_disk']:>12.1f}")  # fmt: skip
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "writer.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
