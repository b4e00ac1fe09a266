"""llm-gateway: an OpenAI-compatible gateway that records every LLM call."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from collectors.views import views
from gateway import __version__
from gateway.config import Config, load_config
from gateway.errors import ConfigError, GatewayError, StoreError, error_message
from gateway.observability.logs import setup_logging
from gateway.recording.store import Store, open_store
from gateway.recording.store.datadir import DataDirLock, running_gateway

log = logging.getLogger("gateway.cli")


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.app import build_gateway, create_app
    from gateway.server import http as server

    cfg = _config(args)
    setup_logging(cfg.log_level)
    host = args.host or cfg.server.host
    port = args.port if args.port is not None else cfg.server.port
    # uvicorn re-raises the signal that stopped it once shut down; a graceful stop on
    # SIGTERM/SIGINT (records flushed) is a success for process managers: exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    if cfg.server.workers > 1:
        return _serve_workers(args, cfg, host, port)
    lock = None
    if cfg.store.kind == "chdb":
        lock = DataDirLock(cfg.store.path)
        lock.acquire()
    try:
        gw = build_gateway(cfg)  # ConfigError for what needs the routes (experiments' models)
        if lock is not None:
            shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            gw.admin_token = lock.publish(f"http://{shown}:{port}")
        app = server.guarded(create_app(gw))
        log.info(
            "listening",
            extra={
                "host": host,
                "port": port,
                "data_dir": cfg.store.path if cfg.store.kind == "chdb" else None,
            },
        )
        return 0 if server.run(server.uvicorn_config(cfg.server, app, host, port)) else 1
    finally:
        if lock is not None:
            lock.release()


def _serve_workers(args: argparse.Namespace, cfg: Config, host: str, port: int) -> int:
    """Several worker processes on one port; the config forbids this for the embedded store."""
    import shutil
    import tempfile

    from gateway.server import http as server

    if args.config:
        os.environ["LLM_GATEWAY_CONFIG"] = os.path.abspath(args.config)
    # One /metrics for all workers: each writes its values to files in this directory.
    prom_dir = tempfile.mkdtemp(prefix="llm-gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom_dir
    log.info("listening", extra={"host": host, "port": port, "workers": cfg.server.workers})
    config = server.uvicorn_config(cfg.server, "gateway.app:app_from_env", host, port, factory=True)
    server.run(config)
    shutil.rmtree(prom_dir, ignore_errors=True)
    return 0


class _ViaGateway:
    """The store as reached through the running gateway that holds the embedded engine."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def _post(self, path: str, body: bytes) -> bytes:
        req = urllib.request.Request(
            self.url + path,
            data=body,
            headers={"x-gateway-admin-token": self.token, "content-type": "text/plain"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                answer: bytes = r.read()
                return answer
        except urllib.error.HTTPError as e:
            raise StoreError(error_message(e.read())) from None
        except urllib.error.URLError as e:
            raise StoreError(f"the gateway at {self.url} did not answer: {e.reason}") from None

    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        return self._post(f"/_gateway/sql?default_format={fmt}", sql.encode())

    def insert(self, table: str, rows: bytes, token: str | None = None) -> None:
        self._post(f"/_gateway/insert?table={urllib.parse.quote(table)}", rows)


@contextlib.contextmanager
def store_access(cfg: Config) -> Iterator[Any]:
    """The configured store, for the CLI: through the running gateway when one holds the
    embedded store, else opened here (and migrated)."""
    if cfg.store.kind == "chdb" and (running := running_gateway(cfg.store.path)):
        yield _ViaGateway(running.url, running.token)
        return
    with opened_store(cfg) as (store, _):
        yield store


@contextlib.contextmanager
def opened_store(cfg: Config, cluster: str | None = None) -> Iterator[tuple[Store, list[int]]]:
    """The configured store opened by this process (the embedded one's data directory
    locked meanwhile) and migrated: (store, migrations applied now)."""
    lock = DataDirLock(cfg.store.path) if cfg.store.kind == "chdb" else None
    if lock:
        lock.acquire()
    try:
        store = open_store(cfg.store)
        try:
            yield store, cfg.migrate(store, views, cluster)
        finally:
            store.close()
    finally:
        if lock:
            lock.release()


def cmd_sql(args: argparse.Namespace) -> int:
    from gateway.recording.store.sqltext import has_format, split_statements

    cfg = _config(args)
    sql = args.query if args.query != "-" else sys.stdin.read()
    statements = split_statements(sql)
    if not statements:
        print("llm-gateway: no SQL statement given", file=sys.stderr)
        return 2
    with store_access(cfg) as store:
        # One statement at a time, each printed alike: a table, or the FORMAT it names.
        printed = False
        for stmt in statements:
            if has_format(stmt):
                out = store.query(stmt, "TabSeparated")
            else:
                out = result_table(store.query(stmt, "JSONCompact")).encode()
            if out:  # DDL and inserts print nothing
                sys.stdout.buffer.write((b"\n" if printed else b"") + out)
                sys.stdout.flush()
                printed = True
    return 0


_NUMERIC = ("Int", "UInt", "Float", "Decimal")


def result_table(result: bytes) -> str:
    """A JSONCompact result as a table: numbers right-aligned, costs through the money
    formatter, NULL spelled out."""
    from gateway.recording.money import is_money_column, usd

    if not result.strip():
        return ""
    doc = json.loads(result)
    meta = doc["meta"]
    names = [m["name"] for m in meta]
    kinds = [m["type"].removeprefix("Nullable(").removeprefix("LowCardinality(") for m in meta]
    numeric = [k.startswith(_NUMERIC) for k in kinds]
    money = [is_money_column(n) and num for n, num in zip(names, numeric, strict=True)]

    def cell(v: Any, is_money: bool) -> str:
        if v is None:
            return "NULL"
        if is_money:
            return usd(v)
        if isinstance(v, str):
            return v.replace("\n", "\\n")
        if isinstance(v, list | dict):
            return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
        return str(v)

    rows = [[cell(v, m) for v, m in zip(r, money, strict=True)] for r in doc["data"]]
    widths = [max([len(n), *(len(r[i]) for r in rows)]) for i, n in enumerate(names)]

    def line(cells: list[str]) -> str:
        cols = zip(cells, widths, numeric, strict=True)
        aligned = (c.rjust(w) if num else c.ljust(w) for c, w, num in cols)
        return "│ " + " │ ".join(aligned) + " │"

    top = "┌─" + "─┬─".join(n.ljust(w, "─") for n, w in zip(names, widths, strict=True)) + "─┐"
    bottom = "└─" + "─┴─".join("─" * w for w in widths) + "─┘"
    return "\n".join([top, *(line(r) for r in rows), bottom]) + "\n"


def cmd_report(args: argparse.Namespace) -> int:
    from collectors.report import feedback_report, parse_since
    from collectors.report.models import parse_by
    from collectors.report.models_report import models_report

    cfg = _config(args)
    if args.what == "models" and not args.app and args.by != "app":
        print("llm-gateway: report models needs --app (or --by app)", file=sys.stderr)
        return 2
    try:  # the arguments, before the store is opened
        parse_since(args.since)
        parse_by(args.by)
    except ValueError as e:
        print(f"llm-gateway: {e}", file=sys.stderr)
        return 2
    with store_access(cfg) as store:
        query = lambda sql: store.query(sql, "JSONEachRow")  # noqa: E731
        if args.what == "models":
            text = models_report(
                query, args.app, args.since, args.json, by=args.by, metric_name=args.metric
            )
        elif args.what == "keys":
            from gateway.access.report import keys_report

            text = keys_report(store)
        else:
            text = feedback_report(query, args.since)
    print(text)
    return 0


def cmd_experiments(args: argparse.Namespace) -> int:
    from collectors.experiments.report import command

    cfg = _config(args)
    with store_access(cfg) as store:
        code, text = command(
            lambda sql: store.query(sql, "JSONEachRow"),
            cfg.experiments,
            args.action,
            args.name,
            args.json,
        )
    print(text, file=sys.stderr if code else sys.stdout, end="")
    return code


def cmd_drift(args: argparse.Namespace) -> int:
    """Evaluate drift now, store the rows, print the report. Exit 0 either way: a CronJob
    should not fail because a model drifted."""
    from collectors.drift import format_report, rows_to_jsonl, run_drift

    cfg = _config(args)
    try:
        with store_access(cfg) as store:
            rows = run_drift(lambda sql: store.query(sql, "JSONEachRow"), cfg=cfg.drift)
            if rows:
                store.insert("llm_drift", rows_to_jsonl(rows))
    except StoreError as e:
        print(f"llm-gateway: drift not evaluated: {e}", file=sys.stderr)
        return 0
    print(format_report(rows))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if cfg.store.kind == "chdb" and (running := running_gateway(cfg.store.path)):
        print(f"The gateway (pid {running.pid}) holds this store and migrated it at start.")
        return 0
    cluster = args.cluster or cfg.store.cluster or None
    if cluster and cfg.store.kind != "clickhouse":
        print("llm-gateway: --cluster needs store.kind: clickhouse", file=sys.stderr)
        return 2
    with opened_store(cfg, cluster) as (_, applied):
        pass
    where = cfg.store.path if cfg.store.kind == "chdb" else cfg.store.url
    print(
        f"{cfg.store.kind} store at {where}, database {cfg.store.database}: "
        + (f"applied migrations {applied}" if applied else "up to date")
    )
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from gateway.recording.store.repair import repair

    cfg = _config(args)
    if cfg.store.kind != "chdb":
        print("llm-gateway: store repair is for the embedded store (store.kind: chdb)",
              file=sys.stderr)  # fmt: skip
        return 2
    lock = DataDirLock(cfg.store.path)
    lock.acquire()  # StoreBusy while a gateway holds it: repair a stopped store
    try:
        mended = repair(cfg.store.path, cfg.store.database, cfg.capture.body_ttl_days)
    finally:
        lock.release()
    for m in mended:
        rows = f": {m.rows} rows" if m.rows is not None else ""
        print(f"{m.table}: {m.how}{rows}")
    done = "repaired; the damaged files are in repair-backup/"
    print(done if mended else "nothing to repair")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from gateway.access.admin import run

    with store_access(_config(args)) as store:
        return run(args, store)


def _parser() -> argparse.ArgumentParser:
    from collectors.report.models import MODEL_METRICS
    from gateway.server.config import ServerConfig

    srv = ServerConfig()
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="llm-gateway", description=__doc__, formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "--config",
        default=os.environ.get("LLM_GATEWAY_CONFIG"),
        help="YAML config file ($LLM_GATEWAY_CONFIG; none: zero-config)",
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    config_help = "YAML config file (overrides the one given before the command)"

    def command(name: str, help: str, fn: Any) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help, formatter_class=fmt)
        c.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
        c.set_defaults(fn=fn)
        return c

    s = command("serve", "run the gateway", cmd_serve)
    s.add_argument("--host", help=f"listen address (default: server.host, {srv.host})")
    s.add_argument("--port", type=int, help=f"listen port (default: server.port, {srv.port})")
    m = command("migrate", "create or update the tables", cmd_migrate)
    m.add_argument(
        "--cluster", help="ClickHouse cluster: Replicated + Distributed tables "
        "(default: store.cluster)",
    )  # fmt: skip
    q = command(
        "sql", 'run a query against the store, e.g. "SELECT count() FROM llm_calls"', cmd_sql
    )
    q.add_argument("query", help="the SQL (a FORMAT clause is honoured); - reads it from stdin")
    r = command("report", "reports for product teams", cmd_report)
    r.add_argument("what", choices=["feedback", "models", "keys"], help="the report")
    r.add_argument("--since", default="7d", help="window, e.g. 7d, 24h, 30m (default: 7d)")
    r.add_argument("--app", help="models: the app whose models to compare (observational)")
    r.add_argument(
        "--by", help="models: segments side by side, stratified: app, property:NAME or cohort"
    )
    r.add_argument(
        "--metric",
        default=MODEL_METRICS[0],
        choices=MODEL_METRICS,
        help=f"models --by: the metric compared across segments (default: {MODEL_METRICS[0]})",
    )
    r.add_argument("--json", action="store_true", help="models: JSON instead of a table")
    e = command("experiments", "experiments and their verdicts", cmd_experiments)
    e.add_argument("action", choices=["list", "report"], help="list all, or report one")
    e.add_argument("name", nargs="?", help="report: the experiment's name")
    e.add_argument("--json", action="store_true", help="JSON instead of a table")
    command("drift", "evaluate drift now, store and print it (exit 0)", cmd_drift)
    st = command("store", "the embedded store: repair damaged table metadata", cmd_store)
    st.add_argument("action", choices=["repair"], help="repair: rebuild it from the schema")
    from gateway.access.admin import add_parser as add_keys_parser

    add_keys_parser(command(
        "keys", "gateway keys: create, list, revoke, rotate (secrets shown once)", cmd_keys
    ))  # fmt: skip
    p.epilog = _commands_help(sub)
    return p


def _commands_help(sub: Any) -> str:
    """Every command with its options and their defaults, for the top-level --help."""
    lines = ["commands and their options:"]
    for name, c in sub.choices.items():
        lines.append(f"  {name}: {c.description}")
        for a in c._actions:
            if isinstance(a, argparse._HelpAction) or a.dest == "fn":
                continue
            flag = ", ".join(a.option_strings) or a.dest
            lines.append(f"      {flag}: {a.help}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    # Whatever the gateway writes (records, captured bodies, chDB's parts) is for its own
    # user only; files and directories it creates get no group or other permissions.
    os.umask(0o077)
    args = _parser().parse_args(argv)
    try:
        code: int = args.fn(args)
    except ConfigError as e:
        print(f"llm-gateway: configuration error: {e}", file=sys.stderr)
        return e.exit_code
    except GatewayError as e:  # the store, a busy data directory, a key command, ...
        print(f"llm-gateway: {e}", file=sys.stderr)
        return e.exit_code
    return code


if __name__ == "__main__":
    raise SystemExit(main())
