"""The aggregation as SQL: one source query for the shop's warehouse, and
its twin tuned for DuckDB reading the JSON-lines files.

``SOURCE`` is written once, in DuckDB's dialect, over two tables with the
logs' columns (CONTRACT §7)::

    exposures   (ts TIMESTAMP -- UTC, visitor TEXT, experiment TEXT, arm TEXT, slot TEXT, ...)
    conversions (ts TIMESTAMP -- UTC, visitor TEXT, value DOUBLE, ...)

and ``transpile(dialect)`` turns it into ClickHouse, BigQuery, Snowflake,
PostgreSQL, Spark SQL or DuckDB with sqlglot.  Per experiment and visitor
it finds the first exposure (its ts and arm: a visitor belongs to the arm of
their first exposure; on an exact tie of ts the engine picks one of the
arms, and the visitor is counted in the multi-arm warning either way), meets
the visitors with their conversions at or after it, and counts per
experiment, first arm and UTC day of the first exposure (a cohort).  It adds
the arms and slots seen in any line and the number of conversions.  The
rows (``ROW_COLUMNS``) are few; the statistics are computed from them in
Python (``analyse.py``), so every engine gives the same report.

``LOCAL_QUERY`` computes the same rows from the files in one pass: DuckDB's
reader types each column once (ids are text: a number is read as its JSON
text), a malformed line is grouped under its file name and counted, the
conversions of a visitor are one list joined to their first exposure (no
second pass over two million visitors), and the arms and slots seen come
from per-visitor minima, maxima and 64-bit signatures: when a signature
shows a name the minima missed, ``aggregate.py`` asks for the exact list in
a second pass (an arm seen only by visitors first exposed to another, or an
experiment in three or more slots of a page).  A missed name whose
signature bit another name of the experiment shares (about one chance in
64 per name) goes unseen: that costs a slot in the list or a zero-visitor
row, never a count.
"""

from __future__ import annotations

from collections.abc import Sequence

DIALECTS = ("clickhouse", "bigquery", "snowflake", "postgres", "spark", "duckdb")
ALIASES = {"postgresql": "postgres", "sparksql": "spark", "spark-sql": "spark", "ch": "clickhouse"}

ROW_COLUMNS = ("row_kind", "experiment", "arm", "day", "name", "visitors", "converters", "value",
               "multi_arm", "lines", "first_ts", "last_ts")

SOURCE = """
WITH visitors AS (
    SELECT
        experiment, visitor,
        MIN(ts) AS first_ts,
        MAX(ts) AS last_ts,
        ARG_MIN(arm, ts) AS arm,
        CASE WHEN MIN(arm) <> MAX(arm) THEN 1 ELSE 0 END AS multi_arm,
        COUNT(*) AS lines
    FROM exposures
    WHERE experiment IS NOT NULL AND visitor IS NOT NULL AND arm IS NOT NULL AND ts IS NOT NULL
    GROUP BY experiment, visitor
),
converted AS (
    SELECT v.experiment, v.visitor, SUM(COALESCE(c.value, 0)) AS value
    FROM visitors AS v
    JOIN conversions AS c ON c.visitor = v.visitor AND c.ts >= v.first_ts
    GROUP BY v.experiment, v.visitor
)
SELECT
    'cohort' AS row_kind, v.experiment, v.arm, CAST(v.first_ts AS DATE) AS day, CAST(NULL AS TEXT) AS name,
    COUNT(*) AS visitors, COUNT(c.visitor) AS converters, SUM(COALESCE(c.value, 0)) AS value,
    SUM(v.multi_arm) AS multi_arm, SUM(v.lines) AS lines, MIN(v.first_ts) AS first_ts, MAX(v.last_ts) AS last_ts
FROM visitors AS v
LEFT JOIN converted AS c ON c.experiment = v.experiment AND c.visitor = v.visitor
GROUP BY v.experiment, v.arm, CAST(v.first_ts AS DATE)
UNION ALL
SELECT DISTINCT 'arm', experiment, arm, CAST(NULL AS DATE), CAST(NULL AS TEXT), 0, 0, 0, 0, 0,
    CAST(NULL AS TIMESTAMP), CAST(NULL AS TIMESTAMP)
FROM exposures
WHERE experiment IS NOT NULL AND visitor IS NOT NULL AND arm IS NOT NULL AND ts IS NOT NULL
UNION ALL
SELECT DISTINCT 'slot', experiment, CAST(NULL AS TEXT), CAST(NULL AS DATE), slot, 0, 0, 0, 0, 0,
    CAST(NULL AS TIMESTAMP), CAST(NULL AS TIMESTAMP)
FROM exposures
WHERE experiment IS NOT NULL AND visitor IS NOT NULL AND arm IS NOT NULL AND ts IS NOT NULL AND slot IS NOT NULL
UNION ALL
SELECT 'conversions', CAST(NULL AS TEXT), CAST(NULL AS TEXT), CAST(NULL AS DATE), CAST(NULL AS TEXT), 0, 0, 0, 0, COUNT(*),
    CAST(NULL AS TIMESTAMP), CAST(NULL AS TIMESTAMP)
FROM conversions
WHERE visitor IS NOT NULL AND ts IS NOT NULL
""".strip()

# Columns of LOCAL_QUERY's rows: one per experiment, first arm, cohort day
# and the visitors' lowest and highest slot names (malformed lines: one per
# file, ``bad_file`` set), with the arm and slot signatures.
LOCAL_COLUMNS = ("experiment", "arm", "day", "lo_slot", "hi_slot", "bad_file", "visitors", "converters", "value",
                 "multi_arm", "lines", "first_ts", "last_ts", "arm_bits", "slot_bits")

LOCAL_QUERY = """
WITH visitors AS (
    SELECT
        CASE WHEN good THEN experiment END AS experiment,
        CASE WHEN good THEN visitor ELSE source_file END AS visitor,  -- malformed lines: one group per file
        ARG_MIN(arm, ts) AS arm,
        MIN(ts) AS first_ts,
        MAX(ts) AS last_ts,
        COUNT(*) AS lines,
        CASE WHEN MIN(hash(arm)) <> MAX(hash(arm)) THEN 1 ELSE 0 END AS multi_arm,
        MIN(slot) AS lo_slot,
        MAX(slot) AS hi_slot,
        BIT_OR(1::UBIGINT << CAST(hash(arm) % 64 AS INTEGER)) AS arm_bits,
        BIT_OR(CASE WHEN slot IS NOT NULL THEN 1::UBIGINT << CAST(hash(slot) % 64 AS INTEGER) ELSE 0::UBIGINT END) AS slot_bits
    FROM exposure_lines
    GROUP BY 1, 2
),
conversion_lists AS (
    SELECT visitor, MIN(ts) AS first_conversion, SUM(COALESCE(value, 0)) AS total,
           LIST(STRUCT_PACK(ts := ts, value := COALESCE(value, 0))) AS conversions
    FROM conversion_lines
    WHERE good
    GROUP BY visitor
),
valued AS (
    SELECT v.*,
           CASE WHEN c.visitor IS NULL THEN NULL
                WHEN c.first_conversion >= v.first_ts THEN c.total
                ELSE list_sum(list_transform(list_filter(c.conversions, lambda x: x.ts >= v.first_ts), lambda x: x.value))
           END AS value
    FROM visitors AS v
    LEFT JOIN conversion_lists AS c ON c.visitor = v.visitor AND v.experiment IS NOT NULL
)
SELECT
    experiment, arm, CAST(first_ts AS DATE) AS day, lo_slot, hi_slot,
    CASE WHEN experiment IS NULL THEN visitor END AS bad_file,
    COUNT(*) AS visitors, COUNT(value) AS converters, SUM(COALESCE(value, 0)) AS value,
    SUM(multi_arm) AS multi_arm, SUM(lines) AS lines, MIN(first_ts) AS first_ts, MAX(last_ts) AS last_ts,
    BIT_OR(arm_bits) AS arm_bits, BIT_OR(slot_bits) AS slot_bits
FROM valued
GROUP BY ALL
""".strip()

# The exact arms and slots, when the signatures show LOCAL_QUERY missed one.
LOCAL_NAMES_QUERY = "SELECT DISTINCT experiment, arm, slot FROM exposure_lines WHERE good"
LOCAL_CONVERSION_FILES_QUERY = "SELECT source_file, COUNT(*), COUNT(*) FILTER (WHERE good) FROM conversion_lines GROUP BY 1"


def signature(names: Sequence[str]) -> str:
    """SQL for the 64-bit signature of ``names``, as LOCAL_QUERY computes it."""
    if not names:
        return "SELECT 0::UBIGINT"
    values = ", ".join(f"({_quote(n)})" for n in names)
    return f"SELECT BIT_OR(1::UBIGINT << CAST(hash(n) % 64 AS INTEGER)) FROM (VALUES {values}) AS t(n)"


# A line passes when it is a JSON object whose visitor (and for exposures
# experiment and arm) are present and not empty and whose ts is ISO 8601
# (naive: UTC) or Unix seconds; a conversion's value is a number or
# absent/null.  Ids are text: a number, say, is read as its JSON text (the
# reader types each column once, which is what makes it fast).
_TS = """CASE
            WHEN ts LIKE '%Z' THEN TRY_CAST(ts AS TIMESTAMP)
            ELSE COALESCE(
                CAST(TRY_CAST(ts AS TIMESTAMPTZ) AS TIMESTAMP),
                CASE WHEN abs(TRY_CAST(ts AS DOUBLE)) < 1e11 THEN CAST(to_timestamp(TRY_CAST(ts AS DOUBLE)) AS TIMESTAMP) END)
        END"""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _files(paths: Sequence[str]) -> str:
    return "[" + ", ".join(_quote(p) for p in paths) + "]"


def local_views(exposure_files: Sequence[str], conversion_files: Sequence[str]) -> str:
    """``CREATE TEMP VIEW exposure_lines/conversion_lines`` over the
    JSON-lines files (plain or ``.gz``) for ``LOCAL_QUERY``: every line, its
    file and whether it is ``good``; an empty list is an empty view."""
    if exposure_files:
        exposures = f"""
        SELECT *, ts IS NOT NULL AND visitor <> '' AND experiment <> '' AND arm <> '' AS good
        FROM (
            SELECT filename AS source_file, {_TS} AS ts, visitor, experiment, arm, slot
            FROM read_ndjson({_files(exposure_files)},
                             columns = {{ts: 'VARCHAR', visitor: 'VARCHAR', experiment: 'VARCHAR',
                                        arm: 'VARCHAR', slot: 'VARCHAR'}},
                             ignore_errors = true, filename = true)
        )"""
    else:
        exposures = """
        SELECT CAST(NULL AS TEXT) AS source_file, CAST(NULL AS TIMESTAMP) AS ts, CAST(NULL AS TEXT) AS visitor,
               CAST(NULL AS TEXT) AS experiment, CAST(NULL AS TEXT) AS arm, CAST(NULL AS TEXT) AS slot,
               false AS good
        WHERE false"""
    if conversion_files:
        conversions = f"""
        SELECT source_file, ts, visitor, CASE WHEN json_type(value) <> 'NULL' THEN CAST(value AS DOUBLE) END AS value,
               ts IS NOT NULL AND visitor <> ''
               AND (value IS NULL OR json_type(value) IN ('BIGINT', 'UBIGINT', 'DOUBLE', 'NULL')) AS good
        FROM (
            SELECT filename AS source_file, {_TS} AS ts, visitor, value
            FROM read_ndjson({_files(conversion_files)}, columns = {{ts: 'VARCHAR', visitor: 'VARCHAR', value: 'JSON'}},
                             ignore_errors = true, filename = true)
        )"""
    else:
        conversions = """
        SELECT CAST(NULL AS TEXT) AS source_file, CAST(NULL AS TIMESTAMP) AS ts, CAST(NULL AS TEXT) AS visitor,
               CAST(NULL AS DOUBLE) AS value, false AS good
        WHERE false"""
    return (f"CREATE OR REPLACE TEMP VIEW exposure_lines AS {exposures};\n"
            f"CREATE OR REPLACE TEMP VIEW conversion_lines AS {conversions};")


def dialect_name(name: str) -> str:
    """The sqlglot dialect for a ``--sql`` name (``ValueError`` naming the choices)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in DIALECTS:
        raise ValueError(f"{name!r} is not one of {', '.join(DIALECTS)}")
    return key


def transpile(dialect: str, *, pretty: bool = True) -> str:
    """``SOURCE`` in ``dialect`` (see ``DIALECTS``)."""
    import sqlglot
    from sqlglot import exp

    target = dialect_name(dialect)
    tree = sqlglot.parse_one(SOURCE, read="duckdb")
    if target == "postgres":
        # PostgreSQL has no ARG_MIN: the first element of the values ordered by ts.
        def arg_min(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.ArgMin):
                return sqlglot.parse_one(
                    f"(ARRAY_AGG({node.this.sql('postgres')} ORDER BY {node.expression.sql('postgres')}))[1]",
                    read="postgres")
            return node

        tree = tree.transform(arg_min)
    return tree.sql(dialect=target, pretty=pretty)
