"""``stylefarm tenants``: per-tenant budgets (``shared.jobs.quotas``).

- ``stylefarm tenants set-limits TENANT [--max-queued N] [--max-in-flight N]
  [--max-cost-in-flight S] [--max-job-cost S] [--max-upload-bytes-per-day B]``: set some
  limits (``default`` restores the ``STYLEFARM_QUOTA_*`` default); the others stay. Costs are
  in reference GPU-seconds (``shared/jobs/cost.py``). Takes effect on the next request.
- ``stylefarm tenants show TENANT [--json]``: the effective limits and the current usage.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from shared.cli.keys import admin_parser, open_database

PROG = "stylefarm tenants"

#: option -> (limit, type)
LIMIT_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "--max-queued": ("max_queued_jobs", int),
    "--max-in-flight": ("max_jobs_in_flight", int),
    "--max-cost-in-flight": ("max_cost_in_flight", float),
    "--max-job-cost": ("max_job_cost", float),
    "--max-upload-bytes-per-day": ("max_upload_bytes_per_day", int),
}


def _limit_value(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if text == "default":
            return None
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number or 'default', got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError("must be >= 0 (0 refuses everything)")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p, sub = admin_parser(PROG, "Per-tenant budgets.")
    limits = sub.add_parser("set-limits", help="set a tenant's limits ('default' restores the default)")
    limits.add_argument("tenant")
    for flag, (name, kind) in LIMIT_OPTIONS.items():
        limits.add_argument(flag, dest=name, type=_limit_value(kind), default=argparse.SUPPRESS, metavar="N")
    show = sub.add_parser("show", help="a tenant's effective limits and usage")
    show.add_argument("tenant")
    show.add_argument("--json", action="store_true")
    return p


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    open_database(args.database_url)
    from shared.jobs import quotas, tenants
    from shared.settings import get_settings

    if args.action == "set-limits":
        changes = {name: getattr(args, name) for name, _ in LIMIT_OPTIONS.values() if hasattr(args, name)}
        if not changes:
            parser.error("set-limits: give at least one limit, e.g. --max-queued 50")
        try:
            tenants.set_limits(args.tenant, **changes)
        except ValueError as exc:
            parser.error(str(exc))
    report = quotas.tenant_report(args.tenant, get_settings())
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2))
        return 0
    print(f"tenant {report['tenant']}")
    for part in ("limits", "usage"):
        print(f"  {part + ':':<8}" + ", ".join(f"{k}={_number(v)}" for k, v in report[part].items()))
    return 0


def _number(value: float | int) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
