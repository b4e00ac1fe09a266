"""Every command in README.md and docs/*.md runs as written, as a new user runs it after the
quick start: from the checkout, in a shell whose PATH does not have the project's
virtualenv (so `llm-gateway ...` without `uv run` fails as it would for them).

What runs: the shell blocks, line by line (the quick start's `uv run llm-gateway serve`
starts the gateway the others talk to, on a free port instead of 8080, with the SDK
variables pointing at a fake upstream), the commands the text gives inline, the SQL blocks
through `uv run llm-gateway sql`, and the YAML blocks through the config validation. A
command that cannot run here is listed in NOT_RUN with the reason; anything new runs by
default.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import yaml

from gateway.access.keys import new_secret
from gateway.config import parse_config
from gateway.sections import _ENV_RE
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = ("uv", "pip", "npm", "python", "python3", "llm-gateway", "curl", "helm", "kubectl",
            "docker")  # fmt: skip
QUICKSTART = "uv run llm-gateway serve"
DOCUMENTED_PORT = "127.0.0.1:8080"

# (document, command, reason). A command ending in a space is a prefix.
NOT_RUN = [
    ("README.md", "pip install uv", "installs uv, which runs this test suite"),
    ("README.md", "uv run pytest", "the test suite itself"),
    ("README.md", "npm pack clients/js",
     "tests/clients/test_js_package.py packs the package (into a temporary directory)"),
    ("README.md", "uv build clients/python", "tests/clients/test_feedback_client.py runs it in "
     "a copy of the workspace and looks where the README says it writes "
     "(test_the_readme_says_where_uv_build_writes_the_wheel): here it would write into the "
     "checkout"),
    ("README.md", "uv add ../llm-gateway/clients/python",
     "a path relative to the reader's own app project"),
    ("README.md", "uv run llm-gateway migrate --cluster NAME", "needs a ClickHouse cluster"),
    ("README.md", "uv run llm-gateway store repair",
     "needs a damaged store and the gateway stopped: "
     "tests/gateway/recording/store/test_repair.py damages one and repairs it"),
    ("README.md", "uv run llm-gateway replay --log-dir /mnt/old-replica/log",
     "needs a record log no gateway holds: tests/gateway/commands/test_long_commands.py "
     "replays one"),
    ("README.md", "uv run llm-gateway experiments report summarizer-model --json",
     "needs the experiment declared in the configuration above; "
     "tests/gateway/experiments/test_experiments_e2e.py runs the report"),
    ("README.md", 'uv run llm-gateway sql ...',
     "a placeholder: the queries themselves are the sql blocks, run below"),
    ("docs/feedback-queries.md", 'uv run llm-gateway sql ...',
     "a placeholder: the queries are the README's sql blocks, run below"),
    ("README.md", "docker ", "builds and pushes an image (tests/test_container_image.py)"),
    ("README.md", "kubectl ", "needs a Kubernetes cluster"),
    ("README.md", "helm install ", "needs a Kubernetes cluster (tests/helm/test_helm.py renders "
     "the chart)"),
    ("README.md", "helm test ", "needs a Kubernetes cluster (tests/helm/test_helm_e2e.py runs the "
     "test Pod's check against a gateway started with the rendered config)"),
    ("README.md", "helm template", "a tool's way of rendering, named, not run"),
    ("README.md", "npm ci --prefix .ci/node",
     "installs the test suite's own node packages, which the running suite uses"),
    ("README.md", "llm-gateway migrate", "the chart's pre-install Job, inside the image"),
    ("README.md", "llm-gateway drift", "the chart's CronJob, inside the image"),
    ("docs/runbooks.md", "llm-gateway drift",
     "run in the gateway's pod, where llm-gateway is on PATH"),
]  # fmt: skip


@dataclass(frozen=True)
class Command:
    doc: str  # path relative to the root
    text: str  # as written (continuation lines joined)

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text, comments=True)

    @property
    def norm(self) -> str:
        """The command without its comment, for matching (quotes are dropped)."""
        return " ".join(self.words)


def _fenced(text: str) -> Iterator[tuple[str, str]]:
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        yield m.group(1), m.group(2)


def _shell_lines(block: str) -> Iterator[str]:
    """Logical commands of a shell block: lines joined while a quote is open or a line
    ends with a backslash."""
    acc = ""
    for line in block.splitlines(keepends=True):
        acc += line
        if acc.rstrip().endswith("\\"):
            continue
        try:
            words = shlex.split(acc, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        if words:
            yield acc.strip()
        acc = ""
    assert not acc.strip(), f"unterminated command: {acc!r}"


def commands() -> list[Command]:
    out = []
    for path in DOCS:
        text = path.read_text()
        doc = str(path.relative_to(ROOT))
        for lang, block in _fenced(text):
            if lang in ("sh", "bash", "shell", "console"):
                out += [Command(doc, c) for c in _shell_lines(block)]
        prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
        for span in re.findall(r"`([^`\n]+)`", prose):
            if span.split(" ", 1)[0] in PROGRAMS and " " in span:
                out.append(Command(doc, span))
    return out


def not_run(c: Command) -> str | None:
    for doc, cmd, reason in NOT_RUN:
        prefix = cmd.endswith(" ") and (c.norm + " ").startswith(cmd)
        if doc == c.doc and (c.norm == cmd or prefix):
            return reason
    return None


def sql_blocks() -> list[tuple[str, str]]:
    return [(str(p.relative_to(ROOT)), b) for p in DOCS for lang, b in _fenced(p.read_text())
            if lang == "sql"]  # fmt: skip


def yaml_blocks() -> list[tuple[str, str]]:
    return [(str(p.relative_to(ROOT)), b) for p in DOCS for lang, b in _fenced(p.read_text())
            if lang in ("yaml", "yml")]  # fmt: skip


def user_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A new user's shell: the project's virtualenv is not on PATH."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "LLM_GATEWAY_CONFIG")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    env.update(LLM_GATEWAY_DATA_DIR=str(tmp / "llm-gateway-data"), UV_FROZEN="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)  # fmt: skip
    return env


def test_the_lists_are_current():
    found = commands()
    assert any(c.norm == QUICKSTART for c in found)
    stale = [(doc, cmd) for doc, cmd, _ in NOT_RUN
             if not any(not_run(c) and c.doc == doc and c.norm.startswith(cmd.strip())
                        for c in found)]  # fmt: skip
    assert not stale, f"NOT_RUN entries that match no command any more: {stale}"


def test_documented_commands_run_as_written(fake, tmp_path: Path):
    port = free_port()
    env = user_env(tmp_path, OPENAI_BASE_URL=fake.url + "/v1", OPENAI_API_KEY="sk-docs",
                   ANTHROPIC_BASE_URL=fake.url)  # fmt: skip
    to_run = [c for c in commands() if not_run(c) is None]
    serve = [c for c in to_run if c.norm == QUICKSTART]
    assert len(serve) == 1
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([*serve[0].words, "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        client = openai.OpenAI(base_url=url + "/v1", api_key="sk-app", max_retries=0)
        deadline = time.monotonic() + 120
        while True:
            try:
                client.chat.completions.create(model="gpt-4o-mini", messages=[
                    {"role": "user", "content": "Hi"}])  # fmt: skip
                break
            except openai.APIConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "serve.log"
                ).read_text()
                time.sleep(0.2)
        failures = []
        for c in to_run:
            if c is serve[0]:
                continue
            cmd_env = env
            if c.norm.startswith("pip "):  # into a fresh virtualenv, as an app's would be
                venv = tmp_path / "app-venv"
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
                cmd_env = {**env, "VIRTUAL_ENV": str(venv),
                           "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}"}  # fmt: skip
            text = c.text.replace(DOCUMENTED_PORT, f"127.0.0.1:{port}")
            p = subprocess.run(["bash", "-c", text], cwd=ROOT, env=cmd_env, capture_output=True,
                               text=True, timeout=600)  # fmt: skip
            if p.returncode != 0 or '"error"' in p.stdout:
                failures.append(f"{c.doc}: {c.norm}\n  exit {p.returncode}: {p.stderr[-800:]}"
                                f"{p.stdout[-400:]}")  # fmt: skip
        assert not failures, "\n".join(failures)
        venv_python = tmp_path / "app-venv" / "bin" / "python"
        if venv_python.exists():  # the feedback client imports in the app's environment
            p = subprocess.run([str(venv_python), "-c", "import llm_gateway_feedback as m; "
                                "print(m.FeedbackClient.__name__)"],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
            assert p.stdout.strip() == "FeedbackClient", p.stderr
        # Every SQL block, as written, through the quick-start gateway.
        for doc, block in sql_blocks():
            p = subprocess.run(["uv", "run", "llm-gateway", "sql", block], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=300)  # fmt: skip
            assert p.returncode == 0, f"{doc}: {block}\n{p.stderr}"
            assert p.stdout.startswith("┌─"), p.stdout
    finally:
        proc.terminate()
        assert proc.wait(60) == 0, (tmp_path / "serve.log").read_text()
        log.close()


def test_pip_install_is_in_the_readme():
    assert any(c.norm == "pip install ./clients/python" for c in commands())


@pytest.mark.parametrize(("doc", "block"), yaml_blocks(), ids=lambda v: v.split("\n", 1)[0])
def test_yaml_examples_validate_as_written(doc: str, block: str):
    data = yaml.safe_load(block)
    # Variables without a default must be set; those with `${VAR:-...}` need not be.
    required = {m.group(1) for m in _ENV_RE.finditer(block) if m.group(2) is None}
    # A variable that holds a gateway key gets a well-formed one, as `keys create` prints.
    env = {n: new_secret() if n.endswith("GATEWAY_KEY") else "placeholder-value" for n in required}
    parse_config(data, env)


def test_full_configuration_example_starts_without_provider_keys():
    (full,) = [b for _, b in yaml_blocks() if "providers:" in b and "routes:" in b]
    cfg = parse_config(yaml.safe_load(full), {})
    assert {p.auth for p in cfg.providers.values()} == {"passthrough"}
    keys = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "AZURE_OPENAI_API_KEY": "az"}
    cfg = parse_config(yaml.safe_load(full), keys)
    assert cfg.providers["openai"].api_key == "sk-o" and cfg.providers["openai"].auth == "gateway"
    assert json.dumps(sorted(cfg.providers))  # every provider of the example is there


def test_full_configuration_example_does_not_override_the_data_dir_variable():
    """The example sets `store.path`; `$LLM_GATEWAY_DATA_DIR` (and `--data-dir`) still say
    where the store is, as documented (README, "Where the store is")."""
    (full,) = [b for _, b in yaml_blocks() if "providers:" in b and "routes:" in b]
    assert parse_config(yaml.safe_load(full), {}).store.path == "llm-gateway-data"
    env = {"LLM_GATEWAY_DATA_DIR": "/srv/llm-gateway"}
    assert parse_config(yaml.safe_load(full), env).store.path == "/srv/llm-gateway"
    cfg = parse_config(yaml.safe_load(full), env, data_dir="/mnt/other")
    assert cfg.store.path == "/mnt/other" and cfg.log.dir == "/mnt/other/log"
    readme = (ROOT / "README.md").read_text()
    rule = readme.split("### Where the store is", 1)[1].split("###", 1)[0]
    order = ["`--data-dir DIR`", "`LLM_GATEWAY_DATA_DIR`", "`store.path`", "`llm-gateway-data`"]
    assert sorted(order, key=rule.index) == order  # the README states the same order
