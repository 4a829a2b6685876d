"""``edgeproxy explain URL``: a visitor's context and each slot's decision,
without a browser.

Runs the real stages 1 and 2 — ``classify`` then ``choose`` — on a request
described by flags, against the slots folder and settings the server would
use (``--slots``, ``--config``, ``EDGEPROXY_*``, ``--geo-db``).  The client
IP given with ``--ip`` is trusted as if it came through a trusted proxy, so
CDN geo headers given with ``--header`` count.  ``?edge_preview=`` in the
URL forces variants as a preview would (explain is an operator's tool).

Exit status: 0, or 2 when the slots folder is missing or a flag is bad.
Catalog errors are printed as warnings; ``edgeproxy check`` reports them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

from .catalog import Catalog, Slot, Variant, load_catalog
from .choose import explain_trace, parse_preview
from .choose import choose as choose_variants
from .errors import SettingsError
from .model import Decision, RequestFacts, SlotDecision, Visitor, frozen_map
from .settings import build_settings


DEFAULT_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"


def run_explain(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    settings = build_settings(
        {"slots": args.slots, "geo_db": args.geo_db, "geo_header": getattr(args, "geo_header", None)},
        config=args.config,
        require_upstream=False,
    )
    now = parse_at(args.at)
    facts = build_facts(args)
    catalog = load_catalog(Path(settings.slots), max_fragment_bytes=settings.max_fragment_bytes, now=now)
    if catalog.missing:
        print(f"edgeproxy explain: {settings.slots}: no such slots folder (give --slots DIR)", file=err)
        return 2
    for e in catalog.errors:
        print(f"warning: {e} (not live; run edgeproxy check)", file=err)

    from .classify import classify, open_classifiers

    classifiers = open_classifiers(settings)
    try:
        visitor = classify(facts, classifiers, now)
    finally:
        close = getattr(classifiers, "close", None)
        if callable(close):
            close()
    forced = parse_preview(dict(facts.query).get("edge_preview", ""))
    extra: dict[str, Any] = {"url": args.url, "at": now.isoformat()}
    if forced:
        extra["preview"] = forced
    decision, trace = explain_decision(visitor, catalog, now, forced=forced, holdout=settings.holdout, extra=extra)
    if args.json:
        out.write(json.dumps(trace, indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(format_explain(facts, visitor, decision, now, forced=forced, catalog=catalog))
    return 0


def explain_decision(
    visitor: Visitor,
    catalog: Catalog,
    now: dt.datetime,
    *,
    forced: Mapping[str, str | None] | None = None,
    holdout: float = 0.0,
    extra: Mapping[str, Any] | None = None,
) -> tuple[Decision, dict[str, Any]]:
    """Stage 2 for one described visitor, and its trace: each slot's variant
    and why.  ``edgeproxy explain`` prints it; the console's preview shows
    it (``console.preview``), so both give the same answer for the same
    visitor, by construction."""
    decision = choose_variants(visitor, catalog, now, forced=forced or None, holdout=holdout)
    return decision, explain_trace(visitor, decision, extra)


def parse_at(text: str | None) -> dt.datetime:
    """``--at``: an ISO 8601 time (``Z`` or an offset; none means UTC), or now."""
    if not text:
        return dt.datetime.now(dt.timezone.utc)
    try:
        at = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise SettingsError("at", text, "expected an ISO time like 2026-11-27T10:00:00Z") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.timezone.utc)


def build_facts(args: argparse.Namespace) -> RequestFacts:
    """The ``RequestFacts`` a GET of ``args.url`` with these flags would give."""
    url = args.url if "://" in args.url or args.url.startswith("/") else "http://" + args.url
    parts = urlsplit(url)
    headers: dict[str, str] = {}
    # No --ua: describe a desktop browser (a request without a User-Agent is
    # a bot, which would only ever see the defaults).
    headers["user-agent"] = args.ua if args.ua is not None else DEFAULT_UA
    if args.referer:
        headers["referer"] = args.referer
    for item in args.header or ():
        name, sep, value = item.partition(":")
        if not sep or not name.strip() or " " in name.strip():
            raise SettingsError("header", item, 'expected "Name: value"')
        headers.setdefault(name.strip().lower(), value.strip())
    cookies: dict[str, str] = {}
    for item in args.cookie or ():
        for pair in item.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name.strip():
                cookies.setdefault(name.strip(), value.strip())
    if cookies:
        headers.setdefault("cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()))
    if parts.netloc:
        headers.setdefault("host", parts.netloc)
    return RequestFacts(
        method="GET",
        path=parts.path or "/",
        query=tuple(parse_qsl(parts.query, keep_blank_values=True)),
        headers=frozen_map(headers),
        cookies=frozen_map(cookies),
        client_ip=args.ip,
        peer_trusted=True,
        scheme=parts.scheme or "http",
        host=parts.netloc,
    )


def why_not(v: Variant, context: Mapping[str, Any], now: dt.datetime) -> str | None:
    """Why ``v`` is not eligible for a visitor with ``context`` at ``now``
    (its window, else the first condition of its ``when`` that fails), or
    ``None`` when it is eligible."""
    ts = now.timestamp()
    if ts < v.start_ts:
        return f"not live yet: starts {_utc(v.start)}"
    if ts >= v.end_ts:
        return f"ended {_utc(v.end)}"
    for cond in v.when:
        value = context.get(cond.key)
        if value is None:
            return f"needs {cond.text}; the visitor's {cond.key} is unknown"
        if not cond.test(value):
            return f"needs {cond.text}; the visitor's {cond.key} is {_value(value)}"
    return None


def passed_over(slot: Slot, chosen: SlotDecision, visitor: Visitor, now: dt.datetime) -> list[tuple[str, str]]:
    """The slot's other variants, in the order ``choose`` tries them, each
    with why it did not show.  Empty when no variant was considered (a bot,
    the holdout, a forced preview): ``chosen.reason`` says why."""
    if visitor.bot or chosen.reason in ("bot", "holdout") or chosen.reason.startswith("preview"):
        return []
    order = [v.id for v in slot.variants]
    first = order.index(chosen.variant) if chosen.variant in order else len(order)
    out = []
    for i, v in enumerate(slot.variants):
        if v.id == chosen.variant:
            continue
        why = why_not(v, visitor.context, now)
        if why is None:
            # Eligible: it comes after the winner, or the decision's own
            # reason names the cap or experiment that passed it over.
            why = f"eligible, but {chosen.variant} comes first" if i > first else "eligible, passed over (see the decision)"
        out.append((v.id, why))
    return out


def _utc(t: dt.datetime | None) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if t is not None else ""


def format_explain(
    facts: RequestFacts, visitor: Visitor, decision: Decision, now: dt.datetime, *, forced: dict | None = None,
    catalog: Catalog | None = None,
) -> str:
    """The human report: request, visitor, context, then one row per slot
    (and, given the ``catalog``, each other variant with why it did not show)."""
    query = "&".join(f"{k}={v}" for k, v in facts.query)
    lines = [
        f"GET {facts.path}{'?' + query if query else ''}" + (f"  (host {facts.host})" if facts.host else ""),
        f"at  {now.isoformat()}",
        "",
        "visitor",
    ]
    if visitor.bot:
        lines.append("  bot        yes: default content everywhere, no cookies")
    else:
        lines.append(f"  id         {visitor.visitor_id or '(none: not in experiments)'}")
        lines.append(f"  consent    {'yes' if visitor.consent else 'no: contextual keys only, no cookies'}")
        lines.append(f"  holdout    {'yes: default content everywhere' if decision.holdout else 'no'}")
    if visitor.timezone:
        lines.append(f"  timezone   {visitor.timezone}")
    if visitor.cookies:
        lines.append(f"  sets       {', '.join(c.name for c in visitor.cookies)}")
    lines.append("")
    lines.append("context")
    if not visitor.context:
        lines.append("  (empty)")
    width = max((len(k) for k in visitor.context), default=0)
    for key, value in visitor.context.items():
        lines.append(f"  {key:<{width}}  {_value(value)}")
    lines.append("")
    lines.append("slots" + ("  (preview: " + ", ".join(f"{k}:{v or 'none'}" for k, v in forced.items()) + ")" if forced else ""))
    if not decision.slots:
        lines.append("  (the slots folder has no slots)")
    name_w = max((len(n) for n in decision.slots), default=0)
    shown = {n: d.variant or "(default)" for n, d in decision.slots.items()}
    var_w = max((len(v) for v in shown.values()), default=0)
    for name, d in decision.slots.items():
        lines.append(f"  {name:<{name_w}}  {shown[name]:<{var_w}}  {d.reason}")
        slot = catalog.slots.get(name) if catalog is not None else None
        for variant, why in passed_over(slot, d, visitor, now) if slot is not None else ():
            lines.append(f"  {'':<{name_w}}    not {variant}: {why}")
    return "\n".join(lines) + "\n"


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ", ".join(value) if value else "(none)"
    return str(value)
