"""llm-gateway: an OpenAI-compatible gateway that records every LLM call."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from collectors.views import views
from gateway import __version__
from gateway.commands.progress import Progress
from gateway.commands.store import existing_store, missing, opened_store, store_access, where
from gateway.config import Config, data_dir_origin, load_config
from gateway.errors import ConfigError, GatewayError, StoreError
from gateway.observability.logs import setup_logging
from gateway.recording.store.datadir import DataDirLock, has_store, running_gateway

log = logging.getLogger("gateway.cli")


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, data_dir=args.data_dir)


@contextmanager
def _store(args: argparse.Namespace, cfg: Config) -> Iterator[Any]:
    """The store a reading command works on; none where it looked: StoreMissing."""
    with store_access(cfg, views, args.data_dir, args.config) as store:
        yield store


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.app import build_gateway, serve_app
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
        app = serve_app(gw)
        chdb = cfg.store.kind == "chdb"
        origin = data_dir_origin(cfg, args.data_dir, args.config, os.environ) if chdb else None
        log.info(
            "listening",
            extra={
                "host": host,
                "port": port,
                "data_dir": str(Path(cfg.store.path).resolve()) if chdb else None,
                "data_dir_origin": origin,
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
    started = server.run(config)
    shutil.rmtree(prom_dir, ignore_errors=True)
    return 0 if started else 1


def cmd_sql(args: argparse.Namespace) -> int:
    from gateway.commands.table import result_table
    from gateway.recording.store.sqltext import has_format, split_statements

    cfg = _config(args)
    sql = args.query if args.query != "-" else sys.stdin.read()
    statements = split_statements(sql)
    if not statements:
        print("llm-gateway: no SQL statement given", file=sys.stderr)
        return 2
    with _store(args, cfg) as store:
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
    with _store(args, cfg) as store:
        query = lambda sql: store.query(sql, "JSONEachRow")  # noqa: E731
        if args.what == "models":
            text = models_report(
                query, args.app, args.since, args.json, by=args.by, metric_name=args.metric
            )
        elif args.what == "keys":
            from gateway.access.report import keys_report

            text = keys_report(store, args.json)
        else:
            text = feedback_report(query, args.since, args.json)
    print(text.rstrip("\n"))
    return 0


def cmd_experiments(args: argparse.Namespace) -> int:
    from collectors.experiments.report import command

    cfg = _config(args)
    with _store(args, cfg) as store:
        code, text = command(
            lambda sql: store.query(sql, "JSONEachRow"),
            cfg.experiments,
            args.action,
            args.name,
            args.json,
        )
    print(text, file=sys.stderr if code else sys.stdout, end="")
    return code


def _watched(query: Any, progress: Progress, what: str) -> Any:
    """`query`, telling `progress` of each query as it starts."""
    count = 0

    def run(sql: str) -> bytes:
        nonlocal count
        count += 1
        progress.step(f"{what}, query {count}")
        out: bytes = query(sql, "JSONEachRow")
        return out

    return run


def cmd_drift(args: argparse.Namespace) -> int:
    """Evaluate drift now, store the rows, print the report. A model that drifted is a
    success (a CronJob must not fail for it); a drift that could not be evaluated is not."""
    from collectors.drift import format_report, rows_to_json, rows_to_jsonl, run_drift

    cfg = _config(args)
    try:
        with _store(args, cfg) as store, Progress("drift", sys.stderr) as progress:
            rows = run_drift(_watched(store.query, progress, "reading calls"), cfg=cfg.drift)
            if rows:
                progress.step("storing the rows in llm_drift")
                store.insert("llm_drift", rows_to_jsonl(rows))
    except StoreError as e:
        print(f"llm-gateway: drift not evaluated: {e}", file=sys.stderr)
        return e.exit_code
    print(rows_to_json(rows) if args.json else format_report(rows))
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
    with Progress("migrate", sys.stderr) as progress:
        progress.step(f"opening the {where(cfg)}")
        with opened_store(cfg, views, cluster, step=progress.step) as (_, applied):
            pass
    print(f"{where(cfg)}: " + (f"applied migrations {applied}" if applied else "up to date"))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from gateway.commands.replay import replay

    cfg = _config(args)
    if cfg.store.kind == "chdb" and (running := running_gateway(cfg.store.path)):
        print(
            f"llm-gateway: the gateway (pid {running.pid}) holds this store and replays its "
            "own record log; stop it to replay another log into this store",
            file=sys.stderr,
        )
        return 1
    store_ = existing_store(cfg, views, args.data_dir, args.config)
    with store_ as store, Progress("replay", sys.stderr) as progress:
        text = replay(cfg, store, args.log_dir, progress.step)
    print(text)
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from gateway.recording.store.repair import repair

    cfg = _config(args)
    if cfg.store.kind != "chdb":
        print("llm-gateway: store repair is for the embedded store (store.kind: chdb)",
              file=sys.stderr)  # fmt: skip
        return 2
    if not has_store(cfg.store.path, cfg.store.database):
        raise missing(cfg, args.data_dir, args.config)  # nothing is created
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

    with _store(args, _config(args)) as store:
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
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def command(name: str, help: str, fn: Any) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help, formatter_class=fmt)
        common_options(c)
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
    r.add_argument("--json", action="store_true", help=JSON_HELP)
    e = command("experiments", "experiments and their verdicts", cmd_experiments)
    e.add_argument("action", choices=["list", "report"], help="list all, or report one")
    e.add_argument("name", nargs="?", help="report: the experiment's name")
    e.add_argument("--json", action="store_true", help=JSON_HELP)
    d = command("drift", "evaluate drift now, store and print it (a drifted model: exit 0; "
                "drift not evaluated: exit 1)", cmd_drift)  # fmt: skip
    d.add_argument("--json", action="store_true", help=JSON_HELP + " (the llm_drift rows)")
    rp = command("replay", "write what a record log holds into the store (a replica scaled "
                 "away, a gateway that will not start again); idempotent", cmd_replay)  # fmt: skip
    rp.add_argument("--log-dir", help="the record log (default: log.dir, as the gateway's)")
    st = command("store", "the embedded store: repair damaged table metadata", cmd_store)
    st.add_argument("action", choices=["repair"], help="repair: rebuild it from the schema")
    from gateway.access.admin import add_parser as add_keys_parser

    add_keys_parser(command(
        "keys", "gateway keys: create, list, revoke, rotate (secrets shown once)", cmd_keys
    ), common_options)  # fmt: skip
    p.epilog = _commands_help(sub)
    return p


DATA_DIR_HELP = (
    "the embedded store's data directory (over $LLM_GATEWAY_DATA_DIR, over store.path; "
    "default: ./llm-gateway-data)"
)
JSON_HELP = "JSON instead of a table, with the table's column names as field names"


def common_options(c: argparse.ArgumentParser) -> None:
    """--config and --data-dir after a command too (they override those given before it)."""
    c.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="YAML config file (overrides the one given before the command)",
    )
    c.add_argument("--data-dir", default=argparse.SUPPRESS, help=DATA_DIR_HELP)  # fmt: skip


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
