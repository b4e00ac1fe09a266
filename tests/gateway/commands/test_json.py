"""`--json` on every report and listing, with the table's column names as its field names:
what a person reads in the table is what a script finds in the JSON. Run as a user runs
them, each command twice (table, then JSON), on a store with calls, feedback and keys."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from collectors.experiments.report import COMPARISON_HEADERS
from collectors.experiments.verdict import Comparison
from tests.conftest import seed_outage

CONFIG = """
store: {path: d}
experiments:
  colours:
    match: {app: outage}
    variants: [{name: control}, {name: blue}]
"""


def cli(cwd: Path, *args: str) -> str:
    p = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args, "--config", str(cwd / "gw.yaml")],
        cwd=cwd, capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip
    assert p.returncode == 0, (args, p.stderr)
    return p.stdout


def headers(text: str, first: str) -> list[str]:
    """The column names of the table whose header line starts with `first`."""
    line = next(x for x in text.splitlines() if x.split()[:1] == [first])
    return line.split()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    here = tmp_path_factory.mktemp("json")
    (here / "gw.yaml").write_text(CONFIG)
    seed_outage(here / "d")  # 650 calls of app `outage`: drift has something to say
    cli(here, "keys", "create", "--name", "reporting", "--budget-usd", "0.00001", "--app", "a")
    # and 6 served calls, 3 of them accepted
    cli(here, "sql", "INSERT INTO llm_calls (request_id, started_at, app, end_user, session_id, "
        "request_model, upstream_model, provider, status_code, outcome, input_tokens, "
        "output_tokens, latency_ms, cost_usd) SELECT concat('m-', toString(number)), "
        "now64(3) - toIntervalMinute(number), 'outage', concat('u', toString(number)), "
        "concat('s', toString(number % 2)), "
        "'answer', 'gpt-4o', 'openai', 200, 'ok', 10, 5, 100, 0.00001 FROM numbers(6)")  # fmt: skip
    rows = [
        {"event_id": f"e{i}", "request_id": f"m-{i}", "name": "suggestion_accepted",
         "value": 1.0, "app": "outage"}
        for i in range(3)
    ]  # fmt: skip
    insert = "INSERT INTO llm_feedback FORMAT JSONEachRow\n" + "\n".join(map(json.dumps, rows))
    cli(here, "sql", insert)
    return here


def test_keys_list(store: Path):
    table = headers(cli(store, "keys", "list"), "key_id")
    (key,) = json.loads(cli(store, "keys", "list", "--json"))
    assert table == list(key) == ["key_id", "name", "hint", "app", "team", "created_at",
                                  "revoked", "limits"]  # fmt: skip
    # the names of the llm_gateway_keys table, values as it holds them
    stored = json.loads(cli(store, "sql", "SELECT key_id, name, created_at FROM "
                                          "llm_gateway_keys FINAL FORMAT JSONEachRow"))  # fmt: skip
    assert {k: key[k] for k in stored} == stored


def test_report_keys(store: Path):
    text = cli(store, "report", "keys")
    (row,) = json.loads(cli(store, "report", "keys", "--json"))
    assert headers(text, "key_name") == list(row)
    assert row["budget_usd"] == 0.00001 and "0.00001" in text and "e-05" not in text


def test_report_feedback(store: Path):
    text = cli(store, "report", "feedback", "--since", "30d")
    doc = json.loads(cli(store, "report", "feedback", "--since", "30d", "--json"))
    (acceptance,) = doc["acceptance"]
    assert headers(text, "day") == list(acceptance)
    assert acceptance["upstream_model"] == "gpt-4o" and acceptance["request_models"] == ["answer"]
    assert acceptance["accepted_calls"] == 3 and acceptance["acceptance_rate"] == 1.0
    assert headers(text, "upstream_model") == list(doc["share_copy"][0])
    assert headers(text, "app") == list(doc["turns"][0])


def test_report_models(store: Path):
    text = cli(store, "report", "models", "--app", "outage", "--since", "30d")
    doc = json.loads(cli(store, "report", "models", "--app", "outage", "--since", "30d", "--json"))
    (model,) = doc["models"].values()
    assert headers(text, "upstream_model") == list(model)


def test_experiments_list_and_report(store: Path):
    text = cli(store, "experiments", "list")
    (exp,) = json.loads(cli(store, "experiments", "list", "--json"))
    assert set(headers(text, "experiment")) <= set(exp)
    report = cli(store, "experiments", "report", "colours")
    doc = json.loads(cli(store, "experiments", "report", "colours", "--json"))
    assert set(headers(report, "variant")) <= set(doc["variants"]["blue"])
    # too early for comparisons here; theirs are named as a comparison's JSON fields
    assert doc["primary"] == [] and "KEEP RUNNING" in report
    fields = {f.name for f in dataclasses.fields(Comparison)} | {"reading"}
    assert set(COMPARISON_HEADERS) <= fields


def test_drift(store: Path):
    rows: list[dict[str, Any]] = json.loads(cli(store, "drift", "--json"))
    columns = [r["name"] for r in map(json.loads, cli(
        store, "sql", "SELECT name FROM system.columns WHERE database = 'llm_gateway' AND "
        "table = 'llm_drift' ORDER BY position FORMAT JSONEachRow").splitlines())]  # fmt: skip
    assert rows and all(list(r) == columns for r in rows)
    assert any(r["metric"] == "error_rate" and r["level"] == "alert" for r in rows)
