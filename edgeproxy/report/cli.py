"""``edgeproxy report``: parse nothing (``edgeproxy.cli`` does), run the
stages, print.  0 when the report was made, 2 when an input is unreadable or
an option malformed (``SettingsError`` from ``--weights``: also 2)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from .analyse import parse_weights, weights_from_slots
from .logs import ReportInputError, expand, sort_logs
from .render import render_html, to_json, format_text


def run_report(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``edgeproxy report``: 0 when the report was made, 2 when an input is
    unreadable (``--weights`` errors raise ``SettingsError``: also 2)."""
    from . import build_report

    out = out or sys.stdout
    err = err or sys.stderr
    weights = parse_weights(getattr(args, "weights", None) or ())
    try:
        slot_weights = weights_from_slots(Path(args.slots)) if getattr(args, "slots", None) else None
        exposures, conversions = sort_logs(expand(args.logs))
        report = build_report(exposures, conversions, weights=weights, slot_weights=slot_weights)
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
