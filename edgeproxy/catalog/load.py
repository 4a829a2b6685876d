"""Load and validate the slots/ folder into a ``Catalog`` (CONTRACT §2).

Layout: ``slots/<slot>/<variant>.html`` (content) or ``.toml`` (sort).  The
folder name is the slot name and the file stem the variant id, both
``[a-z0-9][a-z0-9_-]*``.  Other files (``README.md``, ``.DS_Store``, editor
backups ``*~``, ``.#*``, ``#*#``, ``*.swp``) and hidden folders are ignored.

Header keys (``.html``: inside the opening ``<!--edge … -->``; ``.toml``:
the whole file):

``when``         table of context conditions (see ``conditions.py``)
``priority``     integer, default 0; higher wins
``start``/``end``  the live window ``[start, end)``: TOML date-times with an
                 offset (``2026-11-27T00:00:00Z``); a local date-time without
                 offset, or a bare date (midnight), is UTC
``experiment``   ``{ name = "bf-hero", weight = 50 }``, 0 < weight <= 100; the
                 weights of one experiment's variants in a slot sum to <= 100
``cap``          ``{ views = 3, per = "day" }``, per: session, day, week
``description``  free text, shown by ``edgeproxy check``
``sort``         (``.toml`` only, required) keys: ``"affinity"``,
                 ``"data-x"``, ``"-data-x"``, ``"pin:A1,B7"``

Every problem raises/records ``SlotFileError(path, line, reason)`` with the
line in the file as the merchandiser sees it.  A file that fails keeps its
previous good version serving (from ``previous``); the catalog lists the
errors.  ``load_catalog`` re-reads only files whose stat changed since
``previous``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import SlotFileError
from ..model import ReplaceInner, SlotDecision, SortChildren, SortKey
from ..settings import DEFAULT_MAX_FRAGMENT_BYTES
from .balance import BalanceError, check_balanced
from .conditions import ConditionError, _show, compile_when
from .model import CAP_PERIODS, Arm, Cap, Catalog, Experiment, FileStamp, FileState, Slot, Variant
from .template import TemplateError, compile_template

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
KINDS = {".html": "content", ".toml": "sort"}
HEADER_OPEN = "<!--edge"
HEADER_CLOSE = "-->"
COMMON_KEYS = ("when", "priority", "start", "end", "experiment", "cap", "description")
CONTENT_KEYS = frozenset(COMMON_KEYS)
SORT_KEYS = frozenset(COMMON_KEYS + ("sort",))
# A file this much bigger than the fragment cap is rejected unread.
HEADER_ALLOWANCE = 64 * 1024

_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = re.compile(r"\s*\(at end of document\)\s*$")


# ---------------------------------------------------------------------------
# Scanning: which files are variants, and their stat stamps.
# ---------------------------------------------------------------------------
def _ignored(name: str) -> bool:
    return name.startswith((".", "#", "~")) or name.endswith(("~", "#"))


def _stamp(st: os.stat_result) -> FileStamp:
    return FileStamp(st.st_mtime_ns, st.st_size, st.st_ino)


def scan(directory: Path) -> tuple[dict[str, list[tuple[str, Path, FileStamp]]], list[SlotFileError], frozenset]:
    """List slot folders and their variant files (sorted), with the folder
    and file-name errors, and the stat fingerprint.  Raises ``OSError`` when
    ``directory`` cannot be listed."""
    slots: dict[str, list[tuple[str, Path, FileStamp]]] = {}
    errors: list[SlotFileError] = []
    marks: list[tuple] = []
    with os.scandir(directory) as it:
        folders = sorted((e for e in it if not _ignored(e.name) and e.is_dir()), key=lambda e: e.name)
    for folder in folders:
        shown = str(directory / folder.name)
        marks.append((folder.name,))
        if not NAME.match(folder.name):
            errors.append(SlotFileError(
                shown, 1,
                f"slot folder name {folder.name!r} must be lower-case letters, digits, - and _ "
                f"(starting with a letter or digit), e.g. {_slug(folder.name)!r}",
            ))
            continue
        files: list[tuple[str, Path, FileStamp]] = []
        seen: dict[str, str] = {}
        try:
            with os.scandir(folder.path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            errors.append(SlotFileError(shown, 1, f"cannot list the slot folder: {exc.strerror or exc}"))
            continue
        for entry in entries:
            stem, dot, suffix = entry.name.rpartition(".")
            if _ignored(entry.name) or not dot or "." + suffix not in KINDS:
                continue
            try:
                if not entry.is_file():
                    continue
                stamp = _stamp(entry.stat())
            except OSError:
                continue  # vanished while listing
            marks.append((f"{folder.name}/{entry.name}", stamp.mtime_ns, stamp.size, stamp.inode))
            path = Path(folder.path) / entry.name
            if not NAME.match(stem):
                errors.append(SlotFileError(
                    str(directory / folder.name / entry.name), 1,
                    f"variant file name {entry.name!r}: the name before .{suffix} must be lower-case letters, "
                    f"digits, - and _, e.g. {_slug(stem) + '.' + suffix!r}",
                ))
                continue
            if stem in seen:
                errors.append(SlotFileError(
                    str(directory / folder.name / entry.name), 1,
                    f"variant id {stem!r} is already defined by {seen[stem]} in this slot",
                ))
                continue
            seen[stem] = entry.name
            files.append((entry.name, path, stamp))
        slots[folder.name] = files
    return slots, errors, frozenset(marks)


def fingerprint(directory: Path | str) -> frozenset | None:
    """The stat-level identity of a slots folder (``None`` when missing)."""
    try:
        return scan(Path(directory))[2]
    except OSError:
        return None


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_") or "my-slot"


# ---------------------------------------------------------------------------
# Locating keys in TOML text, for error lines (tomllib gives none).
# ---------------------------------------------------------------------------
class _Locator:
    """Finds the line of a (possibly nested) key in TOML source text.

    Best effort over the forms people write (``key = …``, ``[key]`` tables,
    ``key.sub = …`` dotted keys, inline tables, multi-line arrays); falls
    back to the enclosing key's line, then the header's first line.
    """

    def __init__(self, text: str, first_line: int) -> None:
        self.lines = text.split("\n")
        self.first = first_line

    @staticmethod
    def _key(name: str) -> str:
        e = re.escape(name)
        return rf"(?:{e}|\"{e}\"|'{e}')"

    def line(self, top: str, sub: str | None = None) -> int:
        k = self._key(top)
        assign = re.compile(rf"^\s*{k}\s*=")
        table = re.compile(rf"^\s*\[\s*{k}\s*\]")
        if sub is not None:
            dotted = re.compile(rf"^\s*{k}\s*\.\s*{self._key(sub)}\s*=")
            for i, text in enumerate(self.lines):
                if dotted.match(text):
                    return self.first + i
        for i, text in enumerate(self.lines):
            if assign.match(text) or table.match(text):
                if sub is None:
                    return self.first + i
                found = self._sub(i, sub, inline=assign.match(text) is not None)
                return self.first + (i if found is None else found)
        for i, text in enumerate(self.lines):  # e.g. only dotted keys given
            if re.match(rf"^\s*{k}\s*\.", text):
                return self.first + i
        return self.first

    def _sub(self, start: int, sub: str, *, inline: bool) -> int | None:
        key = re.compile(rf"(?:^|[\s{{,]){self._key(sub)}\s*=")
        any_key = re.compile(r"^\s*[A-Za-z0-9_\"'-][A-Za-z0-9_.\"' -]*=")
        for i in range(start, len(self.lines)):
            text = self.lines[i]
            if i > start and (text.lstrip().startswith("[") and not text.lstrip().startswith("[[") and "=" not in text.split("]")[0]):
                return None
            if i == start:
                text = text.split("=", 1)[1] if inline else ""
            elif inline and any_key.match(text):
                return None
            if key.search(text):
                return i
        return None


# ---------------------------------------------------------------------------
# One file -> one Variant.
# ---------------------------------------------------------------------------
def parse_variant(
    path: Path | str,
    slot: str,
    data: bytes,
    *,
    max_fragment_bytes: int = DEFAULT_MAX_FRAGMENT_BYTES,
    stamp: FileStamp | None = None,
) -> Variant:
    """Compile one variant file's bytes; raises ``SlotFileError``."""
    path = Path(path)
    shown = str(path)
    kind = KINDS.get(path.suffix)
    if kind is None:
        raise SlotFileError(shown, 1, "not a variant file: expected .html (content) or .toml (sort)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SlotFileError(shown, line, "not UTF-8 text: save the file as UTF-8") from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")

    fragment = ""
    fragment_at = 0
    if kind == "content":
        head_at = len(text) - len(text.lstrip())
        if not text.startswith(HEADER_OPEN, head_at) or text[head_at + len(HEADER_OPEN):][:1] not in ("", " ", "\t", "\n", "-"):
            line = _line(text, head_at)
            found = text[head_at:].split("\n", 1)[0][:20]
            if found.startswith("<!--"):
                raise SlotFileError(shown, line, f"the header must open with {HEADER_OPEN} (found {found!r})")
            raise SlotFileError(
                shown, line,
                f"missing the {HEADER_OPEN} … {HEADER_CLOSE} header at the top of the file "
                f"(an empty one, {HEADER_OPEN} {HEADER_CLOSE}, shows the variant to everyone)",
            )
        body_at = head_at + len(HEADER_OPEN)
        close = text.find(HEADER_CLOSE, body_at)
        if close < 0:
            raise SlotFileError(shown, _line(text, head_at), f"the {HEADER_OPEN} header is never closed with {HEADER_CLOSE}")
        toml_text = text[body_at:close]
        first_line = _line(text, body_at)
        rest_at = close + len(HEADER_CLOSE)
        rest = text[rest_at:]
        fragment_at = rest_at + (len(rest) - len(rest.lstrip()))
        fragment = rest.strip()
    else:
        toml_text, first_line = text, 1

    try:
        doc = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(shown, exc, toml_text, first_line) from None
    loc = _Locator(toml_text, first_line)

    allowed = CONTENT_KEYS if kind == "content" else SORT_KEYS
    for key in doc:
        if key not in allowed:
            if key == "sort":
                reason = "sort belongs in a .toml sort variant; an .html variant replaces the slot's content"
            else:
                reason = f"unknown key {key!r}{_did_you_mean(key, allowed)}"
            raise SlotFileError(shown, loc.line(key), reason)

    def fail(reason: str, top: str, sub: str | None = None) -> SlotFileError:
        return SlotFileError(shown, loc.line(top, sub), reason)

    # when
    try:
        when = compile_when(doc.get("when", {}))
    except ConditionError as exc:
        raise fail(exc.reason, "when", exc.key) from None

    priority = doc.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise fail(f"priority must be a whole number (e.g. 10), not {_show(priority)}", "priority")

    start = _datetime(doc["start"], "start", fail) if "start" in doc else None
    end = _datetime(doc["end"], "end", fail) if "end" in doc else None
    if start is not None and end is not None and end <= start:
        raise fail(f"end {end.isoformat()} is not after start {start.isoformat()}", "end")

    experiment = _experiment(doc["experiment"], fail) if "experiment" in doc else None
    cap = _cap(doc["cap"], fail) if "cap" in doc else None

    description = doc.get("description", "")
    if not isinstance(description, str):
        raise fail(f"description must be text in quotes, not {_show(description)}", "description")

    template = None
    sort: tuple[SortKey, ...] = ()
    static_edit = None
    if kind == "content":
        size = len(fragment.encode("utf-8"))
        if size > max_fragment_bytes:
            raise SlotFileError(
                shown, _line(text, fragment_at),
                f"fragment is {size} bytes, over the {max_fragment_bytes}-byte limit (max_fragment_bytes)",
            )
        try:
            check_balanced(fragment)
        except BalanceError as exc:
            reason = exc.reason
            if exc.related is not None:
                reason = reason.replace("{related}", str(_line(text, fragment_at + exc.related)))
            raise SlotFileError(shown, _line(text, fragment_at + exc.offset), reason) from None
        try:
            template = compile_template(fragment)
        except TemplateError as exc:
            raise SlotFileError(shown, _line(text, fragment_at + exc.offset), exc.reason) from None
        if template.is_static:
            static_edit = ReplaceInner(fragment)
    else:
        if "sort" not in doc:
            raise SlotFileError(shown, first_line, 'a .toml sort variant needs sort = [...], e.g. sort = ["affinity", "-data-stock"]')
        sort = _sort_keys(doc["sort"], fail)
        if not any(k.kind == "affinity" for k in sort):
            static_edit = SortChildren(sort, ())

    match = " ".join(c.text for c in when)
    match_reason = f"priority {priority}, " + (f"matched {match}" if match else "everyone")
    decision = arm_decision = None
    if static_edit is not None:
        capped = {"cap_key": f"{slot}/{path.stem}", "cap_per": cap.per} if cap else {}
        decision = SlotDecision(slot, path.stem, match_reason, static_edit, **capped)
        if experiment is not None:
            arm_decision = SlotDecision(
                slot, path.stem, f"experiment {experiment.name} arm {path.stem}, {match_reason}", static_edit,
                experiment=experiment.name, arm=path.stem, **capped,
            )
    return Variant(
        slot=slot,
        id=path.stem,
        file=path.name,
        path=shown,
        kind=kind,
        when=when,
        priority=priority,
        start=start,
        end=end,
        start_ts=start.timestamp() if start else float("-inf"),
        end_ts=end.timestamp() if end else float("inf"),
        experiment=experiment,
        cap=cap,
        description=description.strip(),
        template=template,
        sort=sort,
        static_edit=static_edit,
        stamp=stamp,
        match_reason=match_reason,
        experiment_line=loc.line("experiment") if experiment else 1,
        cap_key=f"{slot}/{path.stem}",
        decision=decision,
        arm_decision=arm_decision,
    )


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _toml_error(shown: str, exc: tomllib.TOMLDecodeError, toml_text: str, first_line: int) -> SlotFileError:
    message = str(exc)
    m = _TOML_POS.search(message)
    if m:
        line = first_line + int(m.group(1)) - 1
        message = message[: m.start()]
        source = toml_text.split("\n")[int(m.group(1)) - 1] if int(m.group(1)) <= toml_text.count("\n") + 1 else ""
        if re.match(r"^\s*(start|end)\s*=", source):
            message += " (write dates like 2026-11-27T00:00:00Z)"
    else:
        line = first_line + max(toml_text.rstrip().count("\n"), 0)
        message = _TOML_END.sub("", message)
    return SlotFileError(shown, line, f"invalid TOML: {message}")


def _datetime(value: Any, key: str, fail) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise fail(f"{key} = {value!r} is not a date-time: write e.g. {key} = 2026-11-27T00:00:00Z (no quotes)", key) from None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(0), dt.timezone.utc)
    raise fail(f"{key} must be a date-time like 2026-11-27T00:00:00Z, not {_show(value)}", key)


def _experiment(value: Any, fail) -> Experiment:
    if not isinstance(value, dict):
        raise fail(f'experiment must be a table like {{ name = "bf-hero", weight = 50 }}, not {_show(value)}', "experiment")
    for key in value:
        if key not in ("name", "weight"):
            raise fail(f"unknown key {key!r} in experiment{_did_you_mean(key, ('name', 'weight'))}", "experiment", key)
    name = value.get("name")
    if not isinstance(name, str) or not EXPERIMENT_NAME.match(name):
        raise fail(
            f"experiment name must be letters, digits, ., - and _ (e.g. \"bf-hero\"), not {_show(name)}"
            if name is not None else "experiment needs a name, e.g. name = \"bf-hero\"",
            "experiment", "name",
        )
    weight = value.get("weight")
    if weight is None:
        raise fail("experiment needs a weight: the percent of visitors who see this variant, e.g. weight = 50", "experiment")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= 100:
        raise fail(f"experiment weight must be a number above 0 and at most 100, not {_show(weight)}", "experiment", "weight")
    return Experiment(name, float(weight))


def _cap(value: Any, fail) -> Cap:
    if not isinstance(value, dict):
        raise fail(f'cap must be a table like {{ views = 3, per = "day" }}, not {_show(value)}', "cap")
    for key in value:
        if key not in ("views", "per"):
            raise fail(f"unknown key {key!r} in cap{_did_you_mean(key, ('views', 'per'))}", "cap", key)
    views = value.get("views")
    if isinstance(views, bool) or not isinstance(views, int) or views < 1:
        raise fail(f"cap views must be a whole number of at least 1, not {_show(views)}", "cap", "views")
    per = value.get("per")
    if per not in CAP_PERIODS:
        raise fail(f"cap per must be one of {', '.join(CAP_PERIODS)}, not {_show(per)}", "cap", "per")
    return Cap(views, per)


_ATTR = re.compile(r"^data-[a-z0-9][a-z0-9_.:-]*$")


def _sort_keys(value: Any, fail) -> tuple[SortKey, ...]:
    if not isinstance(value, list) or not value:
        raise fail('sort must be a non-empty list, e.g. sort = ["affinity", "-data-stock"]', "sort")
    keys = []
    for item in value:
        if not isinstance(item, str):
            raise fail(f"sort key {_show(item)} is not text", "sort")
        text = item.strip()
        if text == "affinity":
            keys.append(SortKey("affinity"))
        elif text.startswith("pin:"):
            skus = tuple(s.strip() for s in text[4:].split(",") if s.strip())
            if not skus:
                raise fail(f"sort key {item!r}: pin needs SKUs, e.g. \"pin:A1,B7\"", "sort")
            keys.append(SortKey("pin", skus=skus))
        elif _ATTR.match(text.lstrip("+-").lower()) and text[:2] not in ("--", "+-", "-+", "++"):
            keys.append(SortKey("attr", attr=text.lstrip("+-").lower(), descending=text.startswith("-")))
        else:
            raise fail(
                f"sort key {item!r}: expected \"affinity\", \"data-<attr>\" (ascending), "
                f"\"-data-<attr>\" (descending) or \"pin:SKU,SKU\"", "sort",
            )
    return tuple(keys)


def _did_you_mean(key: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(sorted(allowed))})"


# ---------------------------------------------------------------------------
# The whole folder -> Catalog.
# ---------------------------------------------------------------------------
def load_catalog(
    directory: Path | str,
    *,
    max_fragment_bytes: int = DEFAULT_MAX_FRAGMENT_BYTES,
    previous: Catalog | None = None,
    now: dt.datetime | None = None,
) -> Catalog:
    """Read and compile ``directory``; never raises for bad files.

    Files whose stat stamp equals the one in ``previous`` are not re-read.
    A file that fails to load keeps its previous good version serving; a
    file that disappeared is gone.  A missing folder gives an empty catalog
    with ``missing=True``.
    """
    directory = Path(directory)
    shown = str(directory)
    now = now or dt.datetime.now(dt.timezone.utc)
    generation = previous.generation + 1 if previous is not None else 1
    try:
        listing, errors, marks = scan(directory)
    except OSError:
        return Catalog(directory=shown, loaded_at=now, generation=generation, missing=True)
    old_files = previous.files if previous is not None and previous.directory == shown else {}

    states: dict[str, FileState] = {}
    for slot, entries in listing.items():
        for file, path, stamp in entries:
            rel = f"{slot}/{file}"
            old = old_files.get(rel)
            if old is not None and old.stamp == stamp:
                states[rel] = old
                continue
            good = old.good if old is not None else None
            try:
                states[rel] = FileState(stamp, _read_variant(path, shown, slot, file, stamp, max_fragment_bytes), good)
            except SlotFileError as exc:
                states[rel] = FileState(stamp, None, good, exc)
            except FileNotFoundError:
                continue  # deleted between listing and reading: gone

    slots: dict[str, Slot] = {}
    for slot, entries in listing.items():
        serving: list[Variant] = []
        totals: dict[str, list[Variant]] = {}
        for file, _path, _stamp in entries:
            rel = f"{slot}/{file}"
            state = states.get(rel)
            if state is None:
                continue
            chosen = state.parsed or state.good
            if chosen is not None and chosen.experiment is not None:
                chosen, problem = _fit_experiment(chosen, state, totals)
                if problem is not None:
                    errors.append(problem)
            if chosen is not None:
                serving.append(chosen)
                if chosen.experiment is not None:
                    totals.setdefault(chosen.experiment.name, []).append(chosen)
                if chosen is not state.good:
                    states[rel] = FileState(state.stamp, state.parsed, chosen, state.error)
            if state.error is not None:
                errors.append(state.error)
        slots[slot] = _build_slot(slot, str(directory / slot), serving)

    errors.sort(key=lambda e: (e.path, e.line))
    return Catalog(
        directory=shown,
        slots=MappingProxyType(slots),
        errors=tuple(errors),
        fingerprint=marks,
        files=MappingProxyType(states),
        generation=generation,
        loaded_at=now,
    )


def _read_variant(path: Path, shown_dir: str, slot: str, file: str, stamp: FileStamp, max_fragment_bytes: int) -> Variant:
    shown = str(Path(shown_dir) / slot / file)
    if stamp.size > max_fragment_bytes + HEADER_ALLOWANCE:
        raise SlotFileError(
            shown, 1, f"file is {stamp.size} bytes, over the {max_fragment_bytes}-byte fragment limit (max_fragment_bytes)"
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SlotFileError(shown, 1, f"cannot read: {exc.strerror or exc}") from None
    return parse_variant(shown, slot, data, max_fragment_bytes=max_fragment_bytes, stamp=stamp)


def _fit_experiment(chosen: Variant, state: FileState, totals: dict[str, list[Variant]]) -> tuple[Variant | None, SlotFileError | None]:
    """Weights of one experiment in a slot must add up to at most 100.

    Files are taken in name order; the one that pushes the sum over 100 is
    rejected (its previous good version serves if that one fits)."""
    exp = chosen.experiment
    assert exp is not None
    members = totals.get(exp.name, [])
    used = sum(v.experiment.weight for v in members)  # type: ignore[union-attr]
    if used + exp.weight <= 100:
        return chosen, None
    listing = ", ".join(f"{v.file} {v.experiment.weight:g}" for v in members)  # type: ignore[union-attr]
    problem = SlotFileError(
        chosen.path, chosen.experiment_line,
        f"experiment {exp.name!r} weights in slot {chosen.slot!r} add up to {used + exp.weight:g} (over 100): "
        f"{listing}, {chosen.file} {exp.weight:g}",
    )
    fallback = state.good
    if fallback is not None and fallback is not chosen:
        fe = fallback.experiment
        if fe is None or fe.name != exp.name or used + fe.weight <= 100:
            return fallback, problem
    return None, problem


def _build_slot(name: str, path: str, variants: list[Variant]) -> Slot:
    ordered = tuple(sorted(variants, key=Variant.precedence))
    experiments: dict[str, list[Arm]] = {}
    for v in sorted(variants, key=lambda v: v.file):
        if v.experiment is None:
            continue
        arms = experiments.setdefault(v.experiment.name, [])
        lo = arms[-1].hi if arms else 0.0
        arms.append(Arm(lo, lo + v.experiment.weight, v))
    return Slot(
        name=name,
        path=path,
        variants=ordered,
        experiments=MappingProxyType({k: tuple(a) for k, a in experiments.items()}),
        by_id=MappingProxyType({v.id: v for v in ordered}),
        controls=MappingProxyType({
            exp: SlotDecision(name, None, f"experiment {exp} arm control", experiment=exp, arm="control")
            for exp in experiments
        }),
        default=SlotDecision(name, None, "no eligible variant"),
        bot=SlotDecision(name, None, "bot"),
        holdout=SlotDecision(name, None, "holdout"),
        preview_default=SlotDecision(name, None, "preview: default"),
    )
