"""The compiled, immutable slots/ catalog that ``choose`` reads.

``load_catalog`` builds these once per (re)load; the per-request path only
matches.  Everything is frozen, so a request that picked up a ``Catalog``
keeps a consistent view even while the watcher swaps in a new one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Literal

from ..errors import SlotFileError
from ..model import EMPTY, ContextValue, Edit, SlotDecision, SortKey
from .template import Template

CAP_PERIODS = ("session", "day", "week")

# A read-only empty mapping default.  MappingProxyType is unhashable before
# Python 3.12, which dataclasses take for "mutable", hence the factory.
def _empty() -> Mapping:
    return dataclasses.field(default_factory=lambda: EMPTY)  # type: ignore[return-value]

# One condition of a `when` table: the context key and a test of the
# visitor's value for it.  A key missing from the context fails every test.
Test = Callable[[ContextValue], bool]


@dataclasses.dataclass(frozen=True, slots=True)
class Condition:
    """``fast``, when set, is the set of context values that satisfy the
    condition, so ``choose`` can test membership without calling ``test``."""

    key: str
    test: Test
    text: str  # e.g. "country=GB|IE", "hour=9..17", "device!=bot"
    fast: frozenset | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Experiment:
    """``experiment = { name, weight }``: the variant is one arm of ``name``
    and gets ``weight`` percent of the visitors who reach the experiment."""

    name: str
    weight: float


@dataclasses.dataclass(frozen=True, slots=True)
class Cap:
    """``cap = { views, per }``: at most ``views`` per ``per`` per visitor."""

    views: int
    per: Literal["session", "day", "week"]


@dataclasses.dataclass(frozen=True, slots=True)
class FileStamp:
    """What the watcher compares to notice a change without reading files."""

    mtime_ns: int
    size: int
    inode: int


@dataclasses.dataclass(frozen=True, slots=True)
class Variant:
    """One file of a slot folder, compiled.

    ``start_ts``/``end_ts`` are POSIX seconds (``-inf``/``inf`` when open);
    the window is ``[start, end)``.  A content variant has ``template``; a
    sort variant has ``sort``.  ``static_edit`` is the edit precomputed when
    it does not depend on the visitor (no merge tags, no affinity key).
    """

    slot: str
    id: str
    file: str  # file name inside the slot folder, e.g. "black-friday-uk.html"
    path: str  # as shown in errors, e.g. "slots/hero/black-friday-uk.html"
    kind: Literal["content", "sort"]
    when: tuple[Condition, ...] = ()
    priority: int = 0
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    start_ts: float = float("-inf")
    end_ts: float = float("inf")
    experiment: Experiment | None = None
    cap: Cap | None = None
    description: str = ""
    template: Template | None = None
    sort: tuple[SortKey, ...] = ()
    static_edit: Edit | None = None
    stamp: FileStamp | None = None
    # "priority 10, matched country=GB device=mobile", built at load.
    match_reason: str = ""
    # Line of the `experiment` key (for the weight-sum check).
    experiment_line: int = 1
    # "slot/variant": the key of this variant's count in Visitor.caps.
    cap_key: str = ""
    # Shared decisions when the edit does not depend on the visitor: showing
    # the variant plainly, and as its experiment's arm.
    decision: SlotDecision | None = None
    arm_decision: SlotDecision | None = None

    @property
    def specificity(self) -> int:
        return len(self.when)

    @property
    def sort_uses_affinity(self) -> bool:
        return any(k.kind == "affinity" for k in self.sort)

    def precedence(self) -> tuple[int, int, str]:
        """Sort key: priority desc, specificity desc, file name asc."""
        return (-self.priority, -len(self.when), self.file)

    def live_at(self, ts: float) -> bool:
        return self.start_ts <= ts < self.end_ts

    def matches(self, context: Mapping[str, ContextValue]) -> bool:
        for cond in self.when:
            value = context.get(cond.key, _MISSING)
            if value is _MISSING or not cond.test(value):
                return False
        return True

    def eligible(self, context: Mapping[str, ContextValue], ts: float) -> bool:
        """``when`` holds and ``ts`` (POSIX seconds) is inside the window."""
        if not (self.start_ts <= ts < self.end_ts):
            return False
        for cond in self.when:
            value = context.get(cond.key)
            if value is None:
                return False
            fast = cond.fast
            if fast is not None:
                if value not in fast:
                    return False
            elif not cond.test(value):
                return False
        return True


_MISSING: object = object()


@dataclasses.dataclass(frozen=True, slots=True)
class Arm:
    """A variant's share of its experiment: buckets ``[lo, hi)`` of 0–100."""

    lo: float
    hi: float
    variant: Variant


@dataclasses.dataclass(frozen=True, slots=True)
class Slot:
    """A slot folder: its variants in precedence order and, per experiment
    name, the arms in file-name order (buckets laid out in that order)."""

    name: str
    path: str
    variants: tuple[Variant, ...] = ()
    experiments: Mapping[str, tuple[Arm, ...]] = _empty()
    by_id: Mapping[str, Variant] = _empty()
    # Precomputed default decisions, shared by every request.
    controls: Mapping[str, SlotDecision] = _empty()
    default: SlotDecision | None = None
    bot: SlotDecision | None = None
    holdout: SlotDecision | None = None
    preview_default: SlotDecision | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class FileState:
    """The last load's view of one variant file.

    ``parsed`` is the file as it is on disk now, compiled (``None`` when it
    does not load: then ``error`` says why); ``good`` is the version that
    served last (it keeps serving while the file is broken).
    """

    stamp: FileStamp
    parsed: Variant | None
    good: Variant | None = None
    error: SlotFileError | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Catalog:
    """Everything in slots/, compiled.  Frozen: a reload builds a new one.

    ``fingerprint`` is the stat-level identity of the folder (file paths,
    mtimes, sizes, inodes); the watcher reloads only when it changes.
    ``generation`` counts loads, so caches keyed on a catalog can tell.
    """

    directory: str
    slots: Mapping[str, Slot] = _empty()
    errors: tuple[SlotFileError, ...] = ()
    fingerprint: frozenset = frozenset()
    files: Mapping[str, FileState] = _empty()
    generation: int = 0
    loaded_at: dt.datetime | None = None
    missing: bool = False  # the folder itself does not exist

    @property
    def slot_list(self) -> tuple[Slot, ...]:
        return tuple(self.slots.values())

    def variant(self, slot: str, variant_id: str) -> Variant | None:
        s = self.slots.get(slot)
        return s.by_id.get(variant_id) if s is not None else None

    def __len__(self) -> int:
        return sum(len(s.variants) for s in self.slots.values())


EMPTY_CATALOG = Catalog(directory="")
