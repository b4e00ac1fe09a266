"""The collector as an npm package (clients/js): built from the script the gateway serves;
in a page its ES module form sends what the classic script sends; in Node, packed and
installed as an app installs it, `import feedback from "llm-gateway-feedback"` (ES module)
and `require("llm-gateway-feedback")` (CommonJS) send events to a running gateway, and the
type declarations compile for both and name exactly the collector's methods. The classic
script itself runs in a real browser in tests/collectors/intake/test_browser_collector.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, GatewayProcess
from tests.prereqs import ci_node_package, program

PACKAGE = ROOT / "clients" / "js"
SERVED = ROOT / "collectors" / "static" / "feedback.js"


@pytest.fixture(scope="module", autouse=True)
def node_program() -> str:
    return program("node")


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


def node(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([program("node"), *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd)  # fmt: skip


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
    entry = pkg["exports"]["."]
    assert entry["import"] == {"types": "./feedback.d.ts", "default": "./feedback.mjs"}
    assert entry["require"] == {"types": "./feedback.d.cts", "default": "./feedback.cjs"}
    assert pkg["main"] == "./feedback.cjs"


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


# ------------------------------------------------------------------- in Node, installed
@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An app's directory with the package installed from the tarball `npm pack` makes."""
    npm = program("npm")
    app = tmp_path_factory.mktemp("node-app")
    p = subprocess.run([npm, "pack", "--silent", "--pack-destination", str(app), str(PACKAGE)],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stderr
    (tarball,) = app.glob("llm-gateway-feedback-*.tgz")
    (app / "package.json").write_text('{"name": "app", "private": true}')
    install = [npm, "install", "--silent", "--no-audit", "--no-fund", "--offline", str(tarball)]
    p = subprocess.run(install, cwd=app, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return app


# Neither flushes nor exits by hand: the process ends when its work is done, and what it
# queued is sent before it does.
SENDS_ESM = """
import feedback from "llm-gateway-feedback";
import { LLMFeedback } from "llm-gateway-feedback";
if (feedback !== LLMFeedback) throw new Error("one collector");
feedback.init({ endpoint: process.argv[2], app: "node-esm" });
console.log(feedback.rating(process.argv[3], 4, { comment: "from node" }));
console.log(feedback.accepted(process.argv[3]));
console.log(JSON.stringify(Object.keys(feedback).sort()));
"""
SENDS_CJS = """
const feedback = require("llm-gateway-feedback");
if (feedback.default !== feedback || feedback.LLMFeedback !== feedback) throw new Error("names");
feedback.init({ endpoint: process.argv[2], app: "node-cjs" });
console.log(feedback.copy(process.argv[3]));
console.log(feedback.thumbs(process.argv[3], false));
console.log(JSON.stringify(Object.keys(feedback).sort()));
"""


def llm_call(gw: GatewayProcess) -> str:
    call = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
    r = httpx.post(gw.url + "/v1/chat/completions", json=call, timeout=10)
    assert r.status_code == 200, r.text
    return r.headers["x-request-id"]


@pytest.mark.parametrize(
    ("script", "name", "app_name"),
    [(SENDS_ESM, "send.mjs", "node-esm"), (SENDS_CJS, "send.cjs", "node-cjs")],
)
def test_node_imports_the_package_and_sends_events(
    app: Path, gateway: GatewayProcess, script: str, name: str, app_name: str
):
    rid = llm_call(gateway)
    (app / name).write_text(script)
    p = node(name, gateway.url, rid, cwd=app)
    assert p.returncode == 0, p.stderr
    *ids, keys = p.stdout.split()
    declared = re.findall(r"^  (\w+)\(", (PACKAGE / "feedback.d.ts").read_text(), re.M)
    assert json.loads(keys) == sorted(declared)  # the declarations name every method, no other
    got = gateway.wait_rows(f"request_id = '{rid}'", len(ids), table="llm_feedback")
    assert sorted(r["event_id"] for r in got) == sorted(ids)
    assert {r["app"] for r in got} == {app_name}


TYPED_ESM = """
import feedback, { LLMFeedback, type InitOptions } from "llm-gateway-feedback";
const options: InitOptions = { endpoint: "http://127.0.0.1:8080", app: "typed" };
const api: typeof LLMFeedback = feedback.init(options);
const id: string = api.rating("r-1", 4, { comment: "x" });
const sent: Promise<number | null> = feedback.flush();
"""
TYPED_CJS = """
import feedback = require("llm-gateway-feedback");
const options: feedback.InitOptions = { endpoint: "http://127.0.0.1:8080" };
feedback.init(options);
const id: string = feedback.default.accepted("r-1");
"""
MISTYPED = """
import feedback from "llm-gateway-feedback";
feedback.rating("r-1", "four");
feedback.acepted("r-1");
"""


def test_the_package_is_typed_for_import_and_require(app: Path):
    tsc = ci_node_package("typescript") / "bin" / "tsc"
    (app / "typed.mts").write_text(TYPED_ESM)
    (app / "typed.cts").write_text(TYPED_CJS)
    (app / "mistyped.mts").write_text(MISTYPED)
    flags = ["--strict", "--noEmit", "--module", "nodenext", "--moduleResolution", "nodenext"]
    p = node(str(tsc), *flags, "typed.mts", "typed.cts", cwd=app)
    assert p.returncode == 0, p.stdout + p.stderr
    p = node(str(tsc), *flags, "mistyped.mts", cwd=app)  # the types do check something
    assert "'string' is not assignable to parameter of type 'number'" in p.stdout, p.stdout
    assert "Property 'acepted' does not exist" in p.stdout, p.stdout
