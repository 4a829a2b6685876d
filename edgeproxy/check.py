"""``edgeproxy check [DIR]``: validate slots/ and show what each variant targets.

Prints every slot with its variants in precedence order (the order in which
they are tried), what each targets (``when``, priority, window and whether
it is live now, experiment, cap, sort keys, description), then every
problem as ``file:line: reason`` — one per line, unindented, so editors and
CI annotate them.

Exit status: 0 all files valid, 1 any error, 2 the folder is missing (or a
setting is bad).  The folder defaults to ``--slots``/``EDGEPROXY_SLOTS``/the
config file's ``slots``, else ``./slots``; the fragment size cap is the
server's ``max_fragment_bytes`` setting, so check and serve agree.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import TextIO

from .catalog import Catalog, Variant, load_catalog
from .model import SortKey
from .settings import build_settings


def run_check(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    flags = {"slots": args.dir} if getattr(args, "dir", None) else {}
    settings = build_settings(flags, require_upstream=False)
    directory = Path(settings.slots)
    if not directory.is_dir():
        print(f"edgeproxy check: {directory}: no such folder (give the slots folder: edgeproxy check path/to/slots)", file=err)
        return 2
    now = dt.datetime.now(dt.timezone.utc)
    catalog = load_catalog(directory, max_fragment_bytes=settings.max_fragment_bytes, now=now)
    out.write(format_catalog(catalog, now))
    return 1 if catalog.errors else 0


def format_catalog(catalog: Catalog, now: dt.datetime) -> str:
    """The human report ``check`` prints."""
    lines: list[str] = []
    n_slots, n_variants, n_errors = len(catalog.slots), len(catalog), len(catalog.errors)
    lines.append(f"{catalog.directory}: {_plural(n_slots, 'slot')}, {_plural(n_variants, 'variant')}, {_plural(n_errors, 'error')}")
    rejected = _rejected_by_slot(catalog)
    for slot in catalog.slots.values():
        lines.append("")
        lines.append(slot.name)
        if not slot.variants and not rejected.get(slot.name):
            lines.append("  (no variants: everyone sees the shop's default)")
        width = max((len(v.file) for v in slot.variants), default=0)
        for i, v in enumerate(slot.variants, 1):
            lines.append(f"  {i}. {v.file:<{width}}  {v.kind:<7}  priority {v.priority}{_status(v, now)}")
            lines.extend("       " + detail for detail in _details(v, now))
        for file in rejected.get(slot.name, ()):
            lines.append(f"  x  {file}  rejected: not live (see errors)")
        for name, arms in slot.experiments.items():
            shares = ", ".join(f"{a.variant.id} {a.hi - a.lo:g}%" for a in arms)
            control = 100 - (arms[-1].hi if arms else 0)
            lines.append(f"  experiment {name}: {shares}, control {control:g}%")
    if catalog.errors:
        lines.append("")
        lines.append("errors:")
        lines.extend(str(e) for e in catalog.errors)
        lines.append("")
        lines.append(f"FAILED: {_plural(n_errors, 'error')}; a rejected file is not served (a running proxy keeps its last good version)")
    else:
        lines.append("")
        lines.append(f"OK: {_plural(n_variants, 'variant')} in {_plural(n_slots, 'slot')}")
    return "\n".join(lines) + "\n"


def _rejected_by_slot(catalog: Catalog) -> dict[str, list[str]]:
    """Files with errors whose variant is not served at all."""
    out: dict[str, list[str]] = {}
    for rel, state in catalog.files.items():
        slot, file = rel.split("/", 1)
        served = catalog.slots.get(slot)
        if state.error is not None and (served is None or Path(file).stem not in served.by_id):
            out.setdefault(slot, []).append(file)
    served_paths = {v.path for s in catalog.slots.values() for v in s.variants}
    for e in catalog.errors:  # file-name and weight-sum errors
        p = Path(e.path)
        if p.suffix in (".html", ".toml") and e.path not in served_paths and p.parent.name in catalog.slots:
            files = out.setdefault(p.parent.name, [])
            if p.name not in files:
                files.append(p.name)
    return {k: sorted(v) for k, v in out.items()}


def _details(v: Variant, now: dt.datetime) -> list[str]:
    details = []
    if v.description:
        details.append(f'"{v.description}"')
    details.append("when       " + (" ".join(c.text for c in v.when) or "everyone"))
    if v.start or v.end:
        start = _when(v.start) if v.start else "always"
        end = _when(v.end) if v.end else "open-ended"
        details.append(f"window     {start} -> {end}")
    if v.experiment:
        details.append(f"experiment {v.experiment.name}, weight {v.experiment.weight:g}%")
    if v.cap:
        details.append(f"cap        {v.cap.views} per {v.cap.per}")
    if v.sort:
        details.append("sort       " + ", ".join(_sort_text(k) for k in v.sort))
    if v.template is not None and v.template.keys:
        details.append("merge tags " + ", ".join(dict.fromkeys(v.template.keys)))
    return details


def _status(v: Variant, now: dt.datetime) -> str:
    ts = now.timestamp()
    if ts < v.start_ts:
        return f"  [scheduled: starts in {_ago(v.start_ts - ts)}]"
    if ts >= v.end_ts:
        return "  [ended]"
    if v.end is not None:
        return f"  [live: ends in {_ago(v.end_ts - ts)}]"
    return ""


def _ago(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    return f"{max(seconds / 60, 1):.0f} minutes"


def _when(t: dt.datetime) -> str:
    t = t.astimezone(dt.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _sort_text(k: SortKey) -> str:
    if k.kind == "affinity":
        return "affinity"
    if k.kind == "pin":
        return "pin:" + ",".join(k.skus)
    return ("-" if k.descending else "") + k.attr


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
