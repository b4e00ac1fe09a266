"""The Dockerfile, checked without a container engine (none can run on CI's machines).

Its structure is parsed and checked (stages, user, entry point, port, health check, volume,
labels), and the install commands it runs are held to the ones .ci/run runs: the same uv
from PyPI, `uv sync --frozen` on the same lock. Each `uv sync` of the Dockerfile is run
here with `--dry-run` into a scratch environment, so a lock that cannot install the image's
dependencies fails this test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gateway.config import ServerConfig
from tests.prereqs import program

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
CI_RUN = ROOT / ".ci" / "run"
# Flags the image may add to CI's `uv sync --frozen`: leave out dev tools, and install the
# project as a wheel rather than a link to the source tree.
IMAGE_ONLY_FLAGS = {"--no-dev", "--no-install-project", "--no-editable"}


@dataclass(frozen=True)
class Instruction:
    stage: int
    name: str
    args: str


def instructions() -> list[Instruction]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out, stage = [], -1
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, args = line.partition(" ")
        if name.upper() == "FROM":
            stage += 1
        out.append(Instruction(stage, name.upper(), args.strip()))
    return out


def final_stage() -> list[Instruction]:
    all_ = instructions()
    last = max(i.stage for i in all_)
    return [i for i in all_ if i.stage == last]


def one(stage: list[Instruction], name: str) -> str:
    found = [i.args for i in stage if i.name == name]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def uv_syncs(text: str) -> list[list[str]]:
    """Every `uv sync ...` command in a shell text, as argument lists."""
    text = re.sub(r"\\\n", " ", text)
    return [shlex.split(m.group(0)) for m in re.finditer(r"uv sync[^\n;&|]*", text)]


def test_multi_stage_build_on_a_slim_python():
    stages = [i.args for i in instructions() if i.name == "FROM"]
    assert len(stages) >= 2, stages
    assert all(re.match(r"python:\$\{PYTHON_VERSION\}-slim", s) for s in stages), stages
    version = next(i.args for i in instructions() if i.name == "ARG" and "PYTHON_VERSION" in i.args)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    minimum = pyproject["project"]["requires-python"].removeprefix(">=")
    assert version.split("=")[1] == minimum, "the image runs the Python the project supports"
    runtime = final_stage()
    copies = [i.args for i in runtime if i.name == "COPY"]
    assert copies == ["--from=build /app/.venv /app/.venv"], "only the built environment"


def test_installs_as_ci_does():
    ci = CI_RUN.read_text()
    docker = DOCKERFILE.read_text()
    assert "pip install" in ci and re.search(r"pip install [^\n]*\buv\b", docker)
    (ci_sync,) = uv_syncs(ci)
    image_syncs = uv_syncs(docker)
    assert len(image_syncs) == 2, image_syncs  # dependencies layer, then the project
    ci_flags = {f for f in ci_sync[2:] if f != "--quiet"}
    assert ci_flags == {"--frozen"}, ci_sync
    for cmd in image_syncs:
        flags = set(cmd[2:])
        assert "--frozen" in flags, cmd
        assert flags - ci_flags <= IMAGE_ONLY_FLAGS, cmd
    # The lock files it copies are the ones CI installs from.
    assert "COPY pyproject.toml uv.lock ./" in docker


@pytest.mark.parametrize("cmd", uv_syncs(DOCKERFILE.read_text()), ids=" ".join)
def test_the_image_install_resolves_from_the_lock(cmd: list[str], tmp_path: Path):
    uv = program("uv")
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv"), "NO_COLOR": "1"}
    env.pop("VIRTUAL_ENV", None)
    r = subprocess.run(
        [uv, *cmd[1:], "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    planned = set(re.findall(r"^ \+ ([A-Za-z0-9_.-]+)==", r.stderr + r.stdout, re.M))
    assert {"chdb", "litestar", "clickhouse-connect"} <= planned, planned
    assert not planned & {"pytest", "ruff", "helm-python-sdk"}, "dev tools in the image"


def test_runs_as_a_non_root_user():
    user = one(final_stage(), "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, user  # numeric: runAsNonRoot can check it
    run = " ".join(i.args for i in final_stage() if i.name == "RUN")
    assert f"--uid {uid}" in run
    values = yaml.safe_load((ROOT / "helm" / "llm-gateway" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)


def test_entry_point_port_and_health_check():
    runtime = final_stage()
    assert json.loads(one(runtime, "ENTRYPOINT")) == ["llm-gateway"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "llm-gateway" in scripts
    cmd = json.loads(one(runtime, "CMD"))
    assert cmd[0] == "serve" and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    port = int(one(runtime, "EXPOSE"))
    assert port == ServerConfig().port == int(cmd[cmd.index("--port") + 1])
    health = one(runtime, "HEALTHCHECK")
    assert "CMD" in health and f"127.0.0.1:{port}/healthz" in health


def test_everything_written_goes_to_one_volume():
    runtime = final_stage()
    assert json.loads(one(runtime, "VOLUME")) == ["/data"]
    env = " ".join(i.args for i in runtime if i.name == "ENV")
    assert "LLM_GATEWAY_DATA_DIR=/data/" in env and "HOME=/data" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # no .pyc written next to the code at run time
    assert one(runtime, "WORKDIR") == "/data"  # relative paths (a record log) land there too


def test_oci_labels():
    labels = dict(
        re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]*)"', DOCKERFILE.read_text())
    )
    needed = {"title", "description", "version", "licenses", "source"}
    assert {f"org.opencontainers.image.{k}" for k in needed} <= set(labels)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]["text"]
    assert labels["org.opencontainers.image.description"] == project["description"]
    version_arg = next(i.args for i in final_stage() if i.name == "ARG" and "VERSION" in i.args)
    assert version_arg == f"VERSION={project['version']}"


def test_dockerignore_keeps_the_build_context_to_what_is_copied():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests", "llm-gateway-data"} <= ignored
    copied = {
        p
        for i in instructions()
        if i.name == "COPY" and not i.args.startswith("--from")
        for p in i.args.split()[:-1]
    }
    assert copied and not copied & ignored, copied & ignored
    for path in copied:
        assert (ROOT / path).exists(), path
