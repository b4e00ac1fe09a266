"""`llm-gateway keys create | list | revoke | rotate`: managing the `llm_gateway_keys` table.

Each change is a new version of the key's row (the table keeps the newest), written
through whatever the CLI's `store_access` gives: the running gateway on the embedded
store, or ClickHouse directly. The secret is printed once, by `create` and `rotate`;
only its hash is written. Running gateways see a change within `auth.refresh_seconds`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.access.config import limits_from
from gateway.access.keys import GatewayKey, hash_secret, hint_of, new_key_id, new_secret
from gateway.access.keystore import TABLE, key_from_row, parse_rows, row_of, select_sql
from gateway.commands.table import Column, rows_table
from gateway.errors import ConfigError, KeyCommandError
from gateway.recording.money import usd


class KeyTable(Protocol):
    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes: ...

    def insert(self, table: str, rows: bytes, token: str | None = None) -> None: ...


def list_keys(store: KeyTable, include_revoked: bool = False) -> list[GatewayKey]:
    return [key_from_row(r) for r in parse_rows(store.query(select_sql(include_revoked)))]


def find(store: KeyTable, ident: str) -> GatewayKey:
    """The live key with this id, else the one live key with this name."""
    keys = list_keys(store)
    by_id = [k for k in keys if k.key_id == ident]
    found = by_id or [k for k in keys if k.name == ident]
    if not found:
        raise KeyCommandError(f"no active key with id or name {ident!r}")
    if len(found) > 1:
        ids = ", ".join(k.key_id for k in found)
        raise KeyCommandError(f"several active keys are named {ident!r} ({ids}): give the id")
    return found[0]


def create(
    store: KeyTable, name: str, app: str = "", team: str = "", **limits: Any
) -> tuple[str, GatewayKey]:
    """A new key; returns (secret, key). The secret exists nowhere else."""
    if any(k.name == name for k in list_keys(store)):
        raise KeyCommandError(f"an active key is already named {name!r}: rotate it, or pick a name")
    secret = new_secret()
    key = GatewayKey(
        key_id=new_key_id(),
        name=name,
        key_hash=hash_secret(secret),
        app=app,
        team=team,
        hint=hint_of(secret),
        limits=limits_from("", **limits),
        created_at=time.time(),
    )
    store.insert(TABLE, row_of(key))
    return secret, key


def revoke(store: KeyTable, ident: str) -> GatewayKey:
    key = replace(find(store, ident), revoked=True)
    store.insert(TABLE, row_of(key))
    return key


def rotate(store: KeyTable, ident: str) -> tuple[str, GatewayKey]:
    """A new secret for the same key (same id, limits, spend); the old one stops working."""
    secret = new_secret()
    key = replace(find(store, ident), key_hash=hash_secret(secret), hint=hint_of(secret))
    store.insert(TABLE, row_of(key))
    return secret, key


def describe(key: GatewayKey, secret: str | None = None) -> dict[str, Any]:
    """A key as the commands print it, named as the `llm_gateway_keys` columns (`key`:
    the secret, when just made)."""
    out: dict[str, Any] = {
        "key_id": key.key_id,
        "name": key.name,
        "hint": key.hint,
        "app": key.app,
        "team": key.team,
        "created_at": datetime.fromtimestamp(key.created_at, UTC).strftime(_TIME)[:-3],
        "revoked": key.revoked,
        "limits": key.limits.to_json(),
    }
    if secret is not None:
        out["key"] = secret
    return out


_TIME = "%Y-%m-%d %H:%M:%S.%f"  # as ClickHouse writes a DateTime64(3)


def _limits(lim: dict[str, Any]) -> str:
    shown = {k: v for k, v in lim.items() if v and k != "budget_period"}
    if "models" in shown:
        shown["models"] = ",".join(shown["models"])
    if "budget_usd" in shown:
        shown["budget_usd"] = f"{usd(shown['budget_usd'])}/{lim['budget_period']}"
    return " ".join(f"{k}={v}" for k, v in shown.items()) or "-"


COLUMNS = (
    Column("key_id"), Column("name"), Column("hint"), Column("app"), Column("team"),
    Column("created_at", lambda v: v[:16]), Column("revoked", lambda v: "yes" if v else "no"),
    Column("limits", _limits),
)  # fmt: skip


def _print(args: argparse.Namespace, items: list[dict[str, Any]], note: str = "") -> None:
    if args.json:
        print(json.dumps(items if args.keys_cmd == "list" else items[0], indent=2))
        return
    if not items:
        print("No gateway keys." if getattr(args, "all", False) else "No active gateway keys.")
        return
    print("\n".join(rows_table(COLUMNS, items, len(COLUMNS))).rstrip())
    for d in items:
        if "key" in d:
            print(f"key: {d['key']}")
    if note:
        print(note, file=sys.stderr)


def run(args: argparse.Namespace, store: KeyTable) -> int:
    try:
        if args.keys_cmd == "create":
            models = [m.strip() for m in (args.models or "").split(",") if m.strip()]
            secret, key = create(
                store, args.name, args.app, args.team, models=models, rpm=args.rpm, tpm=args.tpm,
                concurrency=args.concurrency, budget_usd=args.budget_usd,
                budget_period=args.budget_period, user_rpm=args.user_rpm, user_tpm=args.user_tpm,
            )  # fmt: skip
            _print(args, [describe(key, secret)], "Store the key now: it is not shown again.")
        elif args.keys_cmd == "list":
            _print(args, [describe(k) for k in list_keys(store, args.all)])
        elif args.keys_cmd == "revoke":
            _print(args, [describe(revoke(store, args.key))])
        else:
            secret, key = rotate(store, args.key)
            _print(args, [describe(key, secret)], "The previous secret stops working.")
    except (KeyCommandError, ConfigError) as e:
        print(f"llm-gateway keys: {e}", file=sys.stderr)
        return 2
    return 0


def add_parser(
    k: argparse.ArgumentParser, common: Callable[[argparse.ArgumentParser], None]
) -> None:
    """The actions of the CLI's `keys` command (`k`, which runs `run` with the store);
    `common` adds the options every command takes (--config, --data-dir)."""
    ks = k.add_subparsers(dest="keys_cmd", required=True, metavar="ACTION",
                          help="create | list | revoke | rotate")  # fmt: skip

    def action(name: str, text: str) -> argparse.ArgumentParser:
        p = ks.add_parser(name, help=text, description=text)
        common(p)
        p.add_argument("--json", action="store_true", help="print JSON")
        return p

    c = action("create", "create a key and print its secret once")
    c.add_argument("--name", required=True, help="a name to tell the key by (unique)")
    c.add_argument("--app", default="", help="record the key's calls as this app")
    c.add_argument("--team", default="")
    c.add_argument("--models", default="", help="allowed models, comma-separated globs")
    for flag in ("rpm", "tpm", "concurrency", "user-rpm", "user-tpm"):
        c.add_argument(f"--{flag}", type=int, default=0, help="0 = no limit")
    c.add_argument("--budget-usd", type=float, default=0.0, help="0 = no budget")
    c.add_argument("--budget-period", choices=["day", "month"], default="month")
    lst = action("list", "list keys (never their secrets)")
    lst.add_argument("--all", action="store_true", help="include revoked keys")
    for name, text in (("revoke", "revoke a key"), ("rotate", "give a key a new secret")):
        action(name, text).add_argument("key", help="key id or name")
