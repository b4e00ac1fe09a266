"""How many feedback events/s one gateway worker takes: wrk against POST /v1/feedback,
single events and batches of 50, recording into the embedded store.

    uv run python bench/feedback.py [--duration 10]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=int, default=10)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gw-fb-bench-"))
    cfg = tmp / "gw.yaml"
    cfg.write_text(f"store: {{kind: chdb, path: {tmp / 'data'}, flush_interval_ms: 200}}\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gw = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg), "--port", str(port)],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        for batch in (1, 50):
            env = {**os.environ, "WRK_BATCH": str(batch)}
            wrk = [
                "wrk",
                "-t2",
                "-c32",
                f"-d{args.duration}s",
                "-s",
                str(ROOT / "bench/feedback.lua"),
                url,
            ]
            out = subprocess.run(wrk, env=env, capture_output=True, text=True, check=True).stdout
            rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            print(f"batch {batch:>2}: {rps:8.0f} requests/s = {rps * batch:9.0f} events/s"
                  f"  (non-2xx: {non2xx.group(1) if non2xx else 0})")  # fmt: skip
    finally:
        gw.terminate()
        gw.wait(30)


if __name__ == "__main__":
    main()
