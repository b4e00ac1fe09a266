"""A damaged table definition in the embedded store (what an ALTER on a full disk leaves:
an empty metadata file): opening says which file and which command mends it, and
`llm-gateway store repair` rebuilds it from the gateway's schema without losing a row.
Real chDB, each step in a process of its own (as an operator would run them)."""

from __future__ import annotations

from pathlib import Path

import yaml

from gateway.recording.store.metadata import damaged_files
from tests.gateway.test_cli import cli

SEED = """
import sys
from gateway.recording.store import migrate
from gateway.recording.store.chdb_store import ChdbStore
s = ChdbStore(sys.argv[1], "llm_gateway")
migrate(s)
s.command("INSERT INTO llm_gateway.llm_calls (request_id, app, input_tokens) "
          "SELECT concat('r', toString(number)), 'repair', number FROM numbers(57)")
s.close()
"""


def test_store_repair_rebuilds_a_damaged_definition_and_keeps_every_row(tmp_path: Path):
    import subprocess
    import sys

    data = tmp_path / "data"
    p = subprocess.run([sys.executable, "-c", SEED, str(data)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump({"store": {"path": str(data)}}))
    (meta,) = [f for f in data.glob("store/*/*/llm_calls.sql")]
    meta.write_bytes(b"")  # what chDB leaves of it after an ALTER on a full disk
    assert damaged_files(data) == [meta.resolve()]

    q = "SELECT count() AS n, sum(input_tokens) AS s FROM llm_calls WHERE app = 'repair'"
    broken = cli("sql", "--config", str(tmp_path / "gw.yaml"), q, cwd=tmp_path)
    assert broken.returncode != 0
    assert "llm_calls.sql" in broken.stderr and "llm-gateway store repair" in broken.stderr

    fixed = cli("store", "repair", "--config", str(tmp_path / "gw.yaml"), cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert "llm_calls: attached: 57 rows" in fixed.stdout
    assert damaged_files(data) == []
    assert list((data / "repair-backup").glob("*/llm_calls.sql"))  # kept for a look

    ok = cli("sql", "--config", str(tmp_path / "gw.yaml"), q + " FORMAT TSV", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == ["57", str(sum(range(57)))]
    again = cli("store", "repair", "--config", str(tmp_path / "gw.yaml"), cwd=tmp_path)
    assert again.returncode == 0 and "nothing to repair" in again.stdout
