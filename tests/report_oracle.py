"""The report's aggregation in plain Python: the test oracle.

This was ``edgeproxy report``'s own aggregation before DuckDB (a Python
object per visitor: exact, readable, and 7x slower than reading the logs).
It stays here so the SQL can be held to it: ``oracle_counts`` reads the same
files line by line with ``logs.read_event`` and returns the same ``Counts``
the SQL does (cohorts by first-exposure day and arm, conversions at or
after the first exposure, arms and slots seen, malformed lines per file).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from edgeproxy.report.analyse import Counts, DayCounts, ExperimentCounts
from edgeproxy.report.logs import CONVERSION_FIELDS, EXPOSURE_FIELDS, Malformed, lines, read_event


@dataclasses.dataclass(slots=True)
class _Experiment:
    """Per visitor: first exposure's ts and arm, lines, seen in another arm."""

    name: str
    first: dict[str, list[Any]] = dataclasses.field(default_factory=dict)  # visitor -> [ts, arm, multi, lines]
    slots: set[str] = dataclasses.field(default_factory=set)
    arms: set[str] = dataclasses.field(default_factory=set)
    start: float = math.inf
    end: float = -math.inf


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _day(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).date().isoformat()


def oracle_counts(exposures: list[Path], conversions: list[Path]) -> Counts:
    experiments: dict[str, _Experiment] = {}
    malformed: list[Malformed] = []
    exposure_lines = conversion_lines = 0
    for path in exposures:
        bad = Malformed(str(path))
        for no, line in lines(path):
            event, ts, reason = read_event(line, EXPOSURE_FIELDS)
            if event is None:
                bad.add(no, reason)
                continue
            exposure_lines += 1
            name, visitor, arm = event["experiment"], event["visitor"], event["arm"]
            exp = experiments.get(name) or experiments.setdefault(name, _Experiment(name))
            exp.arms.add(arm)
            exp.start, exp.end = min(exp.start, ts), max(exp.end, ts)
            slot = event.get("slot")
            if slot is not None:  # as the SQL reads it: text, or a number's JSON text
                exp.slots.add(slot if isinstance(slot, str) else orjson.dumps(slot).decode())
            seen = exp.first.get(visitor)
            if seen is None:
                exp.first[visitor] = [ts, arm, False, 1]
                continue
            seen[3] += 1
            if arm != seen[1]:
                seen[2] = True
                if ts < seen[0]:  # logs from several workers need not be in order
                    seen[1] = arm
            seen[0] = min(seen[0], ts)
        malformed.append(bad)
    converted: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for path in conversions:
        bad = Malformed(str(path))
        for no, line in lines(path):
            event, ts, reason = read_event(line, CONVERSION_FIELDS)
            if event is None:
                bad.add(no, reason)
                continue
            conversion_lines += 1
            value = event.get("value")
            converted[event["visitor"]].append((ts, 0.0 if value is None else float(value)))
        malformed.append(bad)

    out = []
    for name in sorted(experiments):
        exp = experiments[name]
        cohorts: dict[tuple[str, str], list] = {}
        for visitor, (first_ts, arm, multi, n) in exp.first.items():
            c = cohorts.setdefault((_day(first_ts), arm), [0, 0, 0.0, 0, 0])
            c[0] += 1
            c[3] += multi
            c[4] += n
            after = [v for ts, v in converted.get(visitor, ()) if ts >= first_ts]
            if after:
                c[1] += 1
                c[2] += sum(after)
        first_day = min(day for day, _ in cohorts)
        for arm in exp.arms - {arm for _, arm in cohorts}:
            cohorts[(first_day, arm)] = [0, 0, 0.0, 0, 0]
        days = tuple(DayCounts(day, arm, *c) for (day, arm), c in sorted(cohorts.items()))
        out.append(ExperimentCounts(name, tuple(sorted(exp.slots)), _iso(exp.start), _iso(exp.end), days))
    return Counts(tuple(out), exposure_lines, conversion_lines, tuple(m for m in malformed if m.count))
