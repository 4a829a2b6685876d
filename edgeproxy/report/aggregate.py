"""Run the aggregation (``sql.py``) and turn its rows into ``Counts``.

- ``aggregate_files``: the default.  An embedded DuckDB reads the JSON-lines
  files directly (plain, ``.gz``, any number), out of core: its memory is
  capped at ``DEFAULT_MEMORY_LIMIT`` and it spills to a temporary folder
  beyond that, on all cores.  Malformed lines are counted per file by the
  same scan; their first few are named by ``logs.malformed_examples``.
- ``aggregate_engine``: the same query run where the logs already are, a
  PostgreSQL server (``postgresql://…``, needs ``psycopg``) or a DuckDB
  database file (``duckdb:///path.db``), each with tables ``exposures`` and
  ``conversions`` of the logs' columns.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .analyse import Counts, DayCounts, ExperimentCounts
from .logs import ReportInputError, malformed_examples
from .sql import (
    LOCAL_COLUMNS,
    LOCAL_CONVERSION_FILES_QUERY,
    ROW_COLUMNS,
    SOURCE,
    file_keys,
    local_query,
    local_views,
    transpile,
)

DEFAULT_MEMORY_LIMIT = "416MB"  # DuckDB's own cap (it spills beyond): the process peaked ~70 MB above it (10x bench)
DEFAULT_THREADS = os.cpu_count() or 1


def _iso(when: Any) -> str:
    if isinstance(when, str):
        when = dt.datetime.fromisoformat(when)
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _day(value: Any) -> str:
    return value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else str(value)[:10]


def _experiments(cohorts: dict[str, list[DayCounts]], span: dict[str, list[Any]],
                 slots: dict[str, set[str]]) -> tuple[ExperimentCounts, ...]:
    return tuple(
        ExperimentCounts(
            name=name,
            slots=tuple(sorted(slots.get(name, ()))),
            start=_iso(span[name][0]),
            end=_iso(span[name][1]),
            days=tuple(sorted(cohorts[name], key=lambda d: (d.day, d.arm))),
        )
        for name in sorted(cohorts)
    )


def _add_cohort(cohorts: dict[str, list[DayCounts]], span: dict[str, list[Any]], name: str, arm: str, r: dict) -> None:
    cohorts[name].append(DayCounts(
        day=_day(r["day"]), arm=arm, visitors=int(r["visitors"]), converters=int(r["converters"]),
        value=float(r["value"]), multi_arm=int(r["multi_arm"]), exposures=int(r["lines"])))
    lo_hi = span.setdefault(name, [r["first_ts"], r["last_ts"]])
    lo_hi[0], lo_hi[1] = min(lo_hi[0], r["first_ts"]), max(lo_hi[1], r["last_ts"])


def counts_from_rows(rows: Iterable[Sequence[Any]]) -> Counts:
    """``Counts`` of ``SOURCE``'s rows (``ROW_COLUMNS``).  An arm seen in
    the exposures but first for no visitor gets a row of zeros."""
    cohorts: dict[str, list[DayCounts]] = defaultdict(list)
    span: dict[str, list[Any]] = {}
    slots: dict[str, set[str]] = defaultdict(set)
    arms: dict[str, set[str]] = defaultdict(set)
    exposure_lines = conversion_lines = 0
    for row in rows:
        r = dict(zip(ROW_COLUMNS, row))
        kind, name = r["row_kind"], r["experiment"]
        if kind == "cohort":
            _add_cohort(cohorts, span, name, r["arm"], r)
            exposure_lines += int(r["lines"])
        elif kind == "arm":
            arms[name].add(r["arm"])
        elif kind == "slot":
            slots[name].add(r["name"])
        elif kind == "conversions":
            conversion_lines += int(r["lines"])
    _zero_rows(cohorts, arms)
    return Counts(_experiments(cohorts, span, slots), exposure_lines, conversion_lines)


def _zero_rows(cohorts: dict[str, list[DayCounts]], arms: dict[str, set[str]]) -> None:
    """A row of zeros (on the experiment's first day) for each arm seen
    but first for no visitor, so the report lists it."""
    for name, seen in arms.items():
        if name not in cohorts:
            continue
        missing = seen - {d.arm for d in cohorts[name]}
        first_day = min(d.day for d in cohorts[name])
        cohorts[name].extend(DayCounts(first_day, arm, 0, 0, 0.0, 0, 0) for arm in missing)


def connect_duckdb(database: str = ":memory:", *, memory_limit: str = DEFAULT_MEMORY_LIMIT,
                   threads: int = DEFAULT_THREADS, temp_directory: str | None = None):
    """A DuckDB connection capped at ``memory_limit``, spilling to
    ``temp_directory``, with UTC as the time zone (naive ts are UTC)."""
    import duckdb

    con = duckdb.connect(database)
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET threads = {int(threads)}")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET TimeZone = 'UTC'")
    if temp_directory:
        con.execute(f"SET temp_directory = '{temp_directory}'")
    return con


def aggregate_files(
    exposures: Sequence[Path],
    conversions: Sequence[Path],
    *,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    threads: int = DEFAULT_THREADS,
    exact: bool = False,
) -> Counts:
    """The counts of JSON-lines log files, aggregated by DuckDB in one pass
    over each (``ReportInputError`` when DuckDB cannot read one).  On
    compact keys unless two names share a key (then again on the names;
    ``exact`` forces that, for the tests)."""
    import duckdb

    for path in (*exposures, *conversions):
        if not path.is_file():  # DuckDB's own message would name a glob, not the file
            reason = "Is a directory" if path.is_dir() else "No such file or directory"
            raise ReportInputError(f"{path}: cannot read: {reason}")
    files = [str(p) for p in exposures]
    with tempfile.TemporaryDirectory(prefix="edgeproxy-report-") as spill:
        con = connect_duckdb(memory_limit=memory_limit, threads=threads, temp_directory=spill)
        try:
            con.execute(local_views(files, [str(p) for p in conversions]))
            rows = [dict(zip(LOCAL_COLUMNS, row)) for row in con.execute(local_query(exact=exact)).fetchall()]
            if not exact and _shared_keys(rows):
                exact = True
                rows = [dict(zip(LOCAL_COLUMNS, row)) for row in con.execute(local_query(exact=True)).fetchall()]
            bad_files = dict((key, f) for f, key in con.execute(file_keys(files, exact=exact)).fetchall())
            conversion_files = con.execute(LOCAL_CONVERSION_FILES_QUERY).fetchall()
        except duckdb.OutOfMemoryException as exc:
            raise ReportInputError(f"--memory-limit {memory_limit} is too small for DuckDB's buffers "
                                   f"(try 256MB or more): {str(exc).splitlines()[0]}") from exc
        except duckdb.Error as exc:
            raise ReportInputError(f"cannot read the logs: {exc}") from exc
        finally:
            con.close()

    names: dict[Any, str] = {}
    arm_names: dict[tuple[Any, Any], str] = {}
    arms: dict[str, set[str]] = defaultdict(set)
    slots: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r["names_row"] and r["experiment_key"] is not None:
            names[r["experiment_key"]] = r["experiment"]
            arm_names[r["experiment_key"], r["first_arm"]] = r["arm"]
            arms[r["experiment"]].add(r["arm"])
            if r["slot"] is not None:
                slots[r["experiment"]].add(r["slot"])
    cohorts: dict[str, list[DayCounts]] = defaultdict(list)
    span: dict[str, list[Any]] = {}
    bad: dict[str, tuple[str, int]] = {}
    exposure_lines = 0
    for r in rows:
        if r["names_row"]:
            continue
        if r["experiment_key"] is None:
            bad[bad_files[r["bad_file"]]] = ("exposures", int(r["lines"]))
            continue
        exposure_lines += int(r["lines"])
        _add_cohort(cohorts, span, names[r["experiment_key"]], arm_names[r["experiment_key"], r["first_arm"]], r)
    _zero_rows(cohorts, arms)
    conversion_lines = 0
    for file, lines, good in conversion_files:
        conversion_lines += good
        if lines - good:
            bad[file] = ("conversions", lines - good)
    malformed = tuple(
        malformed_examples(path, *bad[str(path)]) for path in (*exposures, *conversions) if str(path) in bad
    )
    return Counts(_experiments(cohorts, span, slots), exposure_lines, conversion_lines, malformed)


def _shared_keys(rows: list[dict[str, Any]]) -> bool:
    """Whether two experiments, or two arms of one, share a compact key in
    ``rows`` (the names rows list every name seen with its key)."""
    experiments: dict[Any, set[str]] = defaultdict(set)
    arms: dict[tuple[Any, Any], set[str]] = defaultdict(set)
    for r in rows:
        if r["names_row"] and r["experiment_key"] is not None:
            experiments[r["experiment_key"]].add(r["experiment"])
            arms[r["experiment_key"], r["first_arm"]].add(r["arm"])
    return any(len(n) > 1 for n in experiments.values()) or any(len(n) > 1 for n in arms.values())


def aggregate_engine(url: str) -> Counts:
    """The counts of the ``exposures`` and ``conversions`` tables behind
    ``url``: ``postgresql://user@host/db`` or ``duckdb:///path/to.db``."""
    scheme = url.partition("://")[0].lower()
    if scheme in ("postgresql", "postgres"):
        try:
            import psycopg
        except ImportError as exc:
            raise ReportInputError("--engine postgresql:// needs psycopg (pip install 'psycopg[binary]')") from exc
        try:
            with psycopg.connect(url) as con, con.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'")
                cur.execute(transpile("postgres", pretty=False))
                rows = cur.fetchall()
        except psycopg.Error as exc:
            raise ReportInputError(f"{_redact(url)}: {exc}") from exc
        return counts_from_rows(rows)
    if scheme == "duckdb":
        import duckdb

        database = url.partition("://")[2]
        if not Path(database).is_file():
            raise ReportInputError(f"{url}: cannot read: No such file or directory")
        try:
            con = connect_duckdb(database)
            try:
                rows = con.execute(SOURCE).fetchall()
            finally:
                con.close()
        except duckdb.Error as exc:
            raise ReportInputError(f"{url}: {exc}") from exc
        return counts_from_rows(rows)
    raise ReportInputError(f"--engine {_redact(url)}: expected postgresql://… or duckdb:///path")


def _redact(url: str) -> str:
    """``url`` without a password."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
    return url
