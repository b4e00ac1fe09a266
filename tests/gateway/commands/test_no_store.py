"""Commands that read the store, run where there is none: each says where it looked and how
to point it at one, exits non-zero and creates nothing. One precedence chooses the embedded
store's directory: --data-dir, then $LLM_GATEWAY_DATA_DIR, then store.path, then the default.
Against ClickHouse (clickhouse-connect over real HTTP), a missing database is told the same
way and is not created."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.recording.store.clickhouse_store import ClickHouseStore
from tests.chhttp import ChHttpServer

# Every command that reads or changes what is recorded, as a user types it.
READERS = [
    ("sql", "SELECT count() FROM llm_calls"),
    ("report", "feedback"),
    ("report", "models", "--app", "x"),
    ("report", "keys"),
    ("experiments", "list"),
    ("drift",),
    ("keys", "list"),
    ("keys", "create", "--name", "first"),
    ("replay",),
]


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LLM_GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], cwd=cwd, capture_output=True, text=True,
        timeout=120, env={**base, **(env or {})},
    )  # fmt: skip


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("args", READERS, ids=lambda a: " ".join(a[:2]))
def test_no_store_here_says_where_it_looked_and_creates_nothing(
    args: tuple[str, ...], tmp_path: Path
):
    here = tmp_path / "elsewhere"
    here.mkdir()
    p = cli(*args, cwd=here)
    assert p.returncode == 1, (p.stdout, p.stderr)
    looked = str(here / "llm-gateway-data")
    assert f"no store at {looked} (the default, under the working directory)" in p.stderr
    for how in (
        "--data-dir DIR",
        "LLM_GATEWAY_DATA_DIR=DIR",
        "--config FILE",
        "llm-gateway migrate",
    ):
        assert how in p.stderr, how
    assert "Traceback" not in p.stderr and p.stdout == ""
    assert tree(here) == []  # nothing created


def test_the_message_names_the_setting_that_chose_the_directory(tmp_path: Path):
    env = {"LLM_GATEWAY_DATA_DIR": str(tmp_path / "from-env")}
    p = cli("sql", "SELECT 1", cwd=tmp_path, env=env)
    assert f"no store at {tmp_path / 'from-env'} (from $LLM_GATEWAY_DATA_DIR)" in p.stderr
    p = cli("--data-dir", str(tmp_path / "from-flag"), "sql", "SELECT 1", cwd=tmp_path, env=env)
    assert f"no store at {tmp_path / 'from-flag'} (from --data-dir)" in p.stderr
    conf = tmp_path / "gw.yaml"
    conf.write_text("store: {path: from-file}\n")
    p = cli("sql", "SELECT 1", "--config", str(conf), cwd=tmp_path)
    assert f"no store at {tmp_path / 'from-file'} (from store.path in {conf})" in p.stderr
    assert tree(tmp_path) == ["gw.yaml"]


def test_one_precedence_flag_then_variable_then_file_then_default(tmp_path: Path):
    conf = tmp_path / "gw.yaml"
    conf.write_text("store: {path: from-file}\n")
    env = {"LLM_GATEWAY_DATA_DIR": "from-env"}
    assert load_config(None, {}).store.path == "llm-gateway-data"
    assert load_config(conf, {}).store.path == "from-file"
    assert load_config(conf, env).store.path == "from-env"  # the variable over the file
    assert load_config(conf, env, data_dir="from-flag").store.path == "from-flag"
    # As the commands apply it: the store made with the flag is the one read with it.
    p = cli("--data-dir", "made", "migrate", "--config", str(conf), cwd=tmp_path, env=env)
    assert p.returncode == 0 and str(tmp_path / "made") in p.stdout, p.stderr
    p = cli("sql", "SELECT 7 AS n FORMAT JSONEachRow", "--data-dir", "made", cwd=tmp_path, env=env)
    assert p.returncode == 0 and json.loads(p.stdout) == {"n": 7}, p.stderr
    assert not (tmp_path / "from-file").exists() and not (tmp_path / "from-env").exists()


def test_migrate_creates_the_store_the_others_then_read(tmp_path: Path):
    env = {"LLM_GATEWAY_DATA_DIR": str(tmp_path / "d")}
    assert cli("migrate", cwd=tmp_path, env=env).returncode == 0
    for args in READERS[:-1]:  # replay needs a record log: tests/gateway/commands/test_replay.py
        p = cli(*args, cwd=tmp_path, env=env)
        assert p.returncode == 0, (args, p.stderr)


def test_disabled_store_is_said_so(tmp_path: Path):
    conf = tmp_path / "gw.yaml"
    conf.write_text("store: {kind: disabled}\n")
    p = cli("report", "feedback", "--config", str(conf), cwd=tmp_path)
    assert p.returncode == 1 and "store.kind: disabled" in p.stderr


@pytest.fixture(scope="module")
def chhttp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChHttpServer]:
    with ChHttpServer(str(tmp_path_factory.mktemp("chhttp"))) as srv:
        yield srv


def test_clickhouse_without_the_database(chhttp: ChHttpServer, tmp_path: Path):
    db = f"nodb_{uuid.uuid4().hex[:8]}"
    conf = tmp_path / "gw.yaml"
    conf.write_text(f"store: {{kind: clickhouse, url: '{chhttp.url}', database: {db}}}\n")
    probe = ClickHouseStore(chhttp.url, "default", "", "default")

    def exists() -> bool:
        q = f"SELECT count() AS n FROM system.databases WHERE name = '{db}'"
        return json.loads(probe.query(q))["n"] == 1

    for args in (("sql", "SELECT 1"), ("report", "keys"), ("drift",)):
        p = cli(*args, "--config", str(conf), cwd=tmp_path)
        assert p.returncode == 1, p.stderr
        assert f"no gateway tables at ClickHouse at {chhttp.url}, database {db}" in p.stderr
        assert "llm-gateway migrate" in p.stderr
    assert not exists()
    p = cli("migrate", "--config", str(conf), cwd=tmp_path)
    assert p.returncode == 0 and exists(), p.stderr
    # The statement as typed: the format rides beside it (X-ClickHouse-Format), so an
    # error quotes no FORMAT and a trailing comment does not swallow one.
    p = cli("sql", "SELECT 1 +", "--config", str(conf), cwd=tmp_path)
    assert p.returncode == 1 and "FORMAT" not in p.stderr, p.stderr
    p = cli("sql", "SELECT 41 + 1 AS answer -- the answer", "--config", str(conf), cwd=tmp_path)
    assert p.returncode == 0 and "42" in p.stdout, p.stderr
    p = cli(
        "sql", "SELECT 41 + 1 AS answer FORMAT JSONEachRow", "--config", str(conf), cwd=tmp_path
    )
    assert json.loads(p.stdout) == {"answer": 42}
    probe.close()
