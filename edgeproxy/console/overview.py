"""What the slots/ folder does right now: one row per variant file.

``overview(catalog, now) -> Overview`` is pure: it reads the live
``Catalog`` (``CatalogStore.current``) and never the disk, so the console
shows exactly what the proxy serves.  Each file is in one state:

=============  ============================================================
``live``       served, and ``now`` is inside its ``[start, end)`` window
``scheduled``  served, but its ``start`` is still ahead
``ended``      served, but its ``end`` has passed
``broken``     the file on disk does not load (``file:line: reason``); the
               row says which version still serves: the previous good one
               (``FileState.good``, kept by the loader) or nothing
=============  ============================================================

Rows come in the order ``choose`` tries them (priority, specificity, file
name), broken files that serve nothing last, so reading down a slot is
reading its precedence.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from ..catalog.model import Catalog, Variant
from ..errors import SlotFileError
from .words import describe_when

LIVE, SCHEDULED, ENDED, BROKEN = "live", "scheduled", "ended", "broken"


@dataclasses.dataclass(frozen=True, slots=True)
class VariantRow:
    slot: str
    file: str  # e.g. "black-friday-uk.html"
    variant: str  # the variant id (file name without extension)
    state: str  # live, scheduled, ended, broken
    kind: str = ""  # content, sort ("" when nothing serves)
    audience: str = ""  # describe_when(): "mobile visitors in GB or IE"
    when: str = ""  # the compiled conditions, as edgeproxy check prints them
    priority: int | None = None
    cap: str = ""  # "3 per day"
    experiment: str = ""
    weight: float | None = None
    description: str = ""
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    errors: tuple[str, ...] = ()  # "file:line: reason"
    serving: str = ""  # for a broken file: which version still serves
    serving_state: str = ""  # that version's own state (live, scheduled, ended)


@dataclasses.dataclass(frozen=True, slots=True)
class ExperimentShare:
    name: str
    arms: tuple[tuple[str, float], ...]  # (variant id, percent), bucket order
    control: float


@dataclasses.dataclass(frozen=True, slots=True)
class SlotView:
    name: str
    rows: tuple[VariantRow, ...]
    experiments: tuple[ExperimentShare, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Overview:
    directory: str
    slots: tuple[SlotView, ...]
    problems: tuple[str, ...]  # errors not tied to a listed file (bad folder or file names)
    generation: int
    loaded_at: dt.datetime | None
    missing: bool = False

    @property
    def counts(self) -> dict[str, int]:
        out = {LIVE: 0, SCHEDULED: 0, ENDED: 0, BROKEN: 0}
        for slot in self.slots:
            for row in slot.rows:
                out[row.state] += 1
        return out


def window_state(v: Variant, now: dt.datetime) -> str:
    """``live``, ``scheduled`` or ``ended`` for a served variant at ``now``."""
    ts = now.timestamp()
    if ts < v.start_ts:
        return SCHEDULED
    if ts >= v.end_ts:
        return ENDED
    return LIVE


def _saved_at(v: Variant) -> str:
    if v.stamp is None:
        return ""
    saved = dt.datetime.fromtimestamp(v.stamp.mtime_ns / 1e9, dt.timezone.utc)
    return f", saved {saved:%Y-%m-%d %H:%M} UTC"


def _row(v: Variant, state: str) -> VariantRow:
    return VariantRow(
        slot=v.slot,
        file=v.file,
        variant=v.id,
        state=state,
        kind=v.kind,
        audience=describe_when(v.when),
        when=" ".join(c.text for c in v.when),
        priority=v.priority,
        cap=f"{v.cap.views} per {v.cap.per}" if v.cap else "",
        experiment=v.experiment.name if v.experiment else "",
        weight=v.experiment.weight if v.experiment else None,
        description=v.description,
        start=v.start,
        end=v.end,
    )


def overview(catalog: Catalog, now: dt.datetime) -> Overview:
    """Every slot and variant file of ``catalog`` with its state at ``now``."""
    base = Path(catalog.directory)
    by_path: dict[str, list[SlotFileError]] = {}
    for err in catalog.errors:
        by_path.setdefault(err.path, []).append(err)
    files_by_slot: dict[str, list[str]] = {}
    for rel in catalog.files:
        slot, file = rel.split("/", 1)
        files_by_slot.setdefault(slot, []).append(file)
    claimed: set[str] = set()
    views: list[SlotView] = []
    for name in sorted(set(catalog.slots) | set(files_by_slot)):
        slot = catalog.slots.get(name)
        served = slot.variants if slot is not None else ()
        rows: list[VariantRow] = []
        listed: set[str] = set()
        for v in served:
            listed.add(v.file)
            path = str(base / name / v.file)
            claimed.add(path)
            errors = tuple(str(e) for e in by_path.get(path, ()))
            state = window_state(v, now)
            row = _row(v, state)
            if errors:
                # The file on disk is broken; this row's details are the
                # previous version's, which is what visitors get.
                row = dataclasses.replace(
                    row, state=BROKEN, errors=errors, serving=f"the previous version{_saved_at(v)}", serving_state=state,
                )
            rows.append(row)
        for file in sorted(files_by_slot.get(name, ())):
            if file in listed:
                continue
            path = str(base / name / file)
            claimed.add(path)
            errors = tuple(str(e) for e in by_path.get(path, ()))
            state = catalog.files[f"{name}/{file}"]
            if not errors and state.error is not None:
                errors = (str(state.error),)
            rows.append(VariantRow(
                slot=name, file=file, variant=Path(file).stem, state=BROKEN, errors=errors,
                serving="nothing (no version of this file has loaded yet)",
            ))
        experiments = tuple(
            ExperimentShare(exp, tuple((a.variant.id, a.hi - a.lo) for a in arms), 100 - (arms[-1].hi if arms else 0))
            for exp, arms in (slot.experiments.items() if slot is not None else ())
        )
        views.append(SlotView(name, tuple(rows), experiments))
    problems = tuple(str(e) for e in catalog.errors if e.path not in claimed)
    return Overview(
        directory=catalog.directory,
        slots=tuple(views),
        problems=problems,
        generation=catalog.generation,
        loaded_at=catalog.loaded_at,
        missing=catalog.missing,
    )
