"""The /metrics series budget against a real gateway process: 10,000 calls, each naming its
own model and app (served: a glob route passes the names on), leave /metrics under 1 MB,
`promtool check metrics` clean, and a real Prometheus scrapes it whole; the folded label
sets are counted. The `model` label is the model that served the call."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import httpx
import yaml

from tests.conftest import GatewayProcess, free_port, gateway_config
from tests.prereqs import program

MSG = [{"role": "user", "content": "hi"}]
CALLS = 10_000


def flood(url: str, n: int) -> list[int]:
    async def run() -> list[int]:
        sem = asyncio.Semaphore(32)
        async with httpx.AsyncClient(base_url=url, timeout=60,
                                     limits=httpx.Limits(max_connections=32)) as c:  # fmt: skip

            async def one(i: int) -> int:
                async with sem:
                    r = await c.post("/v1/chat/completions",
                                     json={"model": f"gpt-flood-{i}", "messages": MSG},
                                     headers={"X-Gateway-App": f"app-{i}"})  # fmt: skip
                    return r.status_code

            return list(await asyncio.gather(*(one(i) for i in range(n))))

    return asyncio.run(run())


def samples(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def scrape_with_prometheus(target: str, workdir: Path) -> dict[str, float]:
    """One real Prometheus scraping `target` (host:port): what its own `up` and
    `scrape_samples_scraped` say after a scrape."""
    workdir.mkdir()
    job = {"job_name": "gw", "static_configs": [{"targets": [target]}]}
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [job]}
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [program("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
         f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = {}
            for q in ('up{job="gw"}', 'scrape_samples_scraped{job="gw"}'):
                try:
                    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode(
                        {"query": q}
                    )
                    with urllib.request.urlopen(url, timeout=5) as r:
                        result = json.loads(r.read())["data"]["result"]
                except OSError:
                    result = []
                if result:
                    out[q.split("{")[0]] = float(result[0]["value"][1])
            if len(out) == 2:
                return out
            time.sleep(0.5)
        raise AssertionError("prometheus never scraped the gateway")
    finally:
        proc.terminate()
        proc.wait(10)


def test_series_budget_after_10000_distinct_models_and_apps(fake, selfhosted, tmp_path: Path):
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["store"] = {"kind": "disabled"}  # the series are the point; nothing to record
    gw = GatewayProcess(cfg, tmp_path).start()
    try:
        codes = flood(gw.url, CALLS)
        assert codes.count(200) == CALLS
        body = httpx.get(gw.url + "/metrics").content
        assert len(body) < 1_000_000, len(body)
        text = body.decode()
        lines = samples(text)
        # The budget (2,000 by default) and the folded "other" sets past it.
        assert len(lines) < 2_600, len(lines)
        folded = [ln for ln in lines if ln.startswith("gateway_metric_series_folded_total")]
        assert folded and sum(float(ln.rsplit(" ", 1)[1]) for ln in folded) > 0
        assert 'gen_ai_request_model="other"' in text and 'app="other"' in text
        # The served model: the fake answers gpt-flood-<i> as routed, so a kept label is one
        # of the names sent upstream.
        assert 'gen_ai_request_model="gpt-flood-' in text
        check = subprocess.run([program("promtool"), "check", "metrics"], input=body,
                               capture_output=True, timeout=60)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        scraped = scrape_with_prometheus(gw.url.removeprefix("http://"), tmp_path / "prom")
        assert scraped["up"] == 1
        assert scraped["scrape_samples_scraped"] >= len(lines)
    finally:
        gw.stop()
