"""Gateway overhead benchmark: upstream direct vs trivial Litestar pass-through vs gateway.

    .venv/bin/python bench/run.py [--duration 10] [--only gateway,baseline] [--no-stream]
                                  [--rounds 3] [--paired 5]

Targets run one at a time against the same canned upstream (bench/upstream.py). For each,
wrk measures req/s at c=32 and latency at c=1, non-streamed (and streamed unless
--no-stream). Prints a table and the two headline ratios; writes bench/results/latest.json.
With --paired N, each on/off pair of targets is also measured side by side (bench/paired.py).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ttfb
from paired import Side, measure_pair, warm
from wrk import WrkResult, run_wrk, wrk_path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
TARGETS = (
    "upstream",
    "baseline",
    "baseline-httpx",
    "gateway",
    "gateway-nolog",
    "gateway-nometrics",
    "gateway-traced",
    "gateway-norecord",
    "gateway-experiment",
    "gateway-keys",
    "gateway-keys-redis",
    "gateway-cache-hit",
    "gateway-cache-miss",
    "gateway-base",
    "gateway-granian",
    "gateway-h11",
)
# Targets that are the gateway (recording on) with one thing changed, and what they compare
# with: (headline key, with, without).
PAIRS = (
    ("log", "gateway", "gateway-nolog"),
    ("metrics", "gateway", "gateway-nometrics"),
    ("tracing", "gateway-traced", "gateway"),
    ("experiment", "gateway-experiment", "gateway"),
    ("keys", "gateway-keys", "gateway"),
    ("keys_redis", "gateway-keys-redis", "gateway"),
    ("this_checkout", "gateway", "gateway-base"),
    ("granian", "gateway-granian", "gateway"),
    ("h11", "gateway-h11", "gateway"),
)
# Side by side only: the gateway beside a second copy of itself. What a pair's ratio moves
# by when nothing differs, the yardstick for the other pairs' few per cent.
SAME_PAIR = ("same", "gateway", "gateway")
HIGH_C, WARMUP_S = 32, 2.0
RATIO_TARGET, ADDED_MS_TARGET = 1.5, 0.3
TTFB_ADDED_MS_TARGET, TTFB_CALLS = 0.5, 1000
CACHE_RATIO_TARGET, CACHE_ADDED_MS_TARGET = 3.0, 0.2  # hits vs misses; a hit vs upstream
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 20) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def cpu_ticks(self, thread: bool = False) -> int:
        """utime+stime of the process (the target is one process; chDB runs in it), or of
        its main thread alone (the gateway's event loop)."""
        pid = self.popen.pid
        stat = f"/proc/{pid}/task/{pid}/stat" if thread else f"/proc/{pid}/stat"
        try:
            f = Path(stat).read_text().rsplit(")", 1)[1].split()
            return int(f[11]) + int(f[12])
        except (OSError, IndexError, ValueError):
            return 0


@dataclass
class Target:
    name: str
    url: str
    procs: list[Proc] = field(default_factory=list)
    config: Path | None = None
    key: str = ""  # the gateway key wrk sends (gateway-keys targets)
    cache: str = ""  # hit | miss: what wrk asks of the response cache (gateway-cache-*)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(name: str, cmd: list[str], tmp: Path, env: dict[str, str] | None = None) -> Proc:
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        p = subprocess.Popen(
            cmd,
            cwd=tmp,  # whatever a server writes relative to its cwd stays in the temp dir
            env={**ENV, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Proc(name, p, log)


def stop(proc: Proc, grace: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not exited."""
    if proc.popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGTERM)
        try:
            proc.popen.wait(grace)
        except subprocess.TimeoutExpired:
            print(f"  {proc.name}: no exit {grace}s after SIGTERM, killing", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.popen.pid, signal.SIGKILL)  # stragglers in the group, if any
    proc.popen.wait()


def wait_ready(proc: Proc, url: str, want_200: bool, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200 or not want_200:
                    return
        except urllib.error.HTTPError:
            if not want_200:
                return  # it answers HTTP: up
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready after {timeout}s:\n{proc.tail()}")


def gateway_cli() -> list[str]:
    script = Path(PY).with_name("llm-gateway")
    return [str(script)] if script.exists() else [PY, "-m", "gateway.cli"]


# Limits high enough never to refuse, so that every call pays for checking and charging them.
KEY_LIMITS = "rpm: 100000000, tpm: 1000000000000, concurrency: 100000"


def gateway_yaml(
    tmp: Path, name: str, upstream_port: int, key: str = "", redis_url: str = "", run: str = ""
) -> Path:
    """gateway: recording on (durable log + chDB); gateway-nolog: recording on, the log off
    (records held in memory); gateway-norecord: nothing recorded; gateway-keys(-redis): as
    gateway, with `auth.require_key` and a key with RPM/TPM/concurrency limits (counters in
    memory, or in a local redis-server); gateway-cache-hit/-miss: as gateway, with the
    response cache on (the same request repeated, or a new one each time)."""
    store = (
        "{kind: disabled}"
        if name == "gateway-norecord"
        else f"{{kind: chdb, path: {tmp / (name + run) / 'data'}, flush_interval_ms: 200}}"
    )
    log = "log: {enabled: false}\n" if name == "gateway-nolog" else ""
    if name == "gateway-nometrics":
        log += "metrics: {enabled: false}\n"
    if name == "gateway-experiment":  # every call assigned (by request id) to a variant
        log += (
            "experiments:\n  bench:\n    unit: request\n    variants:\n"
            "      - {name: a, model: gpt-4o-mini}\n"
            "      - {name: b, model: gpt-4o-mini, properties: {prompt: v2}}\n"
        )
    if key:
        redis = f", redis_url: {redis_url}" if redis_url else ""
        log += (f"auth: {{require_key: true{redis}, keys: "
                f"[{{name: bench, key: {key}, {KEY_LIMITS}}}]}}\n")  # fmt: skip
    if name.startswith("gateway-cache"):  # the bench's calls have a temperature of 0.2
        log += "cache: {enabled: true, sampled: true}\n"
    cfg = tmp / f"{name}{run}.yaml"
    cfg.write_text(
        f"store: {store}\n" + log + "providers:\n"
        f'  canned: {{kind: openai, base_url: "http://127.0.0.1:{upstream_port}/v1", '
        'api_key: "sk-bench", price_as: openai}\n'
        "routes:\n"
        '  - {match: "*", provider: canned}\n'
    )
    return cfg


@contextlib.contextmanager
def launch(
    name: str, tmp: Path, upstream_port: int, run: str = "", base: str = ""
) -> Iterator[Target]:
    """Start a target (the upstream itself needs nothing) and stop it afterwards; `run` tells
    rounds apart (each has its own data directory), `base` is gateway-base's checkout."""
    port = free_port()
    t = Target(name, f"http://127.0.0.1:{port}")
    up = f"http://127.0.0.1:{upstream_port}/v1"
    try:
        if name == "upstream":
            t.url = f"http://127.0.0.1:{upstream_port}"
        elif name.startswith("baseline"):
            tr = "httpx" if name == "baseline-httpx" else "aiohttp"
            cmd = [
                PY,
                str(BENCH / "baseline.py"),
                "--port",
                str(port),
                "--upstream",
                up,
                "--transport",
                tr,
            ]
            t.procs.append(start(name, cmd, tmp))
            wait_ready(t.procs[0], t.url + "/", want_200=False)
        else:
            redis_url = ""
            if name.startswith("gateway-keys"):
                t.key = "lgw_" + secrets.token_urlsafe(32)
            if name.startswith("gateway-cache"):
                t.cache = name.rsplit("-", 1)[1]
            if name == "gateway-keys-redis":
                redis_port = free_port()
                redis_cmd = [shutil.which("redis-server") or "redis-server", "--port",
                             str(redis_port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp)]  # fmt: skip
                t.procs.append(start("redis", redis_cmd, tmp))
                redis_url = f"redis://127.0.0.1:{redis_port}/0"
            t.config = gateway_yaml(tmp, name, upstream_port, t.key, redis_url, run)
            cmd = [*gateway_cli(), "serve", "--config", str(t.config), "--port", str(port)]
            env = None
            if name == "gateway-base":  # the same gateway from another checkout
                cmd = [PY, "-m", "gateway.cli", *cmd[-5:]]
                env = {"PYTHONPATH": str(Path(base).resolve())}
            elif name in ("gateway-granian", "gateway-h11"):  # the app under another server
                server = name.removeprefix("gateway-")
                cmd = [PY, str(BENCH / "serve_alt.py"), server, str(t.config), str(port)]
            if name == "gateway-traced":  # spans exported over OTLP/HTTP to a local sink
                sink_port = free_port()
                sink = [PY, str(BENCH / "otlp_sink.py"), "--port", str(sink_port)]
                t.procs.append(start("otlp-sink", sink, tmp))
                env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"}
            # its own log (`run`): a side-by-side pair may be the same target twice
            t.procs.insert(0, start(name + run, cmd, tmp, env))
            wait_ready(t.procs[0], t.url + "/readyz", want_200=True)
        yield t
    finally:
        for p in t.procs:
            stop(p)


def measure(t: Target, procs: list[Proc], scenario: str, seconds: float) -> dict[str, WrkResult]:
    """warmup (c=32, discarded from the table), then c32 and c1; keys are the wrk app tags."""
    stream = scenario == "stream"
    out: dict[str, WrkResult] = {}
    for label, conns, secs in (
        ("warmup", HIGH_C, min(WARMUP_S, seconds)),
        ("c32", HIGH_C, seconds),
        ("c1", 1, seconds),
    ):
        ticks0 = sum(p.cpu_ticks() for p in procs)
        res, raw = run_wrk(
            t.url, conns, secs, stream=stream, app=f"bench-{scenario}-{label}", key=t.key,
            cache=t.cache,
        )  # fmt: skip
        ticks = sum(p.cpu_ticks() for p in procs) - ticks0
        res.cpu_pct = 100.0 * ticks / os.sysconf("SC_CLK_TCK") / res.duration_s
        out[label] = res
        if res.errors:
            print(
                f"  !! {t.name}/{scenario}/{label}: {res.non_2xx} non-2xx, socket errors "
                f"{res.socket_errors}\n{raw}",
                file=sys.stderr,
            )
        check_alive(t)
    return out


def check_alive(t: Target) -> None:
    for p in t.procs:
        if p.popen.poll() is not None:
            raise RuntimeError(f"{p.name} died (exit {p.popen.returncode}):\n{p.tail(40)}")


def sql(cfg: Path, query: str) -> str:
    r = subprocess.run(
        [*gateway_cli(), "sql", "--config", str(cfg), query],
        cwd=cfg.parent,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.returncode != 0:
        raise RuntimeError(f"llm-gateway sql failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def verify_recording(
    t: Target, runs: dict[str, dict[str, WrkResult]], up_port: int, hits0: int
) -> dict[str, object]:
    """Rows in llm_calls vs what wrk counted (warm-ups included) and the upstream got."""
    assert t.config is not None
    per_app = {f"bench-{s}-{k}": r for s, sc in runs.items() for k, r in sc.items()}
    wrk_total = sum(r.requests for r in per_app.values())
    q = "SELECT count() FROM llm_calls FORMAT TSV"
    rows, last, deadline = -1, -2, time.monotonic() + 20
    while time.monotonic() < deadline and (rows != last or rows < wrk_total):
        last = rows
        time.sleep(0.6)
        rows = int(sql(t.config, q).strip() or 0)
    by = sql(
        t.config,
        "SELECT app, status_code, outcome, count() FROM llm_calls "
        "GROUP BY ALL ORDER BY app, status_code FORMAT TSV",
    )
    breakdown: list[dict[str, object]] = []
    for ln in by.splitlines():
        app, status, outcome, n = ln.split("\t")
        w = per_app.get(app)
        breakdown.append(
            {
                "app": app,
                "status": int(status),
                "outcome": outcome,
                "rows": int(n),
                "wrk_requests": w.requests if w else None,
                "wrk_non_2xx": w.non_2xx if w else None,
            }
        )
    # wrk does not count requests still in flight when a run ends, the gateway records them
    # (as 200 ok or 499 client_disconnected): per run, 0 <= rows - wrk <= connections.
    mismatches = []
    for app, w in per_app.items():
        n = sum(int(str(b["rows"])) for b in breakdown if b["app"] == app)
        if not 0 <= n - w.requests <= w.connections:
            mismatches.append(f"{app}: {n} rows for {w.requests} wrk responses")
    mismatches += [f"unexpected app {b['app']!r}" for b in breakdown if b["app"] not in per_app]
    if rows != (calls := upstream_hits(up_port) - hits0):
        mismatches.append(f"{rows} rows but the upstream got {calls} calls")
    return {
        "consistent": not mismatches,
        "mismatches": mismatches,
        "rows": rows,
        "wrk_requests": wrk_total,
        "wrk_non_2xx": sum(r.non_2xx for r in per_app.values()),
        "rows_minus_wrk": rows - wrk_total,
        "by_app_status_outcome": breakdown,
    }


def log_problems(log: Path) -> list[str]:
    """Warning/error lines of a server's log (the gateway logs JSON, the others text)."""
    out = []
    for ln in log.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(ln)
        except ValueError:
            rec = None
        if isinstance(rec, dict):
            if str(rec.get("level", "")).lower() in ("warning", "error", "critical"):
                out.append(ln)
        elif any(k in ln for k in ("ERROR", "WARNING", "Traceback", "Error", "Exception")):
            out.append(ln)
    return out


def upstream_hits(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=5) as r:
        return int(json.load(r)["requests"])


def git_rev() -> str:
    r = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return r.stdout.strip()


def fmt(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


Runs = dict[str, dict[str, WrkResult]]  # scenario -> warmup | c32 | c1 -> result


def median_range(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": ordered[(len(ordered) - 1) // 2], "min": ordered[0], "max": ordered[-1]}


def cpu_us_per_call(r: WrkResult) -> float | None:
    """The target's CPU time per call in a run (µs): less disturbed than req/s by what else
    runs on a shared machine."""
    if r.cpu_pct is None or not r.rps:
        return None
    return r.cpu_pct / 100.0 / r.rps * 1e6


def cache_headline(rounds: dict[str, list[Runs]]) -> dict[str, object]:
    """The response cache's figures, per round (the targets ran interleaved), with their
    median and range: hits / misses req/s at c=32 (and CPU per call, misses / hits), and a
    hit's p50 at c=1 over the upstream served directly."""
    h: dict[str, object] = {}
    hits, misses, up = (rounds.get(n, []) for n in ("gateway-cache-hit", "gateway-cache-miss",
                                                     "upstream"))  # fmt: skip

    def rps_ratio(hit: dict[str, WrkResult], miss: dict[str, WrkResult]) -> float | None:
        return hit["c32"].rps / miss["c32"].rps if miss["c32"].rps else None

    def cpu_ratio(hit: dict[str, WrkResult], miss: dict[str, WrkResult]) -> float | None:
        h_cpu, m_cpu = cpu_us_per_call(hit["c32"]), cpu_us_per_call(miss["c32"])
        return m_cpu / h_cpu if h_cpu and m_cpu else None

    def added_p50(hit: dict[str, WrkResult], up: dict[str, WrkResult]) -> float | None:
        a, b = hit["c1"].p50_ms, up["c1"].p50_ms
        return a - b if a is not None and b is not None else None

    Figure = Callable[[dict[str, WrkResult], dict[str, WrkResult]], float | None]
    figures: list[tuple[str, list[Runs], Figure, str, bool]] = [
        ("hit_vs_miss_rps_ratio", misses, rps_ratio, f">= {CACHE_RATIO_TARGET}", True),
        ("miss_vs_hit_cpu_per_call_ratio", misses, cpu_ratio, "", True),
        ("hit_added_p50_ms", up, added_p50, f"<= {CACHE_ADDED_MS_TARGET}", False),
    ]
    for s in ("chat", "stream"):
        for key, others, figure, target, higher in figures:
            # the same round of each target (a run cut short may have fewer of one)
            values = [figure(x[s], o[s]) for x, o in zip(hits, others, strict=False)
                      if s in x and s in o]  # fmt: skip
            values = [v for v in values if v is not None]
            if not values:
                continue
            fig: dict[str, object] = {
                **{k: round(v, 3) for k, v in median_range(values).items()},
                "rounds": [round(v, 3) for v in values],
            }
            if target:
                limit = float(target.split()[1])
                median = median_range(values)["median"]
                fig |= {"target": target, "pass": median >= limit if higher else median <= limit}
            h[f"cache_{s}_{key}"] = fig
    return h


def table(
    results: dict[str, dict[str, dict[str, WrkResult]]], rounds: dict[str, list[Runs]]
) -> str:
    head = (
        "target",
        "scenario",
        "c32 req/s",
        "c32 p50",
        "c32 p99",
        "c32 cpu%",
        "c1 req/s",
        "c1 p50",
        "c1 p99",
        "errors",
        "c32 req/s range",
        "c1 p50 range",
    )
    rows = [head]
    for name, scen in results.items():
        for s, r in scen.items():
            hi, lo = r["c32"], r["c1"]  # the warm-up is in the JSON only
            all_rps = [x[s]["c32"].rps for x in rounds.get(name, [])]
            all_p50 = [x[s]["c1"].p50_ms or math.nan for x in rounds.get(name, [])]
            rows.append(
                (
                    name,
                    s,
                    fmt(hi.rps, 0),
                    fmt(hi.p50_ms),
                    fmt(hi.p99_ms),
                    fmt(hi.cpu_pct, 0),
                    fmt(lo.rps, 0),
                    fmt(lo.p50_ms, 3),
                    fmt(lo.p99_ms, 3),
                    str(sum(x[s][k].errors for x in rounds.get(name, []) for k in ("c32", "c1"))),
                    f"{min(all_rps):.0f}-{max(all_rps):.0f}" if len(all_rps) > 1 else "-",
                    f"{min(all_p50):.3f}-{max(all_p50):.3f}" if len(all_p50) > 1 else "-",
                )
            )
    w = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(r)) for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines) + (
        "\n(latencies in ms; errors = non-2xx + socket errors, over every round; with several"
        " rounds each figure is the median round's, beside the range over the rounds)"
    )


def headline(results: dict[str, dict[str, dict[str, WrkResult]]]) -> dict[str, object]:
    h: dict[str, object] = {}
    chat = {n: s["chat"] for n, s in results.items() if "chat" in s}
    if "gateway" in chat and "baseline" in chat and chat["baseline"]["c32"].rps:
        ratio = chat["gateway"]["c32"].rps / chat["baseline"]["c32"].rps
        h["throughput_ratio"] = {
            "value": round(ratio, 3),
            "target": f">= {RATIO_TARGET}",
            "pass": ratio >= RATIO_TARGET,
        }
    # What a feature costs on the request path: with it / without it, same run.
    for key, with_, without in PAIRS:
        if with_ in chat and without in chat and chat[without]["c32"].rps:
            on, off = chat[with_], chat[without]
            h[f"{key}_on_vs_off_rps_ratio"] = {"value": round(on["c32"].rps / off["c32"].rps, 3)}
            if on["c1"].p50_ms is not None and off["c1"].p50_ms is not None:
                h[f"{key}_added_p50_ms"] = {"value": round(on["c1"].p50_ms - off["c1"].p50_ms, 3)}
            # Calls per CPU-second of the target's processes (the gateway, and its Redis),
            # with / without: what the feature costs, less moved than req/s by the
            # machine's other work.
            cpu_on, cpu_off = cpu_us_per_call(on["c32"]), cpu_us_per_call(off["c32"])
            if cpu_on and cpu_off:
                h[f"{key}_on_vs_off_calls_per_cpu_s"] = {"value": round(cpu_off / cpu_on, 3)}
    gw = chat.get("gateway", {}).get("c1")
    for ref in ("upstream", "baseline"):
        base = chat.get(ref, {}).get("c1")
        if gw and base and gw.p50_ms is not None and base.p50_ms is not None:
            added = gw.p50_ms - base.p50_ms
            key = "added_p50_ms" if ref == "upstream" else "added_p50_ms_vs_baseline"
            h[key] = {"value": round(added, 3)}
            if ref == "upstream":
                h[key] |= {"target": f"<= {ADDED_MS_TARGET}", "pass": added <= ADDED_MS_TARGET}
    return h


def ttfb_headline(firsts: dict[str, list[float]]) -> dict[str, object]:
    """What the gateway adds to a stream's time to first byte (bench/ttfb.py, c=1), per
    round (the targets ran interleaved) and the median."""
    if not firsts.get("gateway") or not firsts.get("upstream"):
        return {}
    added = [g - u for g, u in zip(firsts["gateway"], firsts["upstream"], strict=False)]
    value = statistics.median(added)
    return {"stream_added_ttfb_ms": {
        "value": round(value, 3), "rounds": [round(v, 3) for v in added],
        "target": f"<= {TTFB_ADDED_MS_TARGET}", "pass": value <= TTFB_ADDED_MS_TARGET,
    }}  # fmt: skip


def median_round(
    rounds: list[dict[str, dict[str, dict[str, WrkResult]]]],
) -> dict[str, dict[str, dict[str, WrkResult]]]:
    """Per target and scenario, the round whose c=32 req/s is the median (for the table)."""
    out: dict[str, dict[str, dict[str, WrkResult]]] = {}
    for name in rounds[0] if rounds else ():
        for s in rounds[0][name]:
            runs = sorted((r[name][s] for r in rounds), key=lambda x: x["c32"].rps)
            out.setdefault(name, {})[s] = runs[(len(runs) - 1) // 2]
    return out


def combined_headline(heads: list[dict[str, object]]) -> dict[str, object]:
    """The rounds' headlines as one: each figure's median, with every round's value."""
    if len(heads) == 1:
        return heads[0]
    out: dict[str, object] = {}
    for key in heads[0]:
        figs = [h[key] for h in heads if isinstance(h.get(key), dict)]
        values = sorted(float(f["value"]) for f in figs)  # type: ignore[index]
        fig = dict(figs[0])  # type: ignore[call-overload]
        fig["value"] = round(statistics.median(values), 3)
        fig["rounds"] = [f["value"] for f in figs]  # type: ignore[index]
        if "pass" in fig:
            fig["pass"] = all(f["pass"] for f in figs)  # type: ignore[index]
        out[key] = fig
    return out


def verdict(fig: dict[str, object], unit: str = "") -> str:
    if "target" not in fig:
        return ""
    return f"(target {fig['target']}{unit}: {'PASS' if fig['pass'] else 'FAIL'})"


def spread(fig: dict[str, object]) -> str:
    values = fig.get("rounds")
    if not isinstance(values, list):
        return ""
    return f" (rounds: {', '.join(f'{v:g}' for v in values)})"


def run_paired(
    names: list[str], tmp: Path, up_port: int, rounds: int, seconds: float, base: str
) -> dict[str, dict[str, object]]:
    """Each on/off pair whose targets both run, side by side (bench/paired.py): key ->
    figures."""
    out: dict[str, dict[str, object]] = {}
    for i, (key, with_, without) in enumerate((*PAIRS, SAME_PAIR)):
        if with_ not in names or without not in names:
            continue
        print(f"== {key}: {with_} beside {without} ({rounds} rounds)", file=sys.stderr, flush=True)
        with (  # each its own config and data (the same target twice for SAME_PAIR)
            launch(with_, tmp, up_port, f"-p{i}", base) as on,
            launch(without, tmp, up_port, f"-p{i}o", base) as off,
        ):
            sides = [  # procs[0] is the gateway (after it, its Redis)
                Side(t.name, t.url, t.key, lambda t=t: sum(p.cpu_ticks() for p in t.procs),
                     lambda t=t: t.procs[0].cpu_ticks(thread=True))
                for t in (on, off)
            ]  # fmt: skip
            warm(*sides, min(WARMUP_S, seconds))
            figs = measure_pair(*sides, rounds, seconds)
            check_alive(on)
            check_alive(off)
        if figs:
            out[key] = figs
            r, c, lp = figs["rps_ratio"], figs["calls_per_cpu_s"], figs["calls_per_loop_cpu_s"]
            assert isinstance(r, dict) and isinstance(c, dict) and isinstance(lp, dict)
            print(f"   req/s {r['value']:.3f} {r['rounds']}, per CPU-second {c['value']:.3f} "
                  f"{c['rounds']}, per event-loop CPU-second {lp['value']:.3f} {lp['rounds']}",
                  file=sys.stderr, flush=True)  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(TARGETS)}")
    ap.add_argument("--no-stream", action="store_true", help="skip the streaming scenario")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, chDB data)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="interleaved rounds (every target once per round: A B A B ...); "
                    "figures are medians, with the spread")  # fmt: skip
    ap.add_argument("--base", help="gateway-base's checkout (the gateway to compare with)")
    ap.add_argument("--paired", type=int, default=0, metavar="N",
                    help="also measure each on/off pair side by side, both loaded at once, "
                    "N rounds (bench/paired.py)")  # fmt: skip
    a = ap.parse_args()
    names = [n.strip() for n in a.only.split(",")] if a.only else list(TARGETS)
    if bad := [n for n in names if n not in TARGETS]:
        ap.error(f"unknown target(s) {bad}; choose from {', '.join(TARGETS)}")
    if "gateway-base" in names and not a.base:
        ap.error("gateway-base needs --base DIR (a checkout of the gateway)")
    wrk_path()
    scenarios = ["chat"] if a.no_stream else ["chat", "stream"]
    # A SIGTERM/SIGHUP to the runner must still stop the servers: make it an exception.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: sys.exit(128 + s))

    tmp = Path(tempfile.mkdtemp(prefix="llm-gw-bench-"))
    rounds: list[dict[str, dict[str, dict[str, WrkResult]]]] = []
    results: dict[str, dict[str, dict[str, WrkResult]]] = {}
    extra: dict[str, dict[str, object]] = {}
    paired: dict[str, dict[str, object]] = {}
    firsts: dict[str, list[float]] = {}  # time to first byte of a stream, p50 per round
    upstream: Proc | None = None
    try:
        up_port = free_port()
        upstream = start("upstream", [PY, str(BENCH / "upstream.py"), "--port", str(up_port)], tmp)
        wait_ready(upstream, f"http://127.0.0.1:{up_port}/_stats", want_200=True)
        for rnd in range(a.rounds):
            per_round: dict[str, dict[str, dict[str, WrkResult]]] = {}
            for name in names:
                tag = f" (round {rnd + 1} of {a.rounds})" if a.rounds > 1 else ""
                print(f"== {name}{tag}", file=sys.stderr, flush=True)
                hits0 = upstream_hits(up_port)
                with launch(name, tmp, up_port, f"-r{rnd}" if rnd else "", a.base or "") as t:
                    procs = t.procs or [upstream]
                    per_round[name] = {s: measure(t, procs, s, a.duration) for s in scenarios}
                    info: dict[str, object] = {}
                    if name == "gateway" and rnd == 0:
                        info["recording"] = verify_recording(t, per_round[name], up_port, hits0)
                    if "stream" in scenarios and name in ("upstream", "gateway"):
                        first = ttfb.measure(t.url, TTFB_CALLS, t.key or "sk-bench-client")
                        firsts.setdefault(name, []).append(first["ttfb_p50_ms"])
                info["upstream_hits"] = upstream_hits(up_port) - hits0
                for p in t.procs:
                    info["exit_code"] = p.popen.returncode
                    if noisy := log_problems(p.log):
                        info["log_problems"] = {"count": len(noisy), "first": noisy[:10]}
                extra.setdefault(name, info)
                for s, r in per_round[name].items():
                    print(
                        f"   {s}: c32 {r['c32'].rps:.0f} req/s, c1 p50 {fmt(r['c1'].p50_ms, 3)} ms",
                        file=sys.stderr,
                        flush=True,
                    )
            rounds.append(per_round)
        if a.paired:
            paired = run_paired(names, tmp, up_port, a.paired, a.duration, a.base or "")
        results = median_round(rounds)
        by_target = {n: [r[n] for r in rounds if n in r] for n in names}
    finally:
        if upstream is not None:
            stop(upstream)
        if a.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(table(results, by_target))
    h = combined_headline([headline(r) for r in rounds]) | cache_headline(by_target)
    h |= ttfb_headline(firsts)
    for key, figs in paired.items():
        for what, fig in figs.items():
            h[f"{key}_paired_{what}"] = fig
    print()
    if tr := h.get("throughput_ratio"):
        assert isinstance(tr, dict)
        print(f"(a) gateway / baseline req/s at c=32: {tr['value']:.3f}{spread(tr)}  {verdict(tr)}")
    if ad := h.get("added_p50_ms"):
        assert isinstance(ad, dict)
        print(
            f"(b) gateway p50 - upstream p50 at c=1: {ad['value']:+.3f} ms{spread(ad)}  "
            f"{verdict(ad, ' ms')}"
        )
    if av := h.get("added_p50_ms_vs_baseline"):
        assert isinstance(av, dict)
        print(f"    (info) gateway p50 - baseline p50 at c=1: {av['value']:+.3f} ms")
    for key, _, _ in PAIRS:
        if lr := h.get(f"{key}_on_vs_off_rps_ratio"):
            assert isinstance(lr, dict)
            lp = h.get(f"{key}_added_p50_ms", {"value": float("nan")})
            lc = h.get(f"{key}_on_vs_off_calls_per_cpu_s", {"value": float("nan")})
            assert isinstance(lp, dict) and isinstance(lc, dict)
            print(
                f"    {key} on / off, req/s at c=32: {lr['value']:.3f}{spread(lr)}; "
                f"calls per CPU-second: {lc['value']:.3f}{spread(lc)}; "
                f"added p50 at c=1: {lp['value']:+.3f} ms{spread(lp)}"
            )
    if paired:
        print("    side by side (both loaded at once, c=16 each; bench/paired.py):")
    for key, figs in paired.items():
        pr, pc, pl = figs["rps_ratio"], figs["calls_per_cpu_s"], figs["calls_per_loop_cpu_s"]
        assert isinstance(pr, dict) and isinstance(pc, dict) and isinstance(pl, dict)
        what = "the gateway beside itself (noise)" if key == SAME_PAIR[0] else f"{key} on / off"
        print(
            f"    {what}, req/s: {pr['value']:.3f}{spread(pr)}; "
            f"calls per CPU-second: {pc['value']:.3f}{spread(pc)}; "
            f"per event-loop CPU-second: {pl['value']:.3f}{spread(pl)}"
        )
    for s in ("chat", "stream"):
        for mark, key, what, unit in (
            ("c", "hit_vs_miss_rps_ratio", "cache hits / misses req/s at c=32", ""),
            ("d", "hit_added_p50_ms", "cache hit p50 - upstream p50 at c=1", " ms"),
            ("e", "miss_vs_hit_cpu_per_call_ratio", "CPU per call, cache misses / hits", ""),
        ):
            if fig := h.get(f"cache_{s}_{key}"):
                assert isinstance(fig, dict)
                print(
                    f"({mark}) {what} ({s}): median {fig['median']:.3f}{unit}, rounds "
                    f"{fig['rounds']}  {verdict(fig, unit)}"
                )
    if fig := h.get("stream_added_ttfb_ms"):
        assert isinstance(fig, dict)
        print(
            f"(f) gateway - upstream time to first byte of a stream at c=1, p50: "
            f"{fig['value']:+.3f} ms{spread(fig)}  {verdict(fig, ' ms')}"
        )
    for name, info in extra.items():
        if rec := info.get("recording"):
            assert isinstance(rec, dict)
            print(
                f"\nrecording ({name}): {rec['rows']} rows in llm_calls; wrk counted "
                f"{rec['wrk_requests']} responses ({rec['wrk_non_2xx']} non-2xx) over all its "
                f"runs, warm-ups included; the upstream got {info['upstream_hits']} calls"
            )
            consistency = (
                "consistent: every response wrk counted has its row; the extra rows are the"
                " requests in flight when a wrk run stopped"
                if rec["consistent"]
                else f"MISMATCH: {'; '.join(rec['mismatches'])}"
            )
            print(f"  {consistency}")
            print(f"  {'wrk run (app)':<22} {'wrk':>7} {'non2xx':>6} {'rows':>7}  rows by status")
            apps: dict[str, list[dict[str, object]]] = {}
            for row in rec["by_app_status_outcome"]:
                apps.setdefault(str(row["app"]), []).append(row)
            for app, rs in apps.items():
                detail = ", ".join(f"{r['status']} {r['outcome']}: {r['rows']}" for r in rs)
                n = sum(int(str(r["rows"])) for r in rs)
                wr, wn = rs[0]["wrk_requests"], rs[0]["wrk_non_2xx"]
                print(
                    f"  {app:<22} {wr if wr is not None else '-':>7} "
                    f"{wn if wn is not None else '-':>6} {n:>7}  {detail}"
                )
        if lp := info.get("log_problems"):
            assert isinstance(lp, dict)
            print(f"\n{name}: {lp['count']} suspicious log lines, first ones:")
            print("\n".join("  " + ln[:300] for ln in lp["first"]))

    out = BENCH / "results" / "latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "meta": {
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "duration_s": a.duration,
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "machine": platform.platform(),
                    "wrk_high_c": HIGH_C,
                    "rounds": a.rounds,
                    "paired_rounds": a.paired,
                    "git": git_rev(),
                },
                "headline": h,
                "results": {
                    n: {s: {k: r.as_dict() for k, r in sc.items()} for s, sc in v.items()}
                    for n, v in results.items()
                },
                "rounds": {
                    n: [
                        {s: {k: r.as_dict() for k, r in sc.items()} for s, sc in v.items()}
                        for v in rs
                    ]
                    for n, rs in by_target.items()
                },
                "ttfb_p50_ms": firsts,
                "targets": extra,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
