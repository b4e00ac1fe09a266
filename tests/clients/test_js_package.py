"""The browser collector as an npm package (clients/js): built from the script the gateway
serves, its ES module form imports in node and sends what the classic script sends, and its
type declarations name exactly the collector's methods. The classic script itself runs in a
real browser in tests/collectors/intake/test_browser_collector.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "clients" / "js"
SERVED = ROOT / "collectors" / "static" / "feedback.js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None and not os.environ.get("CI"),
    reason="node is not installed (apt-get install nodejs); in CI this test runs",
)

# A page as much as the collector needs: window, document, and a fetch that records.
IN_A_PAGE = """
globalThis.window = globalThis;
window.addEventListener = () => {};
globalThis.document = { currentScript: null, visibilityState: "visible",
                        addEventListener: () => {} };
const sent = [];
globalThis.fetch = async (url, opts) => {
  sent.push({ url, opts });
  return { ok: true, status: 200 };
};
const mod = await import(process.argv[1]);
const fb = mod.default;
if (fb !== mod.LLMFeedback || fb !== window.LLMFeedback) throw new Error("one collector per page");
fb.init({ endpoint: "https://gw.example", key: "pk_test", app: "web", user: "u-1" });
const id = fb.rating("r-1", 4, { comment: "good" });
fb.thumbs("r-1", true);
const status = await fb.flush();
console.log(JSON.stringify({ id, status, methods: Object.keys(fb).sort(),
                             url: sent[0].url, body: JSON.parse(sent[0].opts.body) }));
process.exit(0);  // init() started the periodic flush
"""


def node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NODE or "node", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("npm")
    p = node(str(PACKAGE / "build.mjs"), str(out))
    assert p.returncode == 0, p.stderr
    return out


def test_package_files_are_built_from_the_served_script(built: Path):
    assert (built / "feedback.js").read_bytes() == SERVED.read_bytes()
    pkg = json.loads((PACKAGE / "package.json").read_text())
    for f in pkg["files"]:
        assert (built / f).exists() or (PACKAGE / f).exists(), f
    assert pkg["exports"]["."]["import"] == "./feedback.mjs" and pkg["types"] == "./feedback.d.ts"


def test_es_module_imports_and_sends_events_in_node(built: Path):
    p = node("--input-type=module", "-e", IN_A_PAGE, (built / "feedback.mjs").as_uri())
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["status"] == 200
    assert got["url"] == "https://gw.example/v1/feedback?key=pk_test"
    rating, thumbs = got["body"]
    assert rating["event_id"] == got["id"]
    fields = ("name", "request_id", "value", "comment", "app", "end_user")
    assert {k: rating[k] for k in fields} == {
        "name": "rating", "request_id": "r-1", "value": 4, "comment": "good", "app": "web",
        "end_user": "u-1",
    }  # fmt: skip
    assert (thumbs["name"], thumbs["value"]) == ("thumbs", True)
    declared = re.findall(r"^  (\w+)\(", (PACKAGE / "feedback.d.ts").read_text(), re.M)
    assert sorted(declared) == got["methods"]  # the declarations name every method, no other


def test_es_module_outside_a_browser_exports_undefined(built: Path):
    script = "const m = await import(process.argv[1]); console.log(String(m.default));"
    p = node("--input-type=module", "-e", script, (built / "feedback.mjs").as_uri())
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "undefined"
