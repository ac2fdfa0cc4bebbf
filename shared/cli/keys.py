"""``stylefarm keys``: administer the API keys stored (hashed) in SQL.

- ``stylefarm keys create TENANT [--name NAME]``: a new key for ``TENANT``; the key is printed
  once, on stdout (store it now: only its sha256 is kept).
- ``stylefarm keys list [--tenant T] [--json]``: every key (id, prefix, tenant, name, created,
  last used, revoked); never the key itself.
- ``stylefarm keys revoke ID_OR_PREFIX``: the API refuses the key within
  ``STYLEFARM_API_KEY_CACHE_S`` seconds (no restart).
- ``stylefarm keys generate``: print a random key without storing it, for
  ``STYLEFARM_API_KEYS=<key>=<tenant>`` on a single machine.

The database is the configured one (``STYLEFARM_DATABASE_URL``, or ``--database-url``); it is
migrated first, so the commands work on a fresh installation.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

PROG = "stylefarm keys"


def open_database(url: str | None) -> None:
    """Point the store at ``url`` (default: the configured database) and migrate it."""
    from shared.db import session as db_session
    from shared.db.migrate import upgrade
    from shared.settings import get_settings

    url = url or get_settings().resolved_database_url
    db_session.configure(url)
    upgrade(url)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value is not None else "-"


def key_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "prefix": row.prefix, "tenant": row.tenant, "name": row.name,
        "created_at": row.created_at.isoformat(),
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


def admin_parser(prog: str, description: str) -> tuple[argparse.ArgumentParser, Any]:
    """A parser with ``--database-url`` and its ACTION subparsers (``keys``, ``tenants``)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--database-url", help="SQLAlchemy URL (default: the configured STYLEFARM_DATABASE_URL)")
    return p, p.add_subparsers(dest="action", metavar="ACTION", required=True)


def build_parser() -> argparse.ArgumentParser:
    p, sub = admin_parser(PROG, "Administer the API keys stored (hashed) in SQL.")
    create = sub.add_parser("create", help="create a key for a tenant; prints the key once")
    create.add_argument("tenant")
    create.add_argument("--name", default="default", help="what the key is for (shown in listings)")
    listing = sub.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--tenant")
    listing.add_argument("--json", action="store_true")
    revoke = sub.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key", metavar="ID_OR_PREFIX")
    sub.add_parser("generate", help="print a random key without storing it (for STYLEFARM_API_KEYS)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from shared.jobs import api_keys

    if args.action == "generate":
        print(api_keys.generate_key())
        return 0
    open_database(args.database_url)
    if args.action == "create":
        try:
            row, key = api_keys.create_key(args.tenant, args.name)
        except ValueError as exc:
            print(f"{PROG} create: {exc}", file=sys.stderr)
            return 2
        print(key)
        print(f"created key {row.prefix}... (id {row.id}) for tenant {row.tenant!r}; it is shown only now",
              file=sys.stderr)
        return 0
    if args.action == "revoke":
        row = api_keys.revoke_key(args.key)
        print(f"revoked key {row.prefix}... (id {row.id}) of tenant {row.tenant!r} at {_when(row.revoked_at)}",
              file=sys.stderr)
        return 0
    rows = api_keys.list_keys(args.tenant)
    if args.json:
        print(json.dumps([key_dict(r) for r in rows], indent=2))
        return 0
    header = f"{'ID':<32}  {'PREFIX':<11}  {'TENANT':<16}  {'NAME':<16}  {'CREATED':<20}  {'LAST USED':<20}  REVOKED"
    print(header)
    for r in rows:
        print(f"{r.id:<32}  {r.prefix:<11}  {r.tenant:<16}  {r.name:<16}  {_when(r.created_at):<20}  "
              f"{_when(r.last_used_at):<20}  {_when(r.revoked_at)}")
    return 0
