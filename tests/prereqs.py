"""What the test suite needs besides its Python packages, found or explained.

A test that needs a program calls `program("chromium")` (its path), or
`ci_node_package("@grafana/schema")` for one of the npm packages .ci/run installs under
.ci/node. When it is missing the test is skipped, and the reason names what is missing and
the command that installs it (`uv run pytest -rs` lists them). With
LLM_GATEWAY_TEST_STRICT=1, which .ci/run sets, a missing prerequisite fails the test
instead: CI never skips.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

STRICT_ENV = "LLM_GATEWAY_TEST_STRICT"
CI_NODE = Path(__file__).resolve().parent.parent / ".ci" / "node"
EVERYTHING = "or run .ci/run, which installs every prerequisite and runs the suite"


@dataclass(frozen=True)
class Prerequisite:
    names: tuple[str, ...]  # the program, under any of these names on PATH
    install: str  # the command that installs it (Debian)


PROGRAMS = {
    "chromium": Prerequisite(("chromium", "chromium-browser"), "apt-get install chromium"),
    "prometheus": Prerequisite(("prometheus",), "apt-get install prometheus"),
    "promtool": Prerequisite(("promtool",), "apt-get install prometheus"),
    "redis-server": Prerequisite(("redis-server",), "apt-get install redis-server"),
    "redis-cli": Prerequisite(("redis-cli",), "apt-get install redis-tools"),  # a Cluster
    "node": Prerequisite(("node",), "apt-get install nodejs npm"),
    "npm": Prerequisite(("npm",), "apt-get install nodejs npm"),
    "uv": Prerequisite(("uv",), "pip install uv"),
}


def strict() -> bool:
    return os.environ.get(STRICT_ENV) == "1"


def missing(what: str, install: str) -> NoReturn:
    reason = f"{what} is not installed: {install} ({EVERYTHING})"
    if strict():
        pytest.fail(f"{reason}. {STRICT_ENV}=1: a missing prerequisite is an error", False)
    pytest.skip(reason)


def program(name: str) -> str:
    """The path of a program the test needs; skips (or fails, strict) without it."""
    need = PROGRAMS[name]
    for n in need.names:
        if found := shutil.which(n):
            return found
    missing(f"`{name}`", need.install)


def ci_node_package(package: str) -> Path:
    """The directory of an npm package of .ci/node (`node` is needed to run it)."""
    program("node")
    path = CI_NODE / "node_modules" / package
    if not path.is_dir():
        missing(f"the npm package {package} (under .ci/node)", "npm ci --prefix .ci/node")
    return path
