"""Where an SRE goes next from a panel: data links from a model, an app, a provider, a
gateway key or an experiment to the dashboards filtered by it (their variables), and panel
links from error panels to their runbook. Every link must resolve: the target dashboard
exists, the variables it sets exist there, the value it carries is in the panel's data (a
label of the series the real Prometheus returns, a column of the rows the real store
returns), and each runbook anchor is a section of docs/runbooks.md."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai

from tests.conftest import ROOT, GatewayProcess
from tests.dashboards.test_dashboards import (  # noqa: F401  (fixtures)
    ALIAS,
    ALIAS_APP,
    DRIFT_GAUGES,
    METRIC_RE,
    SERVED_BEHIND_ALIAS,
    Prometheus,
    all_panels,
    datasource_uid,
    expand_sql,
    interpolate,
    load_dashboards,
    model_meaning,
    prometheus,
    traffic,
    variable_values,
    variables,
)

RUNBOOKS = "https://github.com/llm-gateway/llm-gateway/blob/main/docs/runbooks.md"
LINK_RE = re.compile(r"/d/(?P<uid>[\w-]+)\?(?P<query>.+)")
LABEL_RE = re.compile(r"\$\{__field\.labels\.(\w+)\}")
CELL = "${__value.raw}"


@dataclass(frozen=True)
class Link:
    uid: str  # the dashboard holding it
    panel: dict[str, Any]
    link: dict[str, Any]
    scope: str  # "panel" | "series" (every series) | "ref:X" (query X's) | "column:X"

    @property
    def where(self) -> str:
        return f"{self.uid} / {self.panel['title']} / {self.link['title']}"


def links() -> Iterator[Link]:
    for d in load_dashboards().values():
        for p in all_panels(d):
            for link in p.get("links", []):
                yield Link(d["uid"], p, link, "panel")
            fc = p.get("fieldConfig", {})
            for link in fc.get("defaults", {}).get("links", []):
                yield Link(d["uid"], p, link, "series")
            for o in fc.get("overrides", []):
                m = o["matcher"]
                scope = {"byFrameRefID": "ref", "byName": "column"}[m["id"]] + ":" + m["options"]
                for prop in o["properties"]:
                    if prop["id"] == "links":
                        for link in prop["value"]:
                            yield Link(d["uid"], p, link, scope)


def runbook_anchors() -> set[str]:
    """GitHub's anchors of docs/runbooks.md's sections."""
    text = (ROOT / "docs" / "runbooks.md").read_text()
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}  # fmt: skip


def carried(link: Link) -> tuple[str, str]:
    """(the variable a data link sets, the value it carries)."""
    m = LINK_RE.fullmatch(link.link["url"])
    assert m, f"{link.where}: not a link to a dashboard: {link.link['url']}"
    params = [p for p in m["query"].split("&") if p != "${__url_time_range}"]
    assert len(params) == 1 and "${__url_time_range}" in m["query"], link.where
    name, _, value = params[0].partition("=")
    return name.removeprefix("var-"), value


# The panels whose next step is a runbook, and which runbook.
RUNBOOK_PANELS = {
    ("llm-gateway-overview", "5xx share"): "llmgatewayhigherrorrate",
    ("llm-gateway-overview", "Errors by type"): "llmgatewayhigherrorrate",
    ("llm-gateway-overview", "Error rate by status class and provider"): "llmgatewayhigherrorrate",
    ("llm-gateway-overview", "Latency p50 / p95 / p99"): "llmgatewayhighlatencyp95",
    ("llm-gateway-overview", "Time to first token p50 / p95"): "llmgatewayhightimetofirsttokenp95",
    ("llm-gateway-overview", "Gateway overhead p50 / p99"): "llmgatewayhighoverhead",
    ("llm-gateway-overview", "Store up"): "llmgatewayrecordstoredown",
    ("llm-gateway-overview", "Record queue depth"): "llmgatewayrecordpipelinefallingbehind",
    ("llm-gateway-overview", "Records accepted / written / replayed / dropped"):
        "llmgatewayrecordsdropped",
    ("llm-gateway-cost", "Calls with no known price"): "llmgatewayunknownmodelprice",
    ("llm-gateway-cost", "Models with no known price"): "llmgatewayunknownmodelprice",
    ("llm-gateway-drift", "Latest evaluation per app and model"): "llmgatewaydrift",
    ("llm-gateway-drift", "Alerting metrics"): "llmgatewaydrift",
}  # fmt: skip
# Panels that show a model, an app or a key, and the variable their links set.
FILTER_PANELS = {
    ("llm-gateway-overview", "Traffic by app"): "app",
    ("llm-gateway-overview", "Latency p95 by model"): "model",
    ("llm-gateway-cost", "Spend rate by app (USD/hour)"): "app",
    ("llm-gateway-cost", "Spend rate by model (USD/hour)"): "model",
    ("llm-gateway-cost", "Top apps by cost"): "app",
    ("llm-gateway-cost", "Top end users by cost"): "app",
    ("llm-gateway-cost", "Spend by gateway key"): "key",
    ("llm-gateway-cost", "Tokens by served model"): "model",
    ("llm-gateway-cost", "Saved by the cache, by served model"): "model",
    ("llm-gateway-drift", "Latest evaluation per app and model"): "model",
    ("llm-gateway-drift", "Drift score by metric"): "app",
    ("llm-gateway-experiments", "Verdict by experiment"): "experiment",
}
# Where a model leads, by what it names: a served model to the dashboards whose panels filter
# the served one, a requested model to drift (see model_meaning).
MODEL_TARGETS = {
    "served": {"llm-gateway-overview", "llm-gateway-cost"},
    "requested": {"llm-gateway-drift"},
}


def test_every_link_resolves():
    boards = {d["uid"]: d for d in load_dashboards().values()}
    anchors = runbook_anchors()
    found = list(links())
    panel_links = [x for x in found if x.scope == "panel"]
    data_links = [x for x in found if x.scope != "panel"]
    assert len(panel_links) >= 15 and len(data_links) >= 60, (len(panel_links), len(data_links))
    for x in panel_links:
        base, _, anchor = x.link["url"].partition("#")
        assert x.link["type"] == "link" and base == RUNBOOKS, x.where
        assert anchor in anchors, f"{x.where}: no section #{anchor} in docs/runbooks.md"
        assert x.link["targetBlank"] and x.link["title"].startswith("Runbook: "), x.where
    for x in data_links:
        uid = LINK_RE.fullmatch(x.link["url"])["uid"]  # type: ignore[index]
        assert uid in boards, f"{x.where}: no dashboard {uid}"
        var, value = carried(x)
        assert var in variables(boards[uid]), f"{x.where}: {uid} has no variable ${var}"
        if x.scope.startswith("column:"):
            assert value == CELL, x.where  # the cell clicked
        else:
            assert LABEL_RE.fullmatch(value), f"{x.where}: {value}"
        assert value in x.link["title"], x.where  # the menu names what it filters by
    runbooks = {(x.uid, x.panel["title"]): x.link["url"].partition("#")[2] for x in panel_links}
    assert {k: runbooks.get(k) for k in RUNBOOK_PANELS} == RUNBOOK_PANELS
    sets = {((x.uid, x.panel["title"]), carried(x)[0]) for x in data_links}
    for key, var in FILTER_PANELS.items():
        assert (key, var) in sets, key
        targets = {LINK_RE.fullmatch(x.link["url"])["uid"]  # type: ignore[index]
                   for x in data_links if (x.uid, x.panel["title"]) == key
                   and carried(x)[0] == var}  # fmt: skip
        # an app leads to every dashboard that filters by it; a model to those of its meaning
        if var == "app":
            assert {"llm-gateway-overview", "llm-gateway-cost", "llm-gateway-drift"} <= targets
        if var == "model":
            (meaning,) = {carried_meaning(x) for x, _ in model_links()
                          if (x.uid, x.panel["title"]) == key}  # fmt: skip
            assert targets == MODEL_TARGETS[meaning], (key, meaning, targets)


def carried_meaning(link: Link) -> str:
    """Whether a `var-model` link carries a "served" or a "requested" model name: the drift
    gauges' `model` label and a `request_model` column are requested names; the gateway's
    other metrics' `model` and `gen_ai_request_model` labels, and `upstream_model`, served."""
    panel = link.panel
    if datasource_uid(panel, panel["targets"][0]) == "prometheus":
        metrics = set(METRIC_RE.findall(" ".join(t["expr"] for t in panel["targets"])))
        drift = metrics <= set(DRIFT_GAUGES)
        assert drift or not metrics & set(DRIFT_GAUGES), (link.where, metrics)  # not mixed
        return "requested" if drift else "served"
    column = link.scope.removeprefix("column:")
    (target,) = panel["targets"]
    source = re.search(rf"\b(\w+) AS {column}\b", target["rawSql"])
    return {"upstream_model": "served", "request_model": "requested"}[
        source[1] if source else column
    ]


def model_links() -> Iterator[tuple[Link, dict[str, Any]]]:
    """Every data link that sets `model`, with the dashboard it opens."""
    boards = {d["uid"]: d for d in load_dashboards().values()}
    for x in links():
        if x.scope != "panel" and carried(x)[0] == "model":
            yield x, boards[LINK_RE.fullmatch(x.link["url"])["uid"]]  # type: ignore[index]


def test_a_model_link_carries_the_meaning_of_its_targets_variable():
    """A link that sets `model` carries a served name into a dashboard whose `model` lists
    served names, and a requested name into drift, whose `model` lists requested ones: the
    same name can be an alias and a served model, and would select other calls."""
    found = list(model_links())
    assert len(found) >= 12, len(found)
    for x, target in found:
        assert carried_meaning(x) == model_meaning(target), (x.where, target["uid"])
    meanings = {carried_meaning(x) for x, _ in found}
    assert meanings == {"served", "requested"}, meanings


def test_a_model_link_carries_a_value_of_its_targets_variable(
    prometheus: Prometheus,  # noqa: F811
    gateway: GatewayProcess,
    traffic: float,  # noqa: F811
):
    """For the app that asked for an alias, the model names a link would carry, read from its
    panel's data in the real Prometheus and store, are among those the target dashboard's
    `model` variable offers (served names: the served model, never the alias)."""
    t0, t1 = int(traffic) - 3600, int(time.time()) + 300
    values = {"app": ALIAS_APP}
    boards = {d["uid"]: d for d in load_dashboards().values()}
    carried_values: set[str] = set()
    for x, target in model_links():
        if model_meaning(target) == "requested":
            continue  # no drift run in this gateway: no drift gauges, no llm_drift rows
        board, panel = boards[x.uid], x.panel
        if datasource_uid(panel, panel["targets"][0]) == "prometheus":
            label = LABEL_RE.fullmatch(carried(x)[1])[1]  # type: ignore[index]
            exprs = [interpolate(t["expr"], board, values, fmt_all=".*")
                     for t in panel["targets"]
                     if not x.scope.startswith("ref:") or t["refId"] == x.scope[4:]]  # fmt: skip
            got = {s["metric"][label] for e in exprs for s in prometheus.query(e)
                   if label in s["metric"]}  # fmt: skip
        else:
            (t,) = panel["targets"]
            rows = gateway.sql(expand_sql(t["rawSql"], board, values, t0, t1))
            got = {r[x.scope.removeprefix("column:")] for r in rows}
        offered = variable_values(prometheus, target, "model", values)
        assert got <= offered, (x.where, got, offered)
        carried_values |= got
    assert SERVED_BEHIND_ALIAS in carried_values and ALIAS not in carried_values, carried_values


def _series_labels(prom: Prometheus, board: dict[str, Any], panel: dict[str, Any],
                   ref: str | None) -> list[set[str]]:  # fmt: skip
    out = []
    for t in panel["targets"]:
        if ref is None or t["refId"] == ref:
            result = prom.query(interpolate(t["expr"], board, {}, fmt_all=".*"))
            out += [set(s["metric"]) for s in result]
    return out


def test_each_link_carries_a_value_the_panel_has(
    prometheus: Prometheus,  # noqa: F811  (the fixture, imported above)
    gateway: GatewayProcess,
    traffic: float,  # noqa: F811
):
    """Run every linked panel's queries against the real Prometheus and the real store: the
    label or column a link reads is in every row or series it is offered on."""
    boards = {d["uid"]: d for d in load_dashboards().values()}
    t0, t1 = int(traffic) - 3600, int(time.time()) + 300
    checked = 0
    for x in links():
        if x.scope == "panel":
            continue
        board, panel = boards[x.uid], x.panel
        _, value = carried(x)
        if datasource_uid(panel, panel["targets"][0]) == "prometheus":
            label = LABEL_RE.fullmatch(value)[1]  # type: ignore[index]
            ref = x.scope.removeprefix("ref:") if x.scope.startswith("ref:") else None
            series = _series_labels(prometheus, board, panel, ref)
            expr = " ".join(t["expr"] for t in panel["targets"])
            # The query keeps the label (grouped by it, or a raw series that has it), and the
            # series it returns carry it; a series without it is the label's empty value
            # (calls refused before a provider was chosen), which the variable filters too.
            assert re.search(rf"\b{label}\b", expr), (x.where, expr)
            if series:  # the drift gauges have none until drift runs in the gateway
                assert any(label in s for s in series), (x.where, series)
        else:
            (target,) = panel["targets"]
            sql = expand_sql(target["rawSql"], board, {}, t0, t1)
            columns = {r["name"]: r["type"] for r in gateway.sql(f"DESCRIBE ({sql})")}
            name = (
                x.scope.removeprefix("column:")
                if x.scope.startswith("column:")
                else (LABEL_RE.fullmatch(value)[1])
            )  # type: ignore[index]
            assert name in columns, (x.where, columns)
            assert "String" in columns[name], (x.where, columns[name])  # a name, a label
        checked += 1
    assert checked >= 60


def test_the_key_variable_filters_the_call_records(gateway: GatewayProcess, traffic: float):  # noqa: F811
    """From a key's row in "Spend by gateway key" to the same dashboard filtered by it: the
    panels from the call records then hold that key's calls only."""
    name = "dash-key-" + uuid.uuid4().hex[:6]
    p = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "keys", "create", "--name", name, "--json",
         "--config", str(gateway.config_path)],
        cwd=gateway.workdir, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    secret = json.loads(p.stdout)["key"]
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0,
                           default_headers={"X-Gateway-App": "dash-keyed",
                                            "X-Gateway-User": "dash-dave"})  # fmt: skip
    deadline = time.monotonic() + 30
    while True:  # the gateway reads new keys every auth.refresh_seconds
        try:
            client.chat.completions.create(model="gpt-4o",
                                           messages=[{"role": "user", "content": "x"}])  # fmt: skip
            break
        except openai.AuthenticationError:
            assert time.monotonic() < deadline, "the key was never read"
            time.sleep(0.5)
    gateway.wait_rows(f"key_name = '{name}'", 1)
    board = next(d for d in load_dashboards().values() if d["uid"] == "llm-gateway-cost")
    t0, t1 = int(traffic) - 3600, int(time.time()) + 300

    def rows(title: str, key: str) -> list[dict[str, Any]]:
        panel = next(p for p in all_panels(board) if p.get("title") == title)
        return gateway.sql(expand_sql(panel["targets"][0]["rawSql"], board, {"key": key}, t0, t1))

    users = rows("Top end users by cost", name)
    assert [(r["end_user"], r["app"]) for r in users] == [("dash-dave", "dash-keyed")], users
    assert [r["key"] for r in rows("Spend by gateway key", name)] == [name]
    assert rows("Cost by app over time", name) and all(
        r["app"] == "dash-keyed" for r in rows("Cost by app over time", name))  # fmt: skip
    assert len(rows("Top end users by cost", "")) > 1  # empty: every key, and none
    assert rows("Top end users by cost", "no-such-key") == []
