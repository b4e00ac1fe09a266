"""`llm-gateway sql` prints every statement's result alike (a table, or the FORMAT the
statement names), through the running gateway and straight to the store; costs print
through the one money formatter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.commands.table import result_table
from gateway.recording.money import usd
from gateway.recording.store.sqltext import split_statements
from tests.conftest import GatewayProcess

TWO = "SELECT 1 AS a; SELECT 2 AS b"
NOISY = "SELECT CAST(8.400000000000001e-06 AS Nullable(Float64)) AS cost_usd, 0.5 AS ratio"


def sql(query: str, cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    p = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args, "sql", query], cwd=cwd,
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.mark.parametrize(
    ("value", "shown"),
    [(8.400000000000001e-06, "0.0000084"), (0.1 + 0.2, "0.3"), (12.5, "12.5"), (0, "0"),
     (None, "-"), (1234567.123456789, "1234567.12346"), ("3.20", "3.2")],
)  # fmt: skip
def test_usd(value: object, shown: str):
    assert usd(value) == shown


def test_split_statements_keeps_quoted_and_commented_semicolons():
    script = "SELECT 'a;b' AS x; -- one; two\nSELECT `c;d`; /* ; */ ;"
    assert split_statements(script) == ["SELECT 'a;b' AS x", "-- one; two\nSELECT `c;d`"]


def test_result_table_formats_costs_and_nulls():
    out = result_table(
        b'{"meta":[{"name":"cost_usd","type":"Nullable(Float64)"},{"name":"m","type":"String"}],'
        b'"data":[[8.400000000000001e-06,"gpt-4o"],[null,"x"]]}'
    )
    assert "0.0000084" in out and "0.000008400000000000001" not in out and "NULL" in out
    assert out.splitlines()[0].startswith("┌─cost_usd")


def _tables(out: str) -> list[str]:
    return [block for block in out.strip().split("\n\n")]


def _check_two(out: str) -> None:
    tables = _tables(out)
    assert len(tables) == 2, out
    for name, value, table in (("a", "1", tables[0]), ("b", "2", tables[1])):
        lines = table.splitlines()
        assert lines[0].startswith(f"┌─{name}") and lines[1] == f"│ {value} │", table


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], cwd=cwd, capture_output=True, text=True,
        timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_every_statement_printed_alike_straight_to_the_store(tmp_path: Path):
    env = {"LLM_GATEWAY_DATA_DIR": str(tmp_path / "d")}
    assert cli("migrate", cwd=tmp_path, env=env).returncode == 0
    _check_two(sql(TWO, tmp_path, env=env))
    out = sql(NOISY, tmp_path, env=env)
    assert "0.0000084" in out and "0.000008400000000000001" not in out and "0.5" in out
    # A statement's own FORMAT is honoured, the others still print as tables.
    out = sql("SELECT 1 AS a FORMAT JSONEachRow; SELECT 2 AS b", tmp_path, env=env)
    first, second = _tables(out)
    assert first == '{"a":1}' and second.startswith("┌─b")
    # DDL and inserts print nothing (an INSERT ... VALUES gets no FORMAT added to its data).
    script = ("CREATE TABLE t (a Int32) ENGINE = Memory; INSERT INTO t VALUES (7); "
              "-- then\nSELECT a FROM t")  # fmt: skip
    assert sql(script, tmp_path, env=env) == "┌─a─┐\n│ 7 │\n└───┘\n"


def test_every_statement_printed_alike_through_the_gateway(gateway: GatewayProcess):
    _check_two(sql(TWO, gateway.workdir, "--config", str(gateway.config_path)))


def _quotes_as_typed(cwd: Path, *args: str, env: dict[str, str] | None = None) -> None:
    """A statement without a FORMAT gets one beside its text, never in it: an error quotes
    the statement as typed, and a statement ending in a comment or an operator is read as
    typed (a format added to the text was commented out, or read as an identifier)."""
    for bad in ("SELECT count( FROM llm_calls", "SELECT 1 +"):
        p = cli(*args, "sql", bad, cwd=cwd, env=env)
        assert p.returncode == 1 and "SYNTAX_ERROR" in p.stderr, p.stderr
        assert "FORMAT" not in p.stderr and "JSONCompact" not in p.stderr, p.stderr
    p = cli(*args, "sql", "SELECT 41 + 1 AS answer -- the answer", cwd=cwd, env=env)
    assert p.returncode == 0 and p.stdout.splitlines()[1] == "│     42 │", p.stdout + p.stderr


def test_errors_quote_the_statement_as_typed(tmp_path: Path, gateway: GatewayProcess):
    env = {"LLM_GATEWAY_DATA_DIR": str(tmp_path / "d")}
    assert cli("migrate", cwd=tmp_path, env=env).returncode == 0
    _quotes_as_typed(tmp_path, env=env)  # straight to the store
    _quotes_as_typed(gateway.workdir, "--config", str(gateway.config_path))  # through it
