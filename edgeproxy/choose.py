"""Stage 2, choose: which variant each slot shows, and why (CONTRACT §2).

``choose(visitor, catalog, now) -> Decision`` is pure and deterministic for
a visitor id: no I/O, no randomness, no clock of its own.  Per slot, first
match wins:

1. ``forced`` (preview, ``?edge_preview=``): the named variant regardless
   of its ``when``, window, cap or experiment; ``None`` = the default.
   Preview views are not counted against caps and are in no experiment.
2. bots: the default (reason ``"bot"``).
3. the global holdout (``holdout`` percent of visitor ids, sticky): the
   default in every slot, ``Decision.holdout = True``.  Visitors without an
   id (no consent) cannot be measured, so they are never held out.
4. the variants in precedence order (priority desc, specificity desc, file
   name asc); the first *eligible* one (its ``when`` holds and ``now`` is in
   ``[start, end)``) wins, except:

   - an experiment's variant: the visitor's bucket (below) picks the arm.
     A bucket past the arms' weights is the control arm: the default
     content, ``arm="control"``.  A bucket on an arm that is not eligible
     for this visitor right now (its own ``when``/window), or that is
     capped, enrols nobody: the slot falls through to the next eligible
     variant outside that experiment, so every logged exposure saw what its
     arm says.  Visitors without an id (no consent) are never enrolled and
     fall through the same way.
   - a capped variant already seen ``views`` times in the current period
     is skipped.  Periods are UTC calendar days, ISO weeks in UTC, and the
     session (``Visitor.session_id``).  A visitor whose views cannot be
     counted (no visitor id, i.e. no consent; or no session for a
     per-session cap) never sees a capped variant: the cap is a promise
     of "at most".

Buckets: ``sha256("<experiment>:<visitor id>")``, first 8 bytes big-endian,
scaled to ``[0, 100)``; arms take consecutive ranges in file-name order.
The holdout uses the same function with the name ``edgeproxy-holdout``.
The same experiment name in two slots gives the visitor the same bucket in
both, so a multi-slot experiment stays consistent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from .catalog.model import Catalog, Slot, Variant
from .model import CapCount, Decision, Edit, ReplaceInner, SlotDecision, SortChildren, Visitor

HOLDOUT_NAME = "edgeproxy-holdout"
_SCALE = 100.0 / 2**64
_UTC = dt.timezone.utc


def bucket(name: str, visitor_id: str) -> float:
    """The visitor's sticky position in ``[0, 100)`` for ``name``."""
    digest = hashlib.sha256(f"{name}:{visitor_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") * _SCALE


def in_holdout(visitor_id: str | None, holdout: float) -> bool:
    return bool(visitor_id) and holdout > 0 and bucket(HOLDOUT_NAME, visitor_id) < holdout  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Cap periods.
# ---------------------------------------------------------------------------
def cap_periods(now: dt.datetime, session_id: str | None) -> dict[str, str | None]:
    """The current period name per cap ``per`` (``None``: not countable)."""
    utc = _as_utc(now)
    year, week, _ = utc.isocalendar()
    return {
        "day": f"d{utc.year:04d}-{utc.month:02d}-{utc.day:02d}",
        "week": f"w{year:04d}-{week:02d}",
        "session": f"s{session_id}" if session_id else None,
    }


def _as_utc(now: dt.datetime) -> dt.datetime:
    return now.replace(tzinfo=_UTC) if now.tzinfo is None else now.astimezone(_UTC)


# ---------------------------------------------------------------------------
# choose
# ---------------------------------------------------------------------------
def choose(
    visitor: Visitor,
    catalog: Catalog,
    now: dt.datetime,
    *,
    forced: Mapping[str, str | None] | None = None,
    holdout: float = 0.0,
) -> Decision:
    """Decide every slot of ``catalog`` for ``visitor`` at ``now`` (naive =
    UTC).  See the module docstring for the rules."""
    ts = _as_utc(now).timestamp() if now.tzinfo is None else now.timestamp()
    held = not visitor.bot and in_holdout(visitor.visitor_id, holdout)
    run = _Run(visitor, now)
    out: dict[str, SlotDecision] = {}
    for name, slot in catalog.slots.items():
        if forced and name in forced:
            out[name] = _forced(slot, forced[name], visitor)
        elif visitor.bot:
            out[name] = slot.bot  # type: ignore[assignment]
        elif held:
            out[name] = slot.holdout  # type: ignore[assignment]
        elif not slot.variants:
            out[name] = slot.default  # type: ignore[assignment]
        else:
            out[name] = _choose_slot(slot, run, ts)
    return Decision(slots=MappingProxyType(out), holdout=held)


class _Run:
    """Per-call memo: experiment buckets and cap periods, computed lazily."""

    __slots__ = ("visitor", "context", "now", "_buckets", "_periods")

    def __init__(self, visitor: Visitor, now: dt.datetime) -> None:
        self.visitor = visitor
        self.context = visitor.context
        self.now = now
        self._buckets: dict[str, float] = {}
        self._periods: dict[str, str | None] | None = None

    def bucket(self, name: str) -> float:
        b = self._buckets.get(name)
        if b is None:
            b = self._buckets[name] = bucket(name, self.visitor.visitor_id)  # type: ignore[arg-type]
        return b

    def period(self, per: str) -> str | None:
        if self._periods is None:
            self._periods = cap_periods(self.now, self.visitor.session_id)
        return self._periods[per]


def _capped(v: Variant, run: _Run) -> str | None:
    """Why ``v`` cannot be shown because of its cap, or ``None``."""
    cap = v.cap
    if cap is None:
        return None
    if run.visitor.visitor_id is None:
        return f"{v.id} capped, views not countable without consent"
    period = run.period(cap.per)
    if period is None:
        return f"{v.id} capped per session, no session"
    count = run.visitor.caps.get(v.cap_key)
    views = count.views if count is not None and count.period == period else 0
    if views >= cap.views:
        return f"{v.id} capped {views}/{cap.views} per {cap.per}"
    return None


def _edit(v: Variant, visitor: Visitor) -> Edit:
    if v.static_edit is not None:
        return v.static_edit
    if v.template is not None:
        return ReplaceInner(v.template.render(visitor.context))
    return SortChildren(v.sort, visitor.affinity)


def _shown(slot: Slot, v: Variant, run: _Run, reason: str, notes: list[str] | None, **extra: Any) -> SlotDecision:
    shared = v.arm_decision if extra else v.decision
    if shared is not None and not notes:
        return shared
    if notes:
        reason = f"{reason} ({'; '.join(notes)})"
    cap = v.cap
    return SlotDecision(
        slot.name, v.id, reason, _edit(v, run.visitor),
        cap_key=v.cap_key if cap else None, cap_per=cap.per if cap else None, **extra,
    )


def _choose_slot(slot: Slot, run: _Run, ts: float) -> SlotDecision:
    context = run.context
    notes: list[str] | None = None
    tried: set[str] | None = None  # experiments already decided for this slot
    for v in slot.variants:
        if not v.eligible(context, ts):
            continue
        exp = v.experiment
        if exp is None:
            why = _capped(v, run) if v.cap is not None else None
            if why is None:
                return _shown(slot, v, run, v.match_reason, notes)
            (notes := notes or []).append(why)
            continue
        if tried is not None and exp.name in tried:
            continue
        (tried := tried or set()).add(exp.name)
        if run.visitor.visitor_id is None:
            (notes := notes or []).append(f"experiment {exp.name}: not enrolled without a visitor id")
            continue
        b = run.bucket(exp.name)
        arm = next((a.variant for a in slot.experiments[exp.name] if a.lo <= b < a.hi), None)
        if arm is None:
            if not notes:
                return slot.controls[exp.name]
            reason = f"experiment {exp.name} arm control ({'; '.join(notes)})"
            return SlotDecision(slot.name, None, reason, experiment=exp.name, arm="control")
        if arm is not v and not arm.eligible(context, ts):
            (notes := notes or []).append(f"experiment {exp.name}: arm {arm.id} not eligible, not enrolled")
            continue
        why = _capped(arm, run) if arm.cap is not None else None
        if why is not None:
            (notes := notes or []).append(f"experiment {exp.name}: {why}, not enrolled")
            continue
        return _shown(
            slot, arm, run, f"experiment {exp.name} arm {arm.id}, {arm.match_reason}", notes,
            experiment=exp.name, arm=arm.id,
        )
    if notes:
        return SlotDecision(slot.name, None, "; ".join(notes))
    return slot.default  # type: ignore[return-value]


def _forced(slot: Slot, variant_id: str | None, visitor: Visitor) -> SlotDecision:
    if variant_id is None:
        return slot.preview_default  # type: ignore[return-value]
    v = slot.by_id.get(variant_id)
    if v is None:
        return SlotDecision(slot.name, None, f"preview: no variant {variant_id!r}, default")
    return SlotDecision(slot.name, v.id, "preview", _edit(v, visitor))


# ---------------------------------------------------------------------------
# Preview parameter and cap counting.
# ---------------------------------------------------------------------------
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_DEFAULT_WORDS = frozenset({"none", "default", "-"})


def parse_preview(text: str) -> dict[str, str | None]:
    """``"hero:black-friday-uk,banner:none"`` → ``{"hero": "black-friday-uk",
    "banner": None}``.  ``none``/``default`` mean the origin's content.
    Tolerant: items that are not ``slot:variant`` (``=`` works too) with
    valid names are ignored; the last mention of a slot wins."""
    forced: dict[str, str | None] = {}
    for item in (text or "").split(","):
        slot, sep, variant = item.replace("=", ":", 1).partition(":")
        slot, variant = slot.strip().lower(), variant.strip().lower()
        if not sep or not _NAME.match(slot):
            continue
        if variant in _DEFAULT_WORDS:
            forced[slot] = None
        elif _NAME.match(variant):
            forced[slot] = variant
    return forced


def count_views(
    caps: Mapping[str, CapCount],
    decision: Decision,
    applied_slots: Iterable[str],
    now: dt.datetime,
    session_id: str | None,
) -> dict[str, CapCount]:
    """The cap counts to store after this response.

    ``applied_slots`` are the slots the rewriter confirmed on the page; each
    capped variant shown there counts one view (once per response, however
    often the slot appears).  Counts from past periods are dropped.
    """
    periods = cap_periods(now, session_id)
    current = {p for p in periods.values() if p is not None}
    out = {key: count for key, count in caps.items() if count.period in current}
    for name in set(applied_slots):
        d = decision.slots.get(name)
        if d is None or d.cap_key is None or d.cap_per is None:
            continue
        period = periods.get(d.cap_per)
        if period is None:
            continue
        old = out.get(d.cap_key)
        out[d.cap_key] = CapCount(period, (old.views if old is not None and old.period == period else 0) + 1)
    return out


# ---------------------------------------------------------------------------
# Decision trace (X-Edge-Explain, explain --json).
# ---------------------------------------------------------------------------
def explain_trace(visitor: Visitor, decision: Decision, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A compact, JSON-ready trace of one decision: the context, and per slot
    the variant (``null`` = default), why, and the experiment arm if any.
    ``extra`` (e.g. cache status, timings) is merged in at the top level.
    The visitor id is left out: the trace describes, it does not identify."""
    context = {k: list(v) if isinstance(v, tuple) else v for k, v in visitor.context.items()}
    slots: dict[str, dict[str, Any]] = {}
    for name, d in decision.slots.items():
        entry: dict[str, Any] = {"variant": d.variant, "reason": d.reason}
        if d.experiment is not None:
            entry["experiment"] = d.experiment
            entry["arm"] = d.arm
        slots[name] = entry
    trace: dict[str, Any] = {
        "context": context,
        "consent": visitor.consent,
        "bot": visitor.bot,
        "holdout": decision.holdout,
        "slots": slots,
    }
    if extra:
        trace.update(extra)
    return trace
