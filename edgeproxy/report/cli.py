"""``edgeproxy report``: parse nothing (``edgeproxy.cli`` does), run the
stages, print.  0 when the report was made, 2 when an input is unreadable or
an option malformed (``SettingsError``: also 2).

    edgeproxy report EXPOSURES [CONVERSIONS ...]     the report (DuckDB over the files)
    edgeproxy report --engine postgresql://…         the same, aggregated in the warehouse
    edgeproxy report --sql clickhouse                the warehouse query, to run there
    edgeproxy report --plan --baseline 0.03 --mde 0.1 [LOGS]   the sample size (and days at the logs' traffic)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TextIO

from ..errors import SettingsError
from .aggregate import DEFAULT_MEMORY_LIMIT
from .analyse import PlanSpec, parse_weights, weights_from_slots
from .logs import ReportInputError, expand, sort_logs
from .render import format_plan, format_text, render_html, to_json


_SIZE = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)


def _memory_limit(args: argparse.Namespace) -> str:
    """``--memory-limit`` as DuckDB takes it (``SettingsError`` naming the flag)."""
    value = getattr(args, "memory_limit", None) or DEFAULT_MEMORY_LIMIT
    if not _SIZE.fullmatch(value.strip()):
        raise SettingsError("--memory-limit", value, "a size such as 448MB or 2GB")
    return value.strip()


def _plan_spec(args: argparse.Namespace) -> PlanSpec | None:
    """``--plan``'s options, checked (``SettingsError`` naming the flag)."""
    if not getattr(args, "plan", False):
        return None
    if args.mde is None:
        raise SettingsError("--mde", None, "--plan needs --mde, the relative change to detect (e.g. 0.10)")
    if args.baseline is not None and not 0 < args.baseline < 1:
        raise SettingsError("--baseline", args.baseline, "a conversion rate between 0 and 1, e.g. 0.03")
    if args.baseline is not None and not 0 < args.baseline * (1 + args.mde) < 1 or args.mde == 0 or args.mde <= -1:
        raise SettingsError("--mde", args.mde, "a relative change that keeps the rate between 0 and 1, not 0")
    if args.arms is not None and args.arms < 2:
        raise SettingsError("--arms", args.arms, "at least 2 (the control and a variant)")
    for flag, value in (("--power", args.power), ("--alpha", args.alpha)):
        if not 0 < value < 1:
            raise SettingsError(flag, value, "between 0 and 1")
    return PlanSpec(mde=args.mde, baseline=args.baseline, arms=args.arms, power=args.power, alpha=args.alpha)


def run_report(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``edgeproxy report``: 0 when the report was made, 2 when an input is
    unreadable (``--weights`` errors raise ``SettingsError``: also 2)."""
    from . import build_report, build_report_from_engine

    out = out or sys.stdout
    err = err or sys.stderr
    if getattr(args, "sql", None):
        from .sql import transpile

        try:
            out.write(transpile(args.sql) + ";\n")
        except ValueError as exc:
            raise SettingsError("--sql", args.sql, str(exc)) from exc
        return 0
    weights = parse_weights(getattr(args, "weights", None) or ())
    plan = _plan_spec(args)
    engine = getattr(args, "engine", None)
    if not args.logs and not engine:
        if plan is None:
            print("edgeproxy report: give the logs (EXPOSURES [CONVERSIONS]), --engine URL, --sql DIALECT or --plan",
                  file=err)
            return 2
        if plan.baseline is None:
            raise SettingsError("--baseline", None, "--plan without logs needs --baseline, the control's conversion rate")
        from .analyse import Report

        out.write(format_plan(Report([], [], 0, 0, [], [], plan=plan.standalone())))
        return 0
    try:
        slot_weights = weights_from_slots(Path(args.slots)) if getattr(args, "slots", None) else None
        if engine:
            report = build_report_from_engine(engine, weights=weights, slot_weights=slot_weights, plan=plan)
        else:
            exposures, conversions = sort_logs(expand(args.logs))
            report = build_report(exposures, conversions, weights=weights, slot_weights=slot_weights, plan=plan,
                                  memory_limit=_memory_limit(args))
    except ReportInputError as exc:
        print(f"edgeproxy report: {exc}", file=err)
        return 2
    if getattr(args, "html", None):
        target = Path(args.html)
        try:
            target.write_text(render_html(report), encoding="utf-8")
        except OSError as exc:
            print(f"edgeproxy report: {target}: cannot write: {exc.strerror or exc}", file=err)
            return 2
        print(f"edgeproxy report: wrote {target}", file=err)
    out.write(to_json(report) if getattr(args, "json", False) else format_text(report))
    return 0
