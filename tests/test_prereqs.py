"""A test whose program is missing is skipped with a reason that names the program and the
command that installs it; under LLM_GATEWAY_TEST_STRICT=1 (.ci/run) it fails instead. Run
as a user would: pytest in a subprocess, on one test, with the program off PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.prereqs import STRICT_ENV

ROOT = Path(__file__).resolve().parent.parent

CASES = [
    ("tests/clients/test_js_package.py::test_package_files_are_built_from_the_served_script",
     "`node` is not installed: apt-get install nodejs npm"),
    ("tests/helm/test_helm_e2e.py::test_helm_test_fails_when_its_key_is_refused",
     "`redis-server` is not installed: apt-get install redis-server"),
]  # fmt: skip


def pytest_without_programs(test: str, tmp_path: Path, strict: bool) -> str:
    """Output of `pytest -rs TEST` with an empty PATH: no program can be found."""
    env = {k: v for k, v in os.environ.items() if k != STRICT_ENV}
    env["PATH"] = str(tmp_path)  # an empty directory
    if strict:
        env[STRICT_ENV] = "1"
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", test],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return f"exit {p.returncode}\n{p.stdout}{p.stderr}"


@pytest.mark.parametrize(("test", "reason"), CASES, ids=["node", "redis-server"])
def test_a_missing_program_skips_with_how_to_install_it(test: str, reason: str, tmp_path: Path):
    out = pytest_without_programs(test, tmp_path, strict=False)
    assert "exit 0" in out and "1 skipped" in out, out
    assert "SKIPPED [1] " in out and reason in out, out
    assert "or run .ci/run, which installs every prerequisite" in out


@pytest.mark.parametrize(("test", "reason"), CASES, ids=["node", "redis-server"])
def test_strict_mode_fails_instead_of_skipping(test: str, reason: str, tmp_path: Path):
    out = pytest_without_programs(test, tmp_path, strict=True)
    assert "exit 1" in out and ("1 failed" in out or "1 error" in out), out
    assert reason in out and f"{STRICT_ENV}=1: a missing prerequisite is an error" in out, out
    assert "skipped" not in out


def test_ci_runs_the_suite_strictly():
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"export {STRICT_ENV}=1" in ci
    assert ci.index(f"export {STRICT_ENV}=1") < ci.index("uv run pytest")
