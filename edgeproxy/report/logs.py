"""The log files as Python sees them: which is which, and what is wrong with a line.

The aggregation itself runs in SQL (``aggregate.py``); Python reads lines
only to

- recognise each file's kind from its first events (``sort_logs``), so the
  order on the command line does not matter;
- name the first few malformed lines of a file as ``file:line: reason``
  (``malformed_examples``), after the SQL has counted them: it reads a file
  only when that file has malformed lines, and stops at the last example.

``read_event`` is the rule a line must pass (the SQL applies the same rule;
tests hold the two to it on the same files): a JSON object with a
non-empty ``visitor`` (exposures: also ``experiment`` and ``arm``), ids
being text (a number is taken as its JSON text), and a ``ts`` in ISO 8601
(naive: UTC) or Unix seconds; a conversion's ``value`` is a number or
absent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import glob
import gzip
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

MAX_EXAMPLES = 5  # malformed lines reported per file
SNIFF_LINES = 1000
EXPOSURE_FIELDS = ("visitor", "experiment", "arm")
CONVERSION_FIELDS = ("visitor",)


class ReportInputError(Exception):
    """An input file cannot be read (exit status 2)."""


@dataclasses.dataclass(slots=True)
class Malformed:
    """Skipped lines of one file: how many, and the first few as ``file:line: reason``."""

    file: str
    count: int = 0
    examples: list[str] = dataclasses.field(default_factory=list)

    def add(self, line_no: int, reason: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{self.file}:{line_no}: {reason}")


MAX_UNIX_SECONDS = 1e11  # a number of seconds beyond this (year 5138) is not a ts


def parse_ts(value: Any) -> float:
    """An event's ``ts`` as Unix seconds: ISO 8601 (a naive time is UTC) or
    a number of seconds (also as text, as the SQL reads it)."""
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            value = float(value)
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.timezone.utc)
            return when.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < MAX_UNIX_SECONDS:
        return float(value)
    raise ValueError


def lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Numbered non-blank lines of ``path`` (``.gz`` read through gzip)."""
    try:
        fh = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
        with fh:
            for no, line in enumerate(fh, 1):
                if line.strip():
                    yield no, line
    except (OSError, EOFError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ReportInputError(f"{path}: cannot read: {reason}") from exc


def read_event(line: bytes, required: tuple[str, ...]) -> tuple[dict[str, Any] | None, float, str]:
    """The event of a line and its ts, or ``(None, 0, reason)``.  A
    conversion (``required == CONVERSION_FIELDS``) must also have a numeric
    ``value`` or none."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, 0.0, "not valid JSON"
    if not isinstance(event, dict):
        return None, 0.0, "not a JSON object"
    for key in required:
        value = event.get(key)
        if value is None or value == "":
            return None, 0.0, f"missing or empty {key!r}"
        if not isinstance(value, str):  # ids are text: a number is read as its JSON text, as in SQL
            event[key] = orjson.dumps(value).decode()
    try:
        ts = parse_ts(event.get("ts"))
    except (ValueError, TypeError, OverflowError):
        return None, 0.0, f"bad ts {event.get('ts')!r}"
    if required == CONVERSION_FIELDS:
        value = event.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            return None, 0.0, f"bad value {value!r}"
    return event, ts, ""


def malformed_examples(path: Path, kind: str, count: int) -> Malformed:
    """``count`` malformed lines of ``path`` (counted by the SQL) with the
    first ``MAX_EXAMPLES`` named: reads until it has them."""
    bad = Malformed(str(path), count=count)
    if not count:
        return bad
    required = EXPOSURE_FIELDS if kind == "exposures" else CONVERSION_FIELDS
    want = min(count, MAX_EXAMPLES)
    for no, line in lines(path):
        event, _, reason = read_event(line, required)
        if event is None:
            bad.examples.append(f"{path}:{no}: {reason}")
            if len(bad.examples) >= want:
                break
    return bad


def log_kind(path: Path) -> str | None:
    """``"exposures"`` or ``"conversions"`` from the first event line of
    ``path`` (exposures name an ``experiment``); ``None`` when no line in
    the first ``SNIFF_LINES`` is a JSON object with a ``visitor``."""
    for no, line in lines(path):
        if no > SNIFF_LINES:
            break
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and "visitor" in event:
            return "exposures" if "experiment" in event else "conversions"
    return None


def expand(patterns: Sequence[str]) -> list[Path]:
    """Paths of the command line, each glob (``'logs/exposures-*.jsonl.gz'``,
    quoted so the shell left it) expanded in sorted order; a pattern that
    matches nothing stays as it is, to be reported as unreadable."""
    out: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else []
        if matches:
            out.extend(Path(m) for m in matches)
        else:
            out.append(Path(pattern))
    return out


def sort_logs(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Exposure and conversion logs among ``paths``, recognised by their
    lines, so the order on the command line does not matter.  A file with
    no event to go by (empty, or all malformed) keeps its position's
    meaning: the first is the exposure log, the others conversion logs."""
    exposures: list[Path] = []
    conversions: list[Path] = []
    for i, path in enumerate(paths):
        kind = log_kind(path) or ("exposures" if i == 0 else "conversions")
        (exposures if kind == "exposures" else conversions).append(path)
    return exposures, conversions
