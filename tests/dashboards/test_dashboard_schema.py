"""The Grafana dashboards type-checked against Grafana's own schema, `@grafana/schema` (npm).

Each dashboard JSON becomes a TypeScript module that assigns it to the package's `Dashboard`
type (plus the `__inputs`/`__requires` an importable dashboard carries), and `tsc --strict`
checks them: a misspelt key, a wrong type or an unknown enum value is a compile error.
The package and TypeScript are installed under .ci/node by .ci/run (`npm ci`).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.conftest import ROOT
from tests.prereqs import ci_node_package

GRAFANA = ROOT / "dashboards" / "grafana"
NODE_MODULES = ROOT / ".ci" / "node" / "node_modules"
SCHEMA = NODE_MODULES / "@grafana" / "schema"

IMPORTABLE = """\
import type { AnnotationQuery, Dashboard, DataQuery } from "@grafana/schema";

// What "export for sharing externally" adds: the data sources to ask for at import.
interface DataSourceInput {
  name: string;
  label: string;
  description: string;
  type: "datasource";
  pluginId: string;
  pluginName: string;
}
interface Requirement {
  type: "grafana" | "datasource" | "panel";
  id: string;
  name: string;
  version: string;
}
// JSON spells an enum member by its value: a string enum E becomes the union of its values.
type AsJson<T> = T extends string
  ? `${T}`
  : T extends readonly (infer U)[]
    ? AsJson<U>[]
    : T extends object
      ? { [K in keyof T]: AsJson<T[K]> }
      : T;
// An annotation's query belongs to its data source plugin, as a panel's targets do.
type PluginQuery = DataQuery & Record<string, unknown>;
export type Importable = AsJson<Omit<Dashboard, "annotations">> & {
  annotations?: { list?: AsJson<AnnotationQuery<PluginQuery>>[] };
  __inputs: DataSourceInput[];
  __requires: Requirement[];
};
"""
TSCONFIG = {
    "compilerOptions": {
        "strict": True,
        "noEmit": True,
        "target": "ES2022",
        "module": "ESNext",
        "moduleResolution": "Bundler",
        "skipLibCheck": True,
        "types": [],
    },
    "include": ["*.ts"],
}


def tsc() -> Path:
    ci_node_package("@grafana/schema")
    ci_node_package("typescript")
    return NODE_MODULES / ".bin" / "tsc"


def write_project(directory: Path, dashboards: dict[str, object]) -> None:
    (directory / "node_modules").symlink_to(NODE_MODULES)
    (directory / "tsconfig.json").write_text(json.dumps(TSCONFIG))
    (directory / "importable.ts").write_text(IMPORTABLE)
    for name, dashboard in dashboards.items():
        module = (
            'import type { Importable } from "./importable";\n\n'
            f"const dashboard: Importable = {json.dumps(dashboard, indent=2)};\n"
            "export default dashboard;\n"
        )
        (directory / f"{name}.ts").write_text(module)


def run_tsc(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tsc()), "-p", str(directory), "--pretty", "false"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_dashboards_type_check_against_grafana_schema(tmp_path: Path):
    dashboards = {
        p.stem.replace("-", "_"): json.loads(p.read_text()) for p in GRAFANA.glob("*.json")
    }
    assert len(dashboards) >= 3
    # One deliberately broken copy: the check must be able to fail, and fail on that file.
    broken = json.loads(json.dumps(next(iter(dashboards.values()))))
    broken["graphTooltip"] = "shared"
    broken["templating"]["list"][0]["refresh"] = "always"
    write_project(tmp_path, {**dashboards, "broken_copy": broken})
    result = run_tsc(tmp_path)
    errors = [line for line in result.stdout.splitlines() if "error TS" in line]
    outside = [e for e in errors if Path(e.split("(", 1)[0]).name != "broken_copy.ts"]
    assert not outside, "\n".join(outside)
    assert len(errors) >= 2, result.stdout + result.stderr


def test_dashboards_use_the_current_schema_version():
    tsc()
    source = (SCHEMA / "dist" / "esm" / "raw" / "dashboard" / "x" / "types.gen.mjs").read_text()
    current = int(re.search(r"schemaVersion: (\d+)", source).group(1))
    for path in sorted(GRAFANA.glob("*.json")):
        assert json.loads(path.read_text())["schemaVersion"] == current, path.name
