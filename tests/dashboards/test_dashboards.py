"""The Grafana dashboards and Prometheus alerts under dashboards/, checked against a real gateway.

(a) A real Prometheus scrapes the running gateway every second. Every PromQL expression of
    every dashboard panel, template variable and alert rule is evaluated through its HTTP
    API, with Grafana's variables filled in; none may fail, the metrics they name must exist,
    and the core panels must show data.
(b) `promtool check rules` and `promtool test rules` pass on the alert rules.
(c) Every ClickHouse SQL panel runs on the gateway's chDB store with the plugin's macros
    expanded, and the cost tables show the traffic sent.
(d) The dashboard JSON and the provisioning files agree with each other.

Prometheus comes from the Debian package `prometheus` (`.ci/run` installs it). Without it
(a) and (b) are skipped, except under LLM_GATEWAY_TEST_STRICT=1 (CI), where they fail.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml

from tests.conftest import ROOT, GatewayProcess, free_port
from tests.fakes import Behaviour, FakeUpstream
from tests.prereqs import program

DASHBOARDS = ROOT / "dashboards"
GRAFANA = DASHBOARDS / "grafana"
ALERTS = DASHBOARDS / "prometheus" / "alerts.yml"
ALERT_TESTS = DASHBOARDS / "prometheus" / "alerts_test.yml"
DATASOURCES = DASHBOARDS / "provisioning" / "datasources" / "datasources.yaml"
DASHBOARD_PROVIDERS = DASHBOARDS / "provisioning" / "dashboards" / "dashboards.yaml"

APPS = ("dash-web", "dash-batch")
USERS = ("dash-alice", "dash-bob", "dash-carol")
# An app whose only calls ask for an alias (`fast`, the test config's) that gpt-4o-mini
# serves: the name clients asked for differs from the served one in every record.
ALIAS_APP, ALIAS, SERVED_BEHIND_ALIAS = "dash-aliased", "fast", "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello."}]

# Panels that must show data once the gateway has had traffic: (dashboard uid, panel title).
CORE_PANELS = {
    ("llm-gateway-overview", "Traffic by status class"),
    ("llm-gateway-overview", "Latency p50 / p95 / p99"),
    ("llm-gateway-overview", "Error rate by status class and provider"),
    ("llm-gateway-overview", "Records accepted / written / replayed / dropped"),
    ("llm-gateway-overview", "Time to first token p50 / p95"),
    ("llm-gateway-cost", "Tokens per second by model and type"),
    ("llm-gateway-cost", "Spend rate by app (USD/hour)"),
    ("llm-gateway-cost", "Cache hit ratio"),
    ("llm-gateway-cost", "Cache hit ratio by app"),
    ("llm-gateway-cost", "Saved by the cache in range"),
}
TOP_APPS_BY_COST = ("llm-gateway-cost", "Top apps by cost")
TOP_USERS_BY_COST = ("llm-gateway-cost", "Top end users by cost")

# Grafana's built-in variables, as Grafana would fill them in for a 5-minute view.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
# Values for the dashboards' own variables: "All" (each variable's allValue) or one real value.
SPECIFIC = {
    "app": "dash-web",
    "model": "gpt-4o",
    "provider": "openai",
    "genai_provider": "openai",
}
ALL = "$__all"
SQL_MACROS = {"__timeFilter", "__timeInterval", "__conditionalAll", "__fromTime", "__toTime"}
VAR_RE = re.compile(r"\$(?:\{(\w+)(?::(\w+))?\}|(\w+))|\[\[(\w+)\]\]")
METRIC_RE = re.compile(r"\b((?:gateway|gen_ai)_[a-z0-9_]+)\b")


# ------------------------------------------------------------------------ the dashboards
def load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(GRAFANA.glob("*.json"))}


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


# The dashboards name their data sources by template variable, as Grafana's "export for
# sharing externally" does, so they import into any Grafana; `__inputs` asks for them. Here
# each variable stands for the provisioned data source of its plugin type.
DS_VARIABLES = {"${DS_PROMETHEUS}": "prometheus", "${DS_CLICKHOUSE}": "clickhouse"}


def datasource_uid(panel: dict[str, Any], target: dict[str, Any]) -> str:
    """The provisioned uid the panel's (or target's) data source variable stands for."""
    uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid", "")
    return DS_VARIABLES.get(uid, uid)


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    return {d["uid"]: d for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}


def targets(uid_wanted: str) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(dashboard, panel, target) for every query on the data source `uid_wanted`."""
    for dashboard in load_dashboards().values():
        for panel in all_panels(dashboard):
            for target in panel.get("targets", []):
                if datasource_uid(panel, target) == uid_wanted:
                    yield dashboard, panel, target


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


# The drift gauges' `model` label is the model clients asked for (drift compares what served
# one requested name); every other `model` label, and `gen_ai_request_model`, is the model
# that served the call (gateway/observability/metrics.py).
DRIFT_GAUGES = ("gateway_drift_score", "gateway_drift_alert")


def model_meaning(dashboard: dict[str, Any]) -> str:
    """What the dashboard's `model` variable lists: "requested" names (from the drift gauges)
    or "served" ones (from the gateway's request metrics)."""
    (metric,) = METRIC_RE.findall(variables(dashboard)["model"]["query"]["query"])
    return "requested" if metric in DRIFT_GAUGES else "served"


def variable_values(
    prom: Prometheus, dashboard: dict[str, Any], name: str, values: dict[str, str]
) -> set[str]:
    """The values Grafana offers for a `label_values(metric{selector}, label)` variable, the
    other variables set to `values`, as Grafana runs it: through the series API."""
    query = variables(dashboard)[name]["query"]["query"]
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
    assert m, f"{dashboard['uid']}: ${name} is not a label_values() query"
    selector = interpolate(m.group(1), dashboard, values, fmt_all=".*")
    return set(prom.api(f"/api/v1/label/{m.group(2)}/values", **{"match[]": selector}))


def interpolate(text: str, dashboard: dict[str, Any], values: dict[str, str], fmt_all: str) -> str:
    """Grafana's variable interpolation. `values` maps a variable to one value or `ALL`;
    `fmt_all` is how a multi-value "All" is rendered where no allValue is set."""
    defined = variables(dashboard)

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3) or m.group(4)
        fmt = m.group(2) or ""
        if name in BUILTINS:
            return BUILTINS[name]
        if name not in defined:
            raise AssertionError(f"{dashboard['uid']}: undefined variable ${name} in {text!r}")
        value = values.get(name, ALL)
        if value == ALL:
            value = defined[name].get("allValue") or fmt_all
        if fmt == "singlequote":
            return "'" + value.replace("'", "\\'") + "'"
        if fmt not in ("", "regex", "raw"):
            raise AssertionError(f"{dashboard['uid']}: variable format :{fmt} is not handled")
        return value

    return VAR_RE.sub(repl, text)


# ----------------------------------------------------------- the ClickHouse plugin's macros
def _macro_calls(sql: str, name: str) -> Iterator[tuple[int, int, list[str]]]:
    """(start, end, arguments) of each `$__name(...)`, balanced parentheses, quotes honoured."""
    token = f"$__{name}("
    pos = 0
    while (start := sql.find(token, pos)) >= 0:
        i = start + len(token)
        depth, args, current, quote = 1, [], "", ""
        while depth:
            ch = sql[i]
            if quote:
                if ch == quote:
                    quote = ""
            elif ch in "'\"":
                quote = ch
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if not depth:
                    break
            elif ch == "," and depth == 1:
                args.append(current.strip())
                current = ""
                i += 1
                continue
            current += ch
            i += 1
        args.append(current.strip())
        yield start, i + 1, args
        pos = start + 1


def expand_sql(
    sql: str, dashboard: dict[str, Any], values: dict[str, str], t0: int, t1: int
) -> str:
    """The official grafana-clickhouse-datasource (v4) macros, then the variables."""
    # $__conditionalAll(cond, $var): the condition unless $var selects every value.
    while calls := list(_macro_calls(sql, "conditionalAll")):
        start, end, (cond, var) = calls[0]
        m = VAR_RE.fullmatch(var)
        assert m, f"$__conditionalAll needs a variable as its second argument, got {var!r}"
        name = m.group(1) or m.group(3) or m.group(4)
        sql = sql[:start] + ("1=1" if values.get(name, ALL) == ALL else cond) + sql[end:]
    for name, fn in (
        ("timeFilter", lambda c: f"{c} >= toDateTime({t0}) AND {c} <= toDateTime({t1})"),
        ("timeInterval", lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL 60 second)"),
    ):
        while calls := list(_macro_calls(sql, name)):
            start, end, (col,) = calls[0]
            sql = sql[:start] + fn(col) + sql[end:]
    sql = sql.replace("$__fromTime", f"toDateTime({t0})").replace("$__toTime", f"toDateTime({t1})")
    leftover = re.search(r"\$__\w+", sql)
    assert not leftover, f"macro {leftover.group()} is not expanded by this test: {sql}"
    return interpolate(sql, dashboard, values, fmt_all="")


# --------------------------------------------------------------------------------- traffic
def send_traffic(gw: GatewayProcess, fake: FakeUpstream) -> None:
    """Non-stream and stream calls from two apps and three users over OpenAI and Anthropic,
    plus a refused call (404, no route), an upstream 500, a fallback, an unpriced model, a
    call asked twice of the response cache (a miss, then a hit; hits only, after that), and
    a call by an alias from its own app."""

    def oai(app: str, user: str) -> openai.OpenAI:
        headers = {"X-Gateway-App": app, "X-Gateway-User": user}
        return openai.OpenAI(
            base_url=gw.url + "/v1", api_key="k", max_retries=0, default_headers=headers
        )

    web, web2 = oai(APPS[0], USERS[0]), oai(APPS[0], USERS[1])
    batch = oai(APPS[1], USERS[2])
    claude = anthropic.Anthropic(
        base_url=gw.url,
        api_key="k",
        max_retries=0,
        default_headers={"X-Gateway-App": APPS[1], "X-Gateway-User": USERS[2]},
    )
    for _ in range(2):
        web.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    list(web2.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    list(web2.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    web.embeddings.create(model="text-embedding-3-small", input="hello")
    once = [{"role": "user", "content": "Once."}]
    for _ in range(2):
        web.chat.completions.create(
            model="gpt-4o", messages=once, temperature=0, extra_headers={"X-Gateway-Cache": "on"}
        )
    claude.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=MESSAGES)
    with claude.messages.stream(
        model="claude-haiku-4-5", max_tokens=16, messages=MESSAGES
    ) as stream:
        stream.until_done()
    batch.chat.completions.create(model="fallback-model", messages=MESSAGES)
    oai(ALIAS_APP, USERS[0]).chat.completions.create(model=ALIAS, messages=MESSAGES)
    batch.chat.completions.create(model="llama-unpriced", messages=MESSAGES)
    with pytest.raises(openai.NotFoundError):
        web.chat.completions.create(model="no-route-model", messages=MESSAGES)
    fake.behaviour = Behaviour(status=500)
    try:
        with pytest.raises(openai.InternalServerError):
            batch.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    finally:
        fake.behaviour = Behaviour()


@pytest.fixture(scope="module")
def traffic(gateway: GatewayProcess, fake: FakeUpstream) -> float:
    """Traffic sent and recorded; returns when it started (epoch seconds)."""
    started = time.time()
    send_traffic(gateway, fake)
    apps = ", ".join(f"'{a}'" for a in APPS)
    gateway.wait_rows(f"app IN ({apps}) AND started_at >= toDateTime({int(started)})", 13)
    gateway.wait_rows(f"app = '{ALIAS_APP}' AND started_at >= toDateTime({int(started)})", 1)
    return started


# ------------------------------------------------------------------------------ Prometheus
def need_binary(name: str) -> str:
    return program(name)


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str | list[str]) -> Any:
        url = self.url + path + "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
        if body.get("status") != "success":
            raise PromError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("/api/v1/query", query=expr)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return result

    def scrapes(self) -> int:
        r = self.query('count_over_time(up{job="llm-gateway"}[10m])')
        return int(float(r[0]["value"][1])) if r else 0

    def wait(self, what: str, cond: Any, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log.read_text()}")
            try:
                if cond():
                    return
            except (OSError, PromError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus: timed out waiting for {what}\n{self.log.read_text()}")


class PromError(Exception):
    pass


@pytest.fixture(scope="module")
def prometheus(
    gateway: GatewayProcess,
    fake: FakeUpstream,
    traffic: float,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Prometheus]:
    """A real Prometheus scraping the gateway every second, with the alert rules loaded. It
    has seen a second round of traffic between scrapes, so rates are not zero."""
    binary = need_binary("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "llm-gateway",
                "static_configs": [{"targets": [gateway.url.removeprefix("http://")]}],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = workdir / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        prom.wait("the first scrape", lambda: prom.query('up{job="llm-gateway"} == 1'))
        before = prom.scrapes()
        send_traffic(gateway, fake)
        prom.wait("three more scrapes", lambda: prom.scrapes() >= before + 3)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    values = [float(s["value"][1]) for s in result]
    return [v for v in values if math.isfinite(v)]


def test_every_prometheus_panel_query_evaluates(prometheus: Prometheus):
    errors: list[str] = []
    empty_core: list[str] = []
    queries = 0
    for dashboard, panel, target in targets("prometheus"):
        for values in ({}, SPECIFIC):
            expr = interpolate(target["expr"], dashboard, values, fmt_all=".*")
            queries += 1
            where = f"{dashboard['uid']} / {panel['title']} / {target['refId']} {values or 'All'}"
            try:
                result = prometheus.query(expr)
            except PromError as e:
                errors.append(f"{where}: {e}\n  {expr}")
                continue
            core = (dashboard["uid"], panel["title"]) in CORE_PANELS
            if core and not values and not finite_values(result):
                empty_core.append(f"{where}: {result}\n  {expr}")
    assert queries > 40
    assert not errors, "\n".join(errors)
    assert not empty_core, "core panels without data:\n" + "\n".join(empty_core)


def test_core_panels_show_the_traffic(prometheus: Prometheus):
    """Spot checks that the numbers mean what the panels say."""
    dashboards = {d["uid"]: d for d in load_dashboards().values()}

    def run(uid: str, title: str, ref: str = "A") -> list[dict[str, Any]]:
        panel = next(p for p in all_panels(dashboards[uid]) if p.get("title") == title)
        target = next(t for t in panel["targets"] if t["refId"] == ref)
        return prometheus.query(interpolate(target["expr"], dashboards[uid], {}, ".*"))

    traffic = run("llm-gateway-overview", "Traffic by status class")
    by_class = {s["metric"].get("status_class"): float(s["value"][1]) for s in traffic}
    assert by_class.get("2xx", 0) > 0 and by_class.get("4xx", 0) > 0 and by_class.get("5xx", 0) > 0
    errors = run("llm-gateway-overview", "Error rate by status class and provider")
    share = {
        (s["metric"].get("provider", ""), s["metric"]["status_class"]): float(s["value"][1])
        for s in errors
    }
    assert all(0 <= v <= 1 for v in share.values()), share
    # The 404 was refused before routing (no provider); the 500 came from openai.
    assert share[("", "4xx")] == 1 and 0 < share[("openai", "5xx")] < 1, share
    written = run("llm-gateway-overview", "Records accepted / written / replayed / dropped", "B")
    assert finite_values(written)[0] > 0
    dropped = run("llm-gateway-overview", "Records accepted / written / replayed / dropped", "D")
    assert finite_values(dropped) == [0.0]
    spend_by_app = run("llm-gateway-cost", "Spend rate by app (USD/hour)")
    spend = {s["metric"].get("app"): float(s["value"][1]) for s in spend_by_app}
    assert spend.get(APPS[0], 0) > 0 and spend.get(APPS[1], 0) > 0
    tokens = run("llm-gateway-cost", "Tokens per second by model and type")
    assert {s["metric"]["type"] for s in tokens} == {"input", "output"}
    ttft = finite_values(run("llm-gateway-overview", "Time to first token p50 / p95", "B"))
    assert ttft and 0 < ttft[0] < 5
    (ratio,) = finite_values(run("llm-gateway-cost", "Cache hit ratio"))
    assert 0 < ratio <= 1  # hits (the miss came before Prometheus watched)
    (saved,) = finite_values(run("llm-gateway-cost", "Saved by the cache in range"))
    assert saved > 0


def test_template_variables_list_the_labels(prometheus: Prometheus):
    """`label_values(metric{selector}, label)` as Grafana runs it, through the series API."""
    expected = {
        "app": set(APPS),
        "model": {"gpt-4o", "gpt-4o-mini", "claude-haiku-4-5"},
        "provider": {"openai", "anthropic", "selfhosted"},
        "genai_provider": {"openai", "anthropic"},
        "experiment": {"dashboards"},  # declared in the test gateway's config
    }
    for dashboard in load_dashboards().values():
        for name, var in variables(dashboard).items():
            if var.get("type") != "query":
                continue
            found = variable_values(prometheus, dashboard, name, {})
            if name == "model" and model_meaning(dashboard) == "requested":
                # drift's gauges have series once the gateway ran drift; this one does not
                assert "drift" in dashboard["uid"], dashboard["uid"]
                continue
            assert expected[name] <= found, (dashboard["uid"], name, found)
            if name == "model":  # served models only: no alias, no route's name
                assert not {ALIAS, "fallback-model"} & found, (dashboard["uid"], found)
                aliased = variable_values(prometheus, dashboard, name, {"app": ALIAS_APP})
                assert aliased == {SERVED_BEHIND_ALIAS}, (dashboard["uid"], aliased)


def test_metric_names_exist(prometheus: Prometheus):
    """A typo in a metric name is no error in PromQL, just an empty panel."""
    exposed = set(prometheus.api("/api/v1/label/__name__/values"))
    used: dict[str, set[str]] = {}
    for dashboard, _, target in targets("prometheus"):
        for name in METRIC_RE.findall(target["expr"]):
            used.setdefault(name, set()).add(dashboard["uid"])
    for dashboard in load_dashboards().values():
        for var in variables(dashboard).values():
            for name in METRIC_RE.findall(json.dumps(var.get("query", ""))):
                used.setdefault(name, set()).add(dashboard["uid"])
    for rule in alert_rules():
        for name in METRIC_RE.findall(rule["expr"]):
            used.setdefault(name, set()).add(ALERTS.name)
    for label in prometheus.api("/api/v1/labels"):  # gen_ai_request_model etc. are labels
        used.pop(label, None)
    # The drift gauges have series only once a drift run evaluated a group (with data in
    # both windows); check their names against the code that defines them instead.
    metrics_src = (ROOT / "gateway" / "observability" / "metrics.py").read_text()
    # So does the experiment's effect, once an evaluation had enough units.
    for name in ("gateway_drift_score", "gateway_drift_alert", "gateway_experiment_effect"):
        if name in used and name not in exposed:
            assert f'"{name}"' in metrics_src, name
            used.pop(name)
    missing = {name: where for name, where in used.items() if name not in exposed}
    assert not missing, f"metrics the gateway does not expose: {missing}"
    assert len(used) >= 20


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alert_rules_evaluate(prometheus: Prometheus):
    errors = []
    for rule in alert_rules():
        try:
            prometheus.query(rule["expr"])
        except PromError as e:
            errors.append(f"{rule.get('alert') or rule.get('record')}: {e}")
    assert not errors, "\n".join(errors)

    def all_rules_evaluated() -> bool:
        rules = [r for g in prometheus.api("/api/v1/rules")["groups"] for r in g["rules"]]
        assert len(rules) == len(alert_rules())
        bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] == "err"]
        assert not bad, bad
        return all(r["health"] == "ok" for r in rules)

    prometheus.wait("every rule evaluated", all_rules_evaluated, timeout=10)

    # A call to a model with no price was made while Prometheus watched.
    def unknown_price_alert() -> bool:
        alerts = prometheus.api("/api/v1/alerts")["alerts"]
        return any(a["labels"]["alertname"] == "LLMGatewayUnknownModelPrice" for a in alerts)

    prometheus.wait("the unknown-price alert", unknown_price_alert, timeout=10)
    rules = {r["alert"]: r["expr"] for r in alert_rules()}
    assert prometheus.query(rules["LLMGatewayRecordsDropped"]) == [], "records were dropped"


# ----------------------------------------------------------------------------------- (b)
def test_promtool_checks_and_unit_tests_the_rules():
    promtool = need_binary("promtool")
    for args in (["check", "rules", str(ALERTS)], ["test", "rules", str(ALERT_TESTS)]):
        r = subprocess.run(
            [promtool, *args], capture_output=True, text=True, timeout=60, cwd=ALERTS.parent
        )
        assert r.returncode == 0, f"promtool {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    names = {r["alert"] for r in alert_rules()}
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    assert names <= tested, f"alerts without a promtool unit test: {names - tested}"


def test_every_alert_links_its_runbook():
    """`runbook_url` on every alert, pointing at a section of docs/runbooks.md."""
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    anchors = {h.strip().lower() for h in re.findall(r"^## (\w+)$", runbooks, re.M)}
    rules = [
        rule
        for path in sorted(ALERTS.parent.glob("*alerts.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]
    assert len(rules) > len(alert_rules())  # drift-alerts.yml too
    for rule in rules:
        url = rule["annotations"].get("runbook_url", "")
        base, _, anchor = url.partition("#")
        assert base.endswith("/docs/runbooks.md") and anchor in anchors, (rule["alert"], url)


# ----------------------------------------------------------------------------------- (c)
def test_every_sql_panel_runs_on_chdb(gateway: GatewayProcess, traffic: float):
    t0, t1 = int(traffic) - 3600, int(time.time()) + 300
    results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for dashboard, panel, target in targets("clickhouse"):
        for mode, values in (
            ("all", {}),
            ("web", SPECIFIC),
            ("batch", {"app": APPS[1]}),
            ("other", {"model": "other"}),  # Prometheus folded the model label into "other"
        ):
            sql = expand_sql(target["rawSql"], dashboard, values, t0, t1)
            try:
                rows = gateway.sql(sql)
            except AssertionError as e:
                raise AssertionError(
                    f"{dashboard['uid']} / {panel['title']}:\n{sql}\n{e}"
                ) from None
            results[(dashboard["uid"], panel["title"], mode)] = rows
            if target["format"] == 0:  # a time series: the first column is the time
                assert rows, (panel["title"], sql)
                assert next(iter(rows[0])) == "time", (panel["title"], rows[0])

    # Other tests share the gateway, so the "All" view may rank other apps first.
    top_apps = results[(*TOP_APPS_BY_COST, "all")]
    assert len(top_apps) == 20 or set(APPS) <= {r["app"] for r in top_apps}, top_apps
    spend = [r["spend_usd"] for r in top_apps]
    assert spend == sorted(spend, reverse=True) and spend[0] > 0, top_apps
    (web,) = results[(*TOP_APPS_BY_COST, "web")]
    assert web["app"] == APPS[0] and web["spend_usd"] > 0 and web["calls"] >= 3, web
    (batch,) = results[(*TOP_APPS_BY_COST, "batch")]
    assert batch["app"] == APPS[1] and batch["spend_usd"] > 0, batch
    assert batch["unpriced_calls"] >= 1 and batch["failed_calls"] >= 1, batch

    # "other" stands for models the metrics no longer name: it must not empty the SQL panels.
    other = results[(*TOP_APPS_BY_COST, "other")]
    assert len(other) == 20 or set(APPS) <= {r["app"] for r in other}, other

    users = {r["end_user"] for m in ("web", "batch") for r in results[(*TOP_USERS_BY_COST, m)]}
    assert set(USERS) <= users, users
    unpriced = results[("llm-gateway-cost", "Models with no known price", "batch")]
    assert [r["served_model"] for r in unpriced] == ["llama-unpriced"], unpriced
    # model panels name the model that served the calls: `fallback-model` fell back to
    # openai's gpt-4o, and is a name clients asked for, not a served model
    served = results[("llm-gateway-cost", "Tokens by served model", "batch")]
    by_model = {(r["served_model"], r["provider"]): r for r in served}
    assert "fallback-model" not in {r["served_model"] for r in served}, served
    assert "fallback-model" in by_model[("gpt-4o", "openai")]["requested_as"], served
    hourly = results[("llm-gateway-cost", "Cost by served model per hour", "batch")]
    assert "gpt-4o (openai)" in {r["served_model"] for r in hourly}, hourly
    saved = results[("llm-gateway-cost", "Saved by the cache, by served model", "web")]
    (gpt4o,) = [r for r in saved if (r["served_model"], r["provider"]) == ("gpt-4o", "openai")]
    assert gpt4o["hits"] >= 1 and gpt4o["saved_usd"] > 0 and 0 < gpt4o["hit_ratio"] < 1, saved


# Panels that leave out the alias's call whatever the model: it is priced.
NOT_THE_ALIAS_CALL = {("llm-gateway-cost", "Models with no known price")}


def test_a_model_chosen_from_the_variable_fills_the_sql_panels(
    prometheus: Prometheus, gateway: GatewayProcess, traffic: float
):
    """Pick the model as Grafana offers it (from Prometheus) for an app that only asked for
    an alias: every SQL panel that filters by model still shows that app's calls, because it
    filters on the same meaning as the variable: the served model (`upstream_model`), or on
    drift the requested one (`request_model`)."""
    t0, t1 = int(traffic) - 3600, int(time.time()) + 300
    filled = []
    for dashboard in load_dashboards().values():
        meaning = model_meaning(dashboard)
        column = {"served": "upstream_model", "requested": "request_model"}[meaning]
        offered = variable_values(prometheus, dashboard, "model", {"app": ALIAS_APP})
        if meaning == "served":
            assert offered == {SERVED_BEHIND_ALIAS}, (dashboard["uid"], offered)
        for panel in all_panels(dashboard):
            for target in panel.get("targets", []):
                if datasource_uid(panel, target) != "clickhouse":
                    continue
                sql, where = target["rawSql"], (dashboard["uid"], panel["title"])
                if "${model" not in sql:
                    continue
                filters = re.findall(r"(\w+) IN \(\$\{model:singlequote\}\)", sql)
                assert filters and set(filters) == {column}, (where, filters)
                if meaning == "requested" or where in NOT_THE_ALIAS_CALL:
                    continue  # no drift run in this gateway: llm_drift has no rows
                for model in offered:
                    values = {"app": ALIAS_APP, "model": model}
                    rows = gateway.sql(expand_sql(sql, dashboard, values, t0, t1))
                    assert rows, (where, values)
                filled.append(where)
    assert len(filled) >= 6, filled
    # The GenAI histograms' model label, which the latency panels filter, is the served one.
    genai = prometheus.api(
        "/api/v1/label/gen_ai_request_model/values",
        **{"match[]": f'gen_ai_client_operation_duration_seconds_count{{app="{ALIAS_APP}"}}'},
    )
    assert genai == [SERVED_BEHIND_ALIAS], genai


# ----------------------------------------------------------------------------------- (d)
def test_dashboard_json_is_consistent():
    sources = provisioned_datasources()
    assert sources["prometheus"]["type"] == "prometheus"
    ch = sources["clickhouse"]
    assert ch["type"] == "grafana-clickhouse-datasource"
    assert ch["jsonData"]["protocol"] == "http"
    assert ch["jsonData"]["defaultDatabase"] == "llm_gateway"
    assert {"host", "port"} <= set(ch["jsonData"])
    providers = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]
    assert providers and all(p["type"] == "file" and p["options"]["path"] for p in providers)

    dashboards = load_dashboards()
    assert {"gateway-overview.json", "cost-usage.json"} <= set(dashboards)
    uids = [d["uid"] for d in dashboards.values()]
    assert len(uids) == len(set(uids))
    for name, d in dashboards.items():
        assert d["schemaVersion"] >= 42, name  # test_dashboard_schema.py: the current one
        assert d["title"] and d["id"] is None, name
        defined = variables(d)
        assert {"app", "model", "provider"} <= set(defined), name
        # Importable anywhere: each data source is a variable that __inputs asks for.
        inputs = {i["name"]: i for i in d["__inputs"]}
        ds_vars = {n: v for n, v in defined.items() if v["type"] == "datasource"}
        used = set(re.findall(r'"uid": "(\$\{DS_\w+\})"', json.dumps(d)))
        assert used and used <= set(DS_VARIABLES), (name, used)
        assert {f"${{{n}}}" for n in inputs} == used == {f"${{{n}}}" for n in ds_vars}, name
        for n, var in ds_vars.items():
            plugin = sources[DS_VARIABLES[f"${{{n}}}"]]["type"]
            assert inputs[n]["type"] == "datasource" and inputs[n]["pluginId"] == plugin, name
            assert var["query"] == plugin and not var.get("includeAll"), (name, n)
        hardcoded = {
            ref["uid"]
            for ref in re.findall(r'"datasource": (\{[^{}]*\})', json.dumps(d))
            for ref in [json.loads(ref)]
            if ref.get("uid") and ref["uid"] not in DS_VARIABLES and ref["type"] != "grafana"
        }
        assert not hardcoded, f"{name}: data source uids not from a variable: {hardcoded}"
        for var in defined.values():
            if var["type"] == "datasource":
                continue
            if var["type"] == "textbox":  # a gateway key: no Prometheus label holds it
                assert var["name"] == "key" and var["query"] == "", (name, var["name"])
                continue
            assert var["datasource"]["uid"] == "${DS_PROMETHEUS}", (name, var["name"])
            assert var["query"]["query"].startswith("label_values("), (name, var["name"])
            assert var["includeAll"] and var["allValue"] == ".*", (name, var["name"])
        ids = [p["id"] for p in all_panels(d)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in all_panels(d):
            where = f"{name} / {panel.get('title')}"
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, where
            if panel["type"] == "row":
                continue
            assert panel.get("title") and panel.get("targets"), where
            ds = panel["datasource"]
            uid = DS_VARIABLES.get(ds["uid"], "")
            assert uid in sources and ds["type"] == sources[uid]["type"], where
            for t in panel["targets"]:
                tds = t.get("datasource", ds)
                assert tds == {"type": ds["type"], "uid": ds["uid"]}, where
                if uid == "prometheus":
                    assert t["expr"].strip(), where
                    text = t["expr"] + t.get("legendFormat", "")
                else:
                    assert t["editorType"] == "sql" and t["format"] in (0, 1), where
                    assert t["rawSql"].strip(), where
                    text = t["rawSql"]
                refs = {m.group(1) or m.group(3) or m.group(4) for m in VAR_RE.finditer(text)}
                refs -= set(BUILTINS) | SQL_MACROS
                assert refs <= set(defined), f"{where}: undefined variables {refs - set(defined)}"
            refids = [t["refId"] for t in panel["targets"]]
            assert len(refids) == len(set(refids)), where
