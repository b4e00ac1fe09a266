"""Rendering the Helm chart (helm/llm-gateway) with Helm's own library, and validating
custom resources against their CRDs' schemas. Shared by tests/helm/test_helm.py and
tests/helm/test_helm_e2e.py."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import yaml
from helm_python import _native

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "llm-gateway"
CRDS = Path(__file__).resolve().parent / "crds"
KUBE_VERSIONS = ("1.30.0", "1.31.0")
RELEASE, NAMESPACE = "gw", "llm"
FULLNAME = f"{RELEASE}-llm-gateway"


def load_chart() -> helm_python.Chart:
    helm_python.disable_logging()  # it reports each followed symlink under files/
    return helm_python.Chart.load(CHART)


def render_raw(
    chart: helm_python.Chart,
    values: dict[str, Any],
    api_versions: list[str] = (),  # type: ignore[assignment]
    kube_version: str = KUBE_VERSIONS[-1],
) -> dict[str, str]:
    """`helm template --kube-version --api-versions`. `Chart.render` does not take those two
    options yet; the library under it does, so call it the same way with them added."""
    opts = {
        "name": RELEASE,
        "namespace": NAMESPACE,
        "is_install": True,
        "kube_version": f"v{kube_version}",
        "api_versions": list(api_versions),
    }
    out = _native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts))
    return json.loads(out)


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return found


def rendered_config(docs: list[dict[str, Any]], name: str = FULLNAME) -> dict[str, Any]:
    """The gateway config file the chart's ConfigMap holds."""
    return yaml.safe_load(named(docs, "ConfigMap", name)["data"]["config.yaml"])


# ------------------------------------------------------------------------ CRD schemas
def _strict(schema: Any) -> Any:
    """The schema as the API server applies it with strict field validation: an object
    that lists its properties admits no others (unless it preserves unknown fields)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> a validator, for every CRD vendored under tests/crds/."""
    out = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked apart
            key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
            out[key] = jsonschema.Draft7Validator(schema)
    return out


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """What the CRD's schema finds wrong with `obj` ("path: message" each)."""
    validator = crd_validators()[(obj["apiVersion"], obj["kind"])]
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    ]
