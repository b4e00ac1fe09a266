"""The Helm chart under helm/llm-gateway/, rendered and checked without a cluster.

- Helm itself (Helm v4's Go library through `helm-python-sdk`) lints the chart strictly and
  renders it over a matrix of values, with the Kubernetes versions and API groups a real
  cluster would report.
- Every rendered manifest is validated strictly (unknown fields are errors) against the
  Kubernetes OpenAPI schemas of two versions (`kubernetes-validate`, offline).
- The ServiceMonitor and PrometheusRule are validated against the Prometheus Operator's CRD
  schemas, as compiled in the npm package `@kubernetes-models/prometheus-operator`
  (installed under .ci/node by .ci/run). The HTTPRoute is validated against the Gateway
  API's own CRD, vendored under tests/crds/ (its README names the release), strictly.
- What the chart adds to the gateway config (public host names, Redis, `helm test`'s
  provider, route and key) is checked through the gateway's own parsing;
  tests/helm/test_helm_e2e.py runs the `helm test` Pod's check and the bundled Redis's
  arguments for real.
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
            "config": {
                **PROVIDERS,
                "auth": {"require_key": True, "allowed_hosts": ["own.example.com"]},
            },
        },
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
    # What chart 0.1.0 took, and what to do now.
    ({"env": [{"name": "A", "value": "b"}]}, "env was renamed extraEnv"),
    ({"envFrom": [{"secretRef": {"name": "s"}}]}, "envFrom was renamed extraEnvFrom"),
    ({"store": {"logVolumeSizeLimit": "1Gi"}}, "sized by persistence.size"),
    # Redis named twice, or behind the chart's back.
    ({"redis": {"url": "redis://r:6379", "existingSecret": "r"}}, "both name a Redis"),
    ({"redis": {"url": "redis://r:6379", "bundled": {"enabled": True}}}, "leave redis.url"),
    (
        {"redis": {"url": "redis://r:6379"}, "config": {"auth": {"redis_url": "redis://x"}}},
        "config.auth.redis_url is set by the chart",
    ),
    ({"redis": {"url": "r:6379"}}, "/redis/url"),
    # helm test adds to providers and routes: it needs both, or neither.
    (
        {"tests": {"enabled": True}, "config": {"providers": PROVIDERS["providers"]}},
        "declare the one that is missing",
    ),
    (
        {
            "ingress": {
                "enabled": True,
                "hosts": [{"host": "LLM.Example.com", "paths": [{"path": "/"}]}],
            }
        },
        "/ingress/hosts/0/host",
    ),
    ({"httpRoute": {"enabled": True, "parentRefs": []}}, "/httpRoute/parentRefs"),
    ({"extraVolumeMounts": [{"name": "ca"}]}, "mountPath"),
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
    (tmp_path / "alerts_test.yml").write_text(
        (DASHBOARDS / "prometheus" / "alerts_test.yml").read_text()
    )
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
    # The dashboards' runbook links go to the same page; nothing else of them changes.
    values["grafana"] = {"dashboards": {"enabled": True}}
    maps = by_kind(manifests(render_raw(chart, values, PROMETHEUS_OPERATOR)), "ConfigMap")
    boards = {n: json.loads(t) for m in maps for n, t in m["data"].items() if n.endswith(".json")}
    links = [x["url"] for d in boards.values() for p in d["panels"] for x in p.get("links", [])]
    assert links and all(u.startswith(base + "#llmgateway") for u in links), links
    original = json.loads((DASHBOARDS / "grafana" / "gateway-overview.json").read_text())
    rewritten = json.dumps(boards["gateway-overview.json"]).replace(base, RUNBOOKS_PAGE)
    assert json.loads(rewritten) == original


RUNBOOKS_PAGE = "https://github.com/llm-gateway/llm-gateway/blob/main/docs/runbooks.md"


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


# ------------------------------------------------------------ the record log (issue 20, 8)
@pytest.mark.parametrize("name", ["embedded", "clickhouse", "exposed"])
def test_record_log_is_on_the_statefulsets_volume_claim(name: str, rendered: dict):
    """In every store mode the durable record log is on the pod's volume claim, so a
    rescheduled pod keeps the records it had not written yet (an emptyDir would not)."""
    docs = rendered[(name, KUBE_VERSIONS[-1])]
    (sts,) = by_kind(docs, "StatefulSet")
    assert not by_kind(docs, "Deployment")
    pod = sts["spec"]["template"]["spec"]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert claim["metadata"]["name"] not in {v["name"] for v in pod["volumes"]}
    gateway = next(c for c in pod["containers"] if c["name"] == "gateway")
    (mount,) = [m for m in gateway["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    log_dir = parse_config(rendered_config(docs), env=POD_ENV).log.dir
    assert Path(log_dir).is_relative_to(mount["mountPath"]), (log_dir, mount)
    # Scaled-down replicas keep their claims, and with them the records they could not send.
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"


def test_without_persistence_the_log_is_on_an_emptydir(rendered: dict):
    docs = rendered[("embedded-monitoring", KUBE_VERSIONS[-1])]
    (sts,) = by_kind(docs, "StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}


def test_clickhouse_replicas_start_together(rendered: dict):
    docs = rendered[("clickhouse", KUBE_VERSIONS[-1])]
    (sts,) = by_kind(docs, "StatefulSet")
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["podManagementPolicy"] == "Parallel"
    docs = rendered[("clickhouse-autoscaling-existing-secrets", KUBE_VERSIONS[-1])]
    (sts,) = by_kind(docs, "StatefulSet")
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    assert "replicas" not in sts["spec"]  # the HPA owns it
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", sts["metadata"]["name"])


# --------------------------------------------------------------- Ingress and HTTPRoute
def test_httproute_matches_the_gateway_api_schema(rendered: dict):
    routes = [d for docs in rendered.values() for d in by_kind(docs, "HTTPRoute")]
    assert routes
    for route in routes:
        assert crd_errors(route) == [], route
        # The CRD's CEL rule the schema alone cannot check: a Service backend has a port.
        for rule in route["spec"]["rules"]:
            for ref in rule["backendRefs"]:
                assert (ref["name"], ref["port"]) == (FULLNAME, 8080)
    # A pass means something: the schema refuses what the API server would.
    route = routes[0]
    for path, value, error in [
        (("spec", "hostnames"), ["LLM.example.com"], "spec/hostnames/0"),
        (("spec", "hostname"), "llm.example.com", "'hostname' was unexpected"),
        (("spec", "rules", 0, "matches", 0, "path", "type"), "Prefix", "is not one of"),
        (("spec", "rules", 0, "timeouts", "request"), "ten minutes", "spec/rules/0/timeouts"),
    ]:
        bad = json.loads(json.dumps(route))
        *parents, last = path
        target = bad
        for key in parents:
            target = target[key]
        target[last] = value
        errors = crd_errors(bad)
        assert any(error in e for e in errors), (path, errors)


def test_ingress_and_route_lead_to_the_gateway_service(rendered: dict):
    docs = rendered[("exposed", KUBE_VERSIONS[-1])]
    (service,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == FULLNAME]
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    (ingress,) = by_kind(docs, "Ingress")
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert ingress["metadata"]["annotations"] == INGRESS["annotations"]
    assert spec["tls"] == [{"hosts": ["llm.example.com", "tls-only.example.com"],
                            "secretName": "llm-tls"}]  # fmt: skip
    backends = [
        (r.get("host"), p["path"], p["pathType"], p["backend"]["service"])
        for r in spec["rules"]
        for p in r["http"]["paths"]
    ]
    target = {"name": FULLNAME, "port": {"name": "http"}}
    assert backends == [
        ("llm.example.com", "/", "Prefix", target),
        ("*.llm.example.org", "/v1", "Prefix", target),
    ]
    assert "http" in ports
    (route,) = by_kind(docs, "HTTPRoute")
    assert route["spec"]["parentRefs"] == HTTP_ROUTE["parentRefs"]
    assert route["spec"]["hostnames"] == HTTP_ROUTE["hostnames"]
    (rule,) = route["spec"]["rules"]
    assert rule["timeouts"] == {"request": "600s"}
    assert rule["backendRefs"] == [{"name": FULLNAME, "port": ports["http"]}]


def test_public_host_names_are_allowed_by_the_gateway(rendered: dict):
    """The gateway refuses a public Host it was not told about (DNS rebinding): the names
    the Ingress and HTTPRoute serve join auth.allowed_hosts, next to the user's own."""
    from gateway.access.origin import OriginGuard

    def guard(name: str) -> OriginGuard:
        auth = parse_config(rendered_config(rendered[(name, KUBE_VERSIONS[-1])]), POD_ENV).auth
        return OriginGuard(auth.allowed_origins, auth.allowed_hosts)

    exposed = guard("exposed")
    assert set(exposed.hosts) == {"own.example.com", "llm.example.com", "*.llm.example.org",
                                  "tls-only.example.com", "route.example.com"}  # fmt: skip
    for host in ("llm.example.com", "a.llm.example.org:443", "route.example.com",
                 "own.example.com", "gw-llm-gateway.llm.svc:8080"):  # fmt: skip
        assert exposed.check(host, "") is None, host
    assert exposed.check("evil.example.net", "") is not None
    # Nothing exposed: only the names nobody outside can own are accepted.
    assert guard("clickhouse").hosts == ()
    assert guard("clickhouse").check("llm.example.com", "") is not None


# ----------------------------------------------------------------------------- extras
def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template of the release, by its workload's kind."""
    out = {}
    for d in docs:
        spec = d.get("spec", {})
        if d["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            out[f"{d['kind']}/{d['metadata']['name']}"] = spec["template"]
    return out


def test_extras_reach_every_container_that_runs_the_gateway(rendered: dict):
    docs = rendered[("exposed", KUBE_VERSIONS[-1])]
    pods = pod_specs(docs)
    gateway_pod = pods[f"StatefulSet/{FULLNAME}"]
    job_pod = pods[f"Job/{FULLNAME}-migrate"]
    for pod in (gateway_pod, job_pod):
        spec = pod["spec"]
        assert EXTRAS["extraVolumes"][0] in spec["volumes"]
        runs_gateway = [c for c in spec["containers"] if c["name"] != "proxy"]
        for c in runs_gateway:
            assert EXTRAS["extraEnv"][0] in c["env"], c["name"]
            assert EXTRAS["extraEnvFrom"][0] in c["envFrom"], c["name"]
            assert EXTRAS["extraVolumeMounts"][0] in c["volumeMounts"], c["name"]
    names = [c["name"] for c in gateway_pod["spec"]["containers"]]
    assert names == ["gateway", "proxy"]  # the sidecar, in the gateway's pod only
    assert [c["name"] for c in job_pod["spec"]["containers"]] == ["migrate"]
    meta = gateway_pod["metadata"]
    assert meta["annotations"]["example.com/team"] == "ml-platform"
    assert meta["labels"]["team"] == "ml-platform"
    (sts,) = by_kind(docs, "StatefulSet")
    assert "team" not in sts["spec"]["selector"]["matchLabels"]  # labels added, selector not


# ------------------------------------------------------------------------------- Redis
def test_an_existing_redis_is_read_from_a_secret(rendered: dict):
    docs = rendered[("exposed", KUBE_VERSIONS[-1])]
    secret = named(docs, "Secret", f"{FULLNAME}-redis")
    assert secret["stringData"] == {"url": "redis://:pw@redis.cache.svc:6379/0"}
    data = rendered_config(docs)
    assert "redis://" not in json.dumps(data), "the URL may hold a password: Secret only"
    (sts,) = by_kind(docs, "StatefulSet")
    (gateway,) = [
        c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "gateway"
    ]
    (env,) = [e for e in gateway["env"] if e["name"] == "LLM_GATEWAY_REDIS_URL"]
    assert env["valueFrom"]["secretKeyRef"] == {"name": f"{FULLNAME}-redis", "key": "url"}
    assert parse_config(data, POD_ENV).auth.redis_url == POD_ENV["LLM_GATEWAY_REDIS_URL"]
    assert not [d for d in by_kind(docs, "Deployment") if "redis" in d["metadata"]["name"]]


def test_a_users_redis_secret_is_used_as_is(chart: helm_python.Chart):
    values = {**CLICKHOUSE, "redis": {"existingSecret": "my-redis", "existingSecretKey": "uri"}}
    docs = manifests(render_raw(chart, values))
    assert not [s for s in by_kind(docs, "Secret") if s["metadata"]["name"].endswith("-redis")]
    (sts,) = by_kind(docs, "StatefulSet")
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env["LLM_GATEWAY_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "my-redis", "key": "uri"}


def test_the_bundled_redis_serves_the_gateway_pods_only(rendered: dict):
    docs = rendered[("several-replicas-example", KUBE_VERSIONS[-1])]
    redis = named(docs, "Deployment", f"{FULLNAME}-redis")
    pod = redis["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "docker.io/valkey/valkey:8.1.4-alpine"
    assert container["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    (pw,) = container["env"]
    assert pw["valueFrom"]["secretKeyRef"] == {"name": f"{FULLNAME}-redis", "key": "password"}
    password = named(docs, "Secret", f"{FULLNAME}-redis")["stringData"]["password"]
    assert len(password) == 32 and password.isalnum()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    service = named(docs, "Service", f"{FULLNAME}-redis")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    gateway_labels = pod_specs(docs)[f"StatefulSet/{FULLNAME}"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= gateway_labels.items()
    policy = named(docs, "NetworkPolicy", f"{FULLNAME}-redis")
    assert policy["spec"]["podSelector"]["matchLabels"] == service["spec"]["selector"]
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"].items() <= gateway_labels.items()
    cfg = parse_config(rendered_config(docs), POD_ENV)
    assert cfg.auth.redis_url == (
        f"redis://:{POD_ENV['LLM_GATEWAY_REDIS_PASSWORD']}@{FULLNAME}-redis:6379/0"
    )
    assert cfg.auth.require_key is True


def test_notes_warn_when_replicas_share_no_redis(chart: helm_python.Chart):
    warning = "several replicas and no Redis"
    notes = render_raw(chart, {**CLICKHOUSE, "replicaCount": 3})
    assert warning in notes["llm-gateway/templates/NOTES.txt"]
    with_redis = {**CLICKHOUSE, "replicaCount": 3, "redis": {"url": "redis://r:6379/0"}}
    assert warning not in render_raw(chart, with_redis)["llm-gateway/templates/NOTES.txt"]
    assert warning not in render_raw(chart, CLICKHOUSE)["llm-gateway/templates/NOTES.txt"]


# ------------------------------------------------------------------------ the helm test
def hook_objects(docs: list[dict[str, Any]], hook: str) -> list[dict[str, Any]]:
    return [d for d in docs if (d["metadata"].get("annotations") or {}).get("helm.sh/hook") == hook]


def test_helm_test_hook_reaches_its_fake_upstream_through_the_gateway(rendered: dict):
    docs = rendered[("exposed", KUBE_VERSIONS[-1])]
    tests = {(d["kind"], d["metadata"]["name"]): d for d in hook_objects(docs, "test")}
    pod = tests[("Pod", f"{FULLNAME}-test")]
    upstream = tests[("Service", f"{FULLNAME}-test-upstream")]
    assert ("ConfigMap", f"{FULLNAME}-test") in tests
    assert set(tests) == {("Pod", f"{FULLNAME}-test"), ("Service", f"{FULLNAME}-test-upstream"),
                          ("ConfigMap", f"{FULLNAME}-test")}  # fmt: skip
    assert all(hook_weight(d) < hook_weight(pod) for d in tests.values() if d is not pod)
    # The Pod serves the fake upstream behind that Service, and calls the gateway's.
    assert upstream["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["GATEWAY_URL"] == f"http://{FULLNAME}.{NAMESPACE}.svc:8080"
    assert container["ports"] == [{"name": "upstream", "containerPort": 8081, "protocol": "TCP"}]
    # The gateway routes the test's model, and nothing else, to that Service.
    cfg = parse_config(rendered_config(docs), POD_ENV)
    assert cfg.routes[0].match == TEST_MODEL and cfg.routes[0].targets[0].provider == TEST_MODEL
    assert cfg.providers[TEST_MODEL].base_url == (
        f"http://{FULLNAME}-test-upstream.{NAMESPACE}.svc:8081/v1"
    )
    assert cfg.providers[TEST_MODEL].price_as == ""  # a fake's answers cost nothing
    assert [r.match for r in cfg.routes[1:]] == ["llama*", "*"]  # the user's, after it
    # The key the test calls with is allowed that model only, and is the gateway pods' too.
    (key,) = [k for k in cfg.auth.keys if k.name == TEST_MODEL]
    assert key.limits.models == (TEST_MODEL,)
    assert env["GATEWAY_KEY"]["secretKeyRef"] == {"name": f"{FULLNAME}-helm-test", "key": "key"}
    gateway = pod_specs(docs)[f"StatefulSet/{FULLNAME}"]["spec"]["containers"][0]
    (ref,) = [e for e in gateway["env"] if e["name"] == "LLM_GATEWAY_HELM_TEST_KEY"]
    assert ref["valueFrom"]["secretKeyRef"] == env["GATEWAY_KEY"]["secretKeyRef"]
    # The gateway's NetworkPolicy lets the test Pod in, and the gateway out to it.
    (policy,) = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == FULLNAME]
    test_peer = {"podSelector": {"matchLabels": upstream["spec"]["selector"]}}
    assert test_peer in policy["spec"]["ingress"][0]["from"]
    assert {"to": [test_peer], "ports": [{"port": 8081, "protocol": "TCP"}]} in policy["spec"][
        "egress"
    ]


@pytest.mark.parametrize("name", ["embedded", "clickhouse"])
def test_nothing_of_the_helm_test_exists_unless_enabled(name: str, rendered: dict):
    docs = rendered[(name, KUBE_VERSIONS[-1])]
    assert hook_objects(docs, "test") == []
    assert not [d for d in docs if "test" in d["metadata"]["name"]]
    text = json.dumps(docs)
    assert TEST_MODEL not in text and "LLM_GATEWAY_HELM_TEST_KEY" not in text


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OPENAI_BASE_URL": "http://vllm:8000/v1", "OPENAI_API_KEY": "sk-o",
         "ANTHROPIC_BASE_URL": "http://claude-proxy:8080", "ANTHROPIC_API_KEY": "sk-a"},
    ],
)  # fmt: skip
def test_helm_test_keeps_the_zero_config_providers(env: dict[str, str], rendered: dict):
    """Without providers in its config the gateway makes OpenAI's and Anthropic's from the
    SDKs' variables. helm test must add its provider, so the chart writes those two out:
    the gateway must end up with the same providers and routes as without the chart."""
    docs = rendered[("embedded-tests", KUBE_VERSIONS[-1])]
    env = {**env, "LLM_GATEWAY_HELM_TEST_KEY": POD_ENV["LLM_GATEWAY_HELM_TEST_KEY"]}
    with_test = parse_config(rendered_config(docs), env)
    zero = parse_config({}, env)
    providers = dict(with_test.providers)
    assert providers.pop(TEST_MODEL).base_url.endswith(".svc:8081/v1")
    assert providers == zero.providers
    assert with_test.routes[0].match == TEST_MODEL and with_test.routes[1:] == zero.routes


def test_notes_say_how_to_run_the_helm_test(chart: helm_python.Chart):
    notes = render_raw(chart, {"tests": {"enabled": True}})["llm-gateway/templates/NOTES.txt"]
    assert "helm test gw --namespace llm" in notes and f"{FULLNAME}-test-upstream" in notes
    notes = render_raw(chart, {})["llm-gateway/templates/NOTES.txt"]
    assert "set tests.enabled=true" in notes


# ---------------------------------------------------------------------- Chart.yaml
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())


def test_artifacthub_lists_every_image_the_chart_runs(chart: helm_python.Chart):
    """With every part that runs a container turned on, and the images left as they are."""
    listed = yaml.safe_load(CHART_META["annotations"]["artifacthub.io/images"])
    values = {**CLICKHOUSE, "drift": {"enabled": True}, "tests": {"enabled": True},
              "redis": {"bundled": {"enabled": True}}}  # fmt: skip
    docs = manifests(render_raw(chart, values))
    pods = [*pod_specs(docs).values(), *by_kind(docs, "Pod")]
    assert len(pods) == 5  # gateway, migration, drift, Redis, helm test
    images = {c["image"] for p in pods for c in p["spec"]["containers"]}
    assert images == {i["image"] for i in listed}


def test_chart_metadata_for_artifact_hub():
    meta = CHART_META
    repo = "https://github.com/llm-gateway/llm-gateway"
    assert meta["home"] == repo and repo in meta["sources"]
    assert meta["maintainers"] and all(m["name"] for m in meta["maintainers"])
    assert {"llm", "openai", "gateway"} <= set(meta["keywords"])
    # The icon is a file of this repository, at the URL it will have once pushed.
    prefix = "https://raw.githubusercontent.com/llm-gateway/llm-gateway/main/"
    assert meta["icon"].startswith(prefix)
    assert (ROOT / meta["icon"].removeprefix(prefix)).is_file()
    changes = yaml.safe_load(meta["annotations"]["artifacthub.io/changes"])
    kinds = {"added", "changed", "deprecated", "removed", "fixed", "security"}
    assert changes and all(c["kind"] in kinds and c["description"] for c in changes)
    links = yaml.safe_load(meta["annotations"]["artifacthub.io/links"])
    assert all(link["url"].startswith("https://") for link in links)
