"""The Helm chart under helm/llm-gateway/, rendered and checked without a cluster.

- Helm itself (Helm v4's Go library through `helm-python-sdk`) lints the chart strictly and
  renders it over a matrix of values, with the Kubernetes versions and API groups a real
  cluster would report.
- Every rendered manifest is validated strictly (unknown fields are errors) against the
  Kubernetes OpenAPI schemas of two versions (`kubernetes-validate`, offline).
- The ServiceMonitor and PrometheusRule are validated against the Prometheus Operator's CRD
  schemas, as compiled in the npm package `@kubernetes-models/prometheus-operator`
  (installed under .ci/node by .ci/run).
- The gateway config the chart renders passes the gateway's own validation; the rendered
  PrometheusRule's rules pass `promtool check rules` and the alerts' unit tests.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from gateway.config import parse_config
from tests.helmchart import (
    CHART,
    FULLNAME,
    KUBE_VERSIONS,
    NAMESPACE,
    ROOT,
    by_kind,
    crd_errors,
    load_chart,
    manifests,
    named,
    render_raw,
    rendered_config,
)
from tests.prereqs import ci_node_package, program

DASHBOARDS = ROOT / "dashboards"
NODE = ROOT / ".ci" / "node"
PROMETHEUS_OPERATOR = [
    "monitoring.coreos.com/v1",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
]
# Validated against the Prometheus Operator's schemas by node (validate-crds.mjs).
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
# Validated against the CRDs vendored under tests/crds/ (tests/helmchart.py).
VENDORED_CRD_KINDS = {"HTTPRoute"}
CRD_KINDS = OPERATOR_KINDS | VENDORED_CRD_KINDS
TEST_MODEL = "llm-gateway-helm-test"  # helm test's model, provider and key name

CLICKHOUSE = {
    "store": {
        "mode": "clickhouse",
        "clickhouse": {"url": "http://clickhouse:8123", "username": "gw", "password": "s3cret"},
    }
}
MONITORING = {
    "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    "grafana": {"dashboards": {"enabled": True}},
}
PROVIDERS = {
    "providers": {
        "openai": {"kind": "openai", "api_key": "${OPENAI_API_KEY}"},
        "local": {"kind": "openai", "base_url": "http://vllm:8000/v1", "price_as": ""},
    },
    "routes": [
        {"match": "llama*", "provider": "local"},
        {"match": "*", "provider": "openai", "fallbacks": ["local"]},
    ],
    "capture": {"mode": "full"},
    "log_level": "warning",
}

INGRESS = {
    "enabled": True,
    "className": "nginx",
    "annotations": {"nginx.ingress.kubernetes.io/proxy-buffering": "off"},
    "hosts": [
        {"host": "llm.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]},
        {"host": "*.llm.example.org", "paths": [{"path": "/v1"}]},
    ],
    "tls": [{"secretName": "llm-tls", "hosts": ["llm.example.com", "tls-only.example.com"]}],
}
HTTP_ROUTE = {
    "enabled": True,
    "parentRefs": [{"name": "public", "namespace": "gateway-system", "sectionName": "https"}],
    "hostnames": ["route.example.com", "llm.example.com"],
    "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
               "timeouts": {"request": "600s"}}],
}  # fmt: skip
EXTRAS = {
    "extraEnv": [{"name": "SSL_CERT_FILE", "value": "/etc/ssl/internal/ca.pem"}],
    "extraEnvFrom": [{"secretRef": {"name": "more-keys"}}],
    "extraVolumes": [{"name": "internal-ca", "configMap": {"name": "internal-ca"}}],
    "extraVolumeMounts": [{"name": "internal-ca", "mountPath": "/etc/ssl/internal",
                           "readOnly": True}],
    "extraContainers": [{"name": "proxy", "image": "envoyproxy/envoy:v1.33.0",
                         "ports": [{"containerPort": 9901}]}],
    "podAnnotations": {"example.com/team": "ml-platform"},
    "podLabels": {"team": "ml-platform"},
}  # fmt: skip

# name -> (values, API groups the cluster has, kinds the release must contain)
CASES: dict[str, tuple[dict[str, Any], list[str], set[str]]] = {
    "embedded": ({}, [], {"StatefulSet", "Service", "ConfigMap", "ServiceAccount"}),
    "embedded-monitoring": (
        {
            **MONITORING,
            "persistence": {"enabled": False},
            "drift": {"enabled": True, "settings": {"min_calls": 50}},
            "networkPolicy": {"enabled": True},
            "providerKeys": {"values": {"OPENAI_API_KEY": "sk-test"}},
            "config": PROVIDERS,
        },
        PROMETHEUS_OPERATOR,
        {"StatefulSet", "ServiceMonitor", "PrometheusRule", "NetworkPolicy", "Secret"},
    ),
    "clickhouse": (
        {**CLICKHOUSE, "replicaCount": 3},
        [],
        {"StatefulSet", "PodDisruptionBudget", "Job", "Secret", "ConfigMap"},
    ),
    "clickhouse-autoscaling-existing-secrets": (
        {
            **MONITORING,
            "store": {
                "mode": "clickhouse",
                "clickhouse": {"existingSecret": "ch-creds", "cluster": "main"},
            },
            "providerKeys": {"existingSecret": "llm-keys"},
            "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6},
            "drift": {"enabled": True},
            "networkPolicy": {
                "enabled": True,
                "ingressFrom": [{"namespaceSelector": {"matchLabels": {"team": "apps"}}}],
                "egress": [{"ports": [{"port": 443, "protocol": "TCP"}]}],
            },
            "config": PROVIDERS,
        },
        PROMETHEUS_OPERATOR,
        {
            "StatefulSet",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Job",
            "CronJob",
            "ServiceMonitor",
            "PrometheusRule",
            "NetworkPolicy",
        },
    ),
    # Monitoring asked for on a cluster without the Prometheus Operator: nothing to create.
    "clickhouse-monitoring-without-operator": (
        {**CLICKHOUSE, **MONITORING, "providerKeys": {"values": {"OPENAI_API_KEY": "sk-x"}}},
        [],
        {"StatefulSet", "Job"},
    ),
    # In front: an Ingress and an HTTPRoute; the user's Redis; helm test; extras.
    "exposed": (
        {
            **CLICKHOUSE,
            "replicaCount": 2,
            "ingress": INGRESS,
            "httpRoute": HTTP_ROUTE,
            "redis": {"url": "redis://:pw@redis.cache.svc:6379/0"},
            "tests": {"enabled": True},
            "networkPolicy": {
                "enabled": True,
                "ingressFrom": [{"namespaceSelector": {"matchLabels": {"team": "apps"}}}],
                "egress": [{"ports": [{"port": 443, "protocol": "TCP"}]}],
            },
            **EXTRAS,
            "config": {**PROVIDERS, "auth": {"require_key": True,
                                             "allowed_hosts": ["own.example.com"]}},
        },  # fmt: skip
        [],
        {"StatefulSet", "Ingress", "HTTPRoute", "NetworkPolicy", "Pod", "Service"},
    ),
    # The quick start's install (no config: the zero-config providers) with helm test.
    "embedded-tests": (
        {"tests": {"enabled": True}, "providerKeys": {"values": {"OPENAI_API_KEY": "sk-x"}}},
        [],
        {"StatefulSet", "Pod", "Service", "ConfigMap", "Secret"},
    ),
    # The README's example for several replicas (bundled Redis, HPA, ingress, helm test).
    "several-replicas-example": (
        yaml.safe_load((CHART / "examples" / "several-replicas.yaml").read_text()),
        PROMETHEUS_OPERATOR,
        {"StatefulSet", "HorizontalPodAutoscaler", "Deployment", "Ingress", "Pod"},
    ),
}
# Environment the pods get from their Secrets, for the config's ${...} interpolation.
POD_ENV = {
    "LLM_GATEWAY_STORE_URL": "http://clickhouse:8123",
    "LLM_GATEWAY_STORE_USERNAME": "gw",
    "LLM_GATEWAY_STORE_PASSWORD": "s3cret",
    "OPENAI_API_KEY": "sk-test",
    "LLM_GATEWAY_HELM_TEST_KEY": "lgw_" + "k" * 43,
    "LLM_GATEWAY_REDIS_URL": "redis://:pw@redis.cache.svc:6379/0",
    "LLM_GATEWAY_REDIS_PASSWORD": "p" * 32,
}


@pytest.fixture(scope="module")
def chart() -> helm_python.Chart:
    return load_chart()


def case_params() -> list[Any]:
    return [pytest.param(name, id=name) for name in CASES]


@pytest.fixture(scope="module")
def rendered(chart: helm_python.Chart) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out = {}
    for name, (values, apis, _) in CASES.items():
        for version in KUBE_VERSIONS:
            out[(name, version)] = manifests(render_raw(chart, values, apis, version))
    return out


# ------------------------------------------------------------------------- lint and render
def test_chart_lints_strictly():
    for name, (values, _, _) in CASES.items():
        report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSIONS[-1]}")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, (name, problems)


@pytest.mark.parametrize("name", case_params())
def test_every_manifest_is_valid_kubernetes(name: str, rendered: dict):
    _, _, kinds = CASES[name]
    for version in KUBE_VERSIONS:
        docs = rendered[(name, version)]
        assert kinds <= {d["kind"] for d in docs}, (version, {d["kind"] for d in docs})
        for doc in docs:
            if doc["kind"] in CRD_KINDS:
                continue  # test_crd_objects_match_their_schemas
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = "/".join(map(str, e.path))
                raise AssertionError(
                    f"{name}: {doc['kind']} {doc['metadata']['name']} is not valid Kubernetes "
                    f"{version} at {where}: {e.message}"
                ) from None


def test_crd_objects_match_their_schemas(rendered: dict):
    """The Prometheus Operator's kinds against the schemas of its npm models (by node)."""
    ci_node_package("@kubernetes-models/prometheus-operator")
    node = program("node")
    objects = [d for (_, _), docs in rendered.items() for d in docs if d["kind"] in OPERATOR_KINDS]
    assert {o["kind"] for o in objects} == OPERATOR_KINDS
    # A typo the schema must catch, so that a pass means something.
    bad = json.loads(json.dumps(next(o for o in objects if o["kind"] == "ServiceMonitor")))
    bad["spec"]["endpoints"][0]["interval"] = "every minute"
    result = subprocess.run(
        [node, str(NODE / "validate-crds.mjs")],
        input=json.dumps([*objects, bad]),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=NODE,
    )
    assert result.returncode == 0, result.stderr
    verdicts = json.loads(result.stdout)
    assert verdicts[:-1] == [""] * len(objects), verdicts
    assert "interval" in verdicts[-1], verdicts[-1]


# ---------------------------------------------------------------------- the gateway config
@pytest.mark.parametrize("name", case_params())
def test_rendered_config_passes_the_gateways_validation(name: str, rendered: dict):
    docs = rendered[(name, KUBE_VERSIONS[-1])]
    data = rendered_config(docs)
    cfg = parse_config(data, env=POD_ENV)
    assert cfg.server.host == "0.0.0.0" and cfg.server.port == 8080
    assert cfg.log.dir == "/data/log"
    values = CASES[name][0]
    if values.get("store", {}).get("mode") == "clickhouse":
        assert cfg.store.kind == "clickhouse" and cfg.store.url == POD_ENV["LLM_GATEWAY_STORE_URL"]
        assert cfg.store.password == POD_ENV["LLM_GATEWAY_STORE_PASSWORD"]
        assert "s3cret" not in json.dumps(data), "the password belongs in the Secret"
        # The migration hook brings its own copy: the same config.
        assert rendered_config(docs, f"{FULLNAME}-migrate") == data
        assert cfg.drift.enabled is False  # a CronJob runs it, not every replica
    else:
        assert cfg.store.kind == "chdb" and cfg.store.path == "/data/store"
        assert cfg.drift.enabled is bool(values.get("drift", {}).get("enabled"))
    tests = {TEST_MODEL} if values.get("tests", {}).get("enabled") else set()
    assert {r.match for r in cfg.routes} & {TEST_MODEL} == tests
    if values.get("config", {}).get("providers"):
        assert set(cfg.providers) == {"openai", "local"} | tests and cfg.capture.mode == "full"
    if values.get("drift", {}).get("settings"):
        assert cfg.drift.min_calls == 50


def test_config_and_secret_changes_roll_the_pods(chart: helm_python.Chart):
    def checksums(values: dict[str, Any]) -> dict[str, str]:
        (sts,) = by_kind(manifests(render_raw(chart, values)), "StatefulSet")
        annotations = sts["spec"]["template"]["metadata"]["annotations"]
        return {k: v for k, v in annotations.items() if k.startswith("checksum/")}

    base = checksums(CLICKHOUSE)
    logged = checksums({**CLICKHOUSE, "config": {"log_level": "debug"}})
    rotated = checksums(
        {"store": {**CLICKHOUSE["store"], "clickhouse": {**CLICKHOUSE["store"]["clickhouse"],
                                                         "password": "rotated"}}}
    )  # fmt: skip
    assert logged["checksum/config"] != base["checksum/config"]
    assert logged["checksum/secret"] == base["checksum/secret"]
    assert rotated["checksum/secret"] != base["checksum/secret"]


def test_pods_drain_for_the_gateways_grace_period(chart: helm_python.Chart):
    values = {"gateway": {"shutdownGraceSeconds": 120, "preStopSleepSeconds": 5}}
    docs = manifests(render_raw(chart, values))
    (sts,) = by_kind(docs, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    cfg = parse_config(rendered_config(docs), env={})
    container = pod["containers"][0]
    flush = yaml.safe_load((CHART / "values.yaml").read_text())["gateway"]["flushSeconds"]
    assert cfg.server.shutdown_grace_s == 120
    assert pod["terminationGracePeriodSeconds"] == 5 + 120 + flush
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["ports"][0]["containerPort"] == cfg.server.port
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/data", "/tmp", "/etc/llm-gateway"} == mounts
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"


# ------------------------------------------------------------------------------ bad values
BAD_VALUES = [
    ({"replicaCount": 2}, "store.mode=embedded runs one replica"),
    ({"autoscaling": {"enabled": True}}, "store.mode=embedded cannot autoscale"),
    ({"gateway": {"workers": 4}}, "single-process engine"),
    ({"store": {"mode": "clickhouse"}}, "set store.clickhouse.url"),
    ({"config": {"store": {"kind": "chdb"}}}, "config.store is set by the chart"),
    ({"config": {"drift": {"enabled": True}}}, "use drift.enabled and drift.settings"),
    (
        {**CLICKHOUSE, "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
        "minReplicas must not exceed",
    ),
    ({"store": {"mode": "postgres"}}, "/store/mode"),
    ({"replicaCount": 0}, "/replicaCount"),
    ({"gateway": {"port": "http"}}, "/gateway/port"),
    ({"servicemonitor": {"enabled": True}}, "'servicemonitor' not allowed"),
    ({"store": {"mode": "clickhouse", "clickhouse": {"url": "clickhouse:8123"}}}, "/url"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES)
def test_bad_values_fail_at_render_with_a_message(
    chart: helm_python.Chart, values: dict[str, Any], message: str
):
    with pytest.raises((helm_python.HelmRenderError, helm_python.HelmValuesError)) as e:
        render_raw(chart, values)
    assert message in str(e.value)


# ----------------------------------------------------------------- monitoring and Grafana
def test_monitoring_objects_need_the_operators_api(rendered: dict):
    docs = rendered[("clickhouse-monitoring-without-operator", KUBE_VERSIONS[-1])]
    assert not {d["kind"] for d in docs} & CRD_KINDS


def test_prometheus_rule_passes_promtool(chart: helm_python.Chart, tmp_path: Path):
    promtool = program("promtool")
    values = {**MONITORING, "drift": {"enabled": True}}
    docs = manifests(render_raw(chart, values, PROMETHEUS_OPERATOR))
    (rule,) = by_kind(docs, "PrometheusRule")
    groups = rule["spec"]["groups"]
    source = [
        g
        for f in ("alerts.yml", "drift-alerts.yml")
        for g in yaml.safe_load((DASHBOARDS / "prometheus" / f).read_text())["groups"]
    ]
    assert groups == source  # the repository's rules, unchanged
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump({"groups": groups}))
    # The alerts' unit tests, run against the rendered rules.
    (tmp_path / "alerts_test.yml").write_text((DASHBOARDS / "prometheus" / "alerts_test.yml").read_text())
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        r = subprocess.run(
            [promtool, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert r.returncode == 0, f"promtool {' '.join(args)}:\n{r.stdout}\n{r.stderr}"


def test_prometheus_rule_points_runbooks_where_asked(chart: helm_python.Chart):
    base = "https://wiki.example.com/llm-gateway/runbooks"
    values = {**MONITORING, "monitoring": {"prometheusRule": {"enabled": True,
                                                              "runbookBaseUrl": base}}}  # fmt: skip
    (rule,) = by_kind(manifests(render_raw(chart, values, PROMETHEUS_OPERATOR)), "PrometheusRule")
    urls = [r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert urls and all(u.startswith(base + "#llmgateway") for u in urls), urls


def test_grafana_dashboards_are_configmaps_for_the_sidecar(rendered: dict):
    docs = rendered[("embedded-monitoring", KUBE_VERSIONS[-1])]
    maps = {
        name: d for d in by_kind(docs, "ConfigMap") for name in d["data"] if name.endswith(".json")
    }
    files = sorted((DASHBOARDS / "grafana").glob("*.json"))
    assert sorted(maps) == [f.name for f in files]
    for f in files:
        cm = maps[f.name]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(cm["data"][f.name]) == json.loads(f.read_text())


def test_chart_files_are_the_repositorys_one_copy():
    """files/grafana and files/prometheus are links to dashboards/, not copies."""
    for name in ("grafana", "prometheus"):
        link = CHART / "files" / name
        assert link.is_symlink(), link
        assert link.resolve() == (DASHBOARDS / name).resolve()


def test_notes_give_the_base_url(chart: helm_python.Chart):
    notes = render_raw(chart, CLICKHOUSE)["llm-gateway/templates/NOTES.txt"]
    assert f"http://{FULLNAME}.{NAMESPACE}.svc.cluster.local:8080/v1" in notes
    assert "WARNING" not in notes
    notes = render_raw(chart, {**CLICKHOUSE, **MONITORING})["llm-gateway/templates/NOTES.txt"]
    assert "no ServiceMonitor was created" in notes


def test_service_selects_the_gateway_pods_only(rendered: dict):
    docs = rendered[("clickhouse-autoscaling-existing-secrets", KUBE_VERSIONS[-1])]
    selector = by_kind(docs, "Service")[0]["spec"]["selector"].items()
    (deployment,) = by_kind(docs, "StatefulSet")
    assert selector <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (job,) = by_kind(docs, "Job")
    (cron,) = by_kind(docs, "CronJob")
    for labels in (
        job["spec"]["template"]["metadata"]["labels"],
        cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
    ):
        assert not selector <= labels.items(), labels
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        (obj,) = by_kind(docs, kind)
        key = "selector" if kind == "PodDisruptionBudget" else "podSelector"
        assert obj["spec"][key]["matchLabels"].items() == selector
    (monitor,) = by_kind(docs, "ServiceMonitor")
    service_labels = by_kind(docs, "Service")[0]["metadata"]["labels"].items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels


def hook_weight(obj: dict[str, Any]) -> int | None:
    annotations = obj["metadata"].get("annotations") or {}
    if "helm.sh/hook" not in annotations:
        return None
    return int(annotations.get("helm.sh/hook-weight", "0"))


@pytest.mark.parametrize("name", ["clickhouse", "clickhouse-autoscaling-existing-secrets"])
def test_migration_hook_needs_nothing_the_release_creates_later(name: str, rendered: dict):
    """A pre-install hook runs before the release's own objects exist: everything its pod
    refers to must be an earlier hook, or the user's own (an existingSecret)."""
    docs = rendered[(name, KUBE_VERSIONS[-1])]
    (job,) = by_kind(docs, "Job")
    assert hook_weight(job) is not None
    assert set(job["metadata"]["annotations"]["helm.sh/hook"].split(",")) == {
        "pre-install",
        "pre-upgrade",
    }
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["migrate"]
    refs = {("ConfigMap", v["configMap"]["name"]) for v in pod["volumes"] if "configMap" in v}
    refs |= {
        ("Secret", e["valueFrom"]["secretKeyRef"]["name"])
        for e in container["env"]
        if "valueFrom" in e
    }
    refs |= {("Secret", e["secretRef"]["name"]) for e in container.get("envFrom", [])}
    if "serviceAccountName" in pod:
        refs.add(("ServiceAccount", pod["serviceAccountName"]))
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    external = {("Secret", "ch-creds"), ("Secret", "llm-keys")}
    assert refs, job
    for ref in refs:
        if ref in external:
            continue
        assert ref in objects, f"{ref} is neither rendered nor the user's"
        weight = hook_weight(objects[ref])
        assert weight is not None and weight < hook_weight(job), f"{ref} is not an earlier hook"
