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

``local_query()`` computes the same counts from the files in one pass:
DuckDB's reader types each column once (ids are text: a number is read as
its JSON text) and a malformed line is grouped under its file and counted.
One scan feeds two groupings (``GROUPING SETS``): per experiment and
visitor (first arm, first and last ts, lines, arm switches), and per
experiment, arm and slot (every name seen, exactly, so an arm first for
nobody still gets its row).  The conversions of a visitor are one list
joined to their first exposure (no second pass over the visitors).

The per-visitor state is what decides speed and memory (millions of
groups under a 416MB cap: the less it spills the better), so it holds compact keys
instead of names: the visitor is two 64-bit hashes of the id
(``hash(visitor)`` and ``hash('~' || visitor)``, the same bytes hashed at
another alignment), the experiment ``hash(experiment)``, the arm 32 bits
of ``hash(arm)``: about 100 bytes a visitor instead of ~350.  Two visitors
of an experiment merge only if both of their hashes collide: by chance
(if the two behave as independent hashes) about n²/2¹²⁹ for n visitors,
6e-25 at 20 million, against 1e-5 with one 64-bit hash.  DuckDB's hash() is not a cryptographic one: an id can be
made to collide with a known id, but whoever knows a visitor's id can
already send exposures as that visitor, so it gives nobody a count they
could not already skew.  Names are few, so their keys are checked exactly:
``aggregate.py`` sees every experiment's and arm's name with its key and,
if two names share one, re-runs ``local_query(exact=True)``, the same
query grouping by the names themselves (slower and bigger, never needed in
practice; the tests prove both give the same counts).
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

# Columns of local_query()'s rows: ``names_row`` 1 for each experiment, arm
# and slot seen (``first_arm`` is then the arm's key), 0 for a cohort: one
# per experiment, first arm and day of first exposure, or (``bad_file`` set
# to the file's key) the malformed lines of one file.
LOCAL_COLUMNS = ("names_row", "experiment_key", "experiment", "arm", "slot", "first_arm", "day", "bad_file",
                 "visitors", "converters", "value", "multi_arm", "lines", "first_ts", "last_ts")

_HASHED = {"experiment": "hash(experiment)", "arm": "CAST(hash(arm) >> 32 AS UINTEGER)",
           "id": "hash({0})", "id_check": "hash('~' || {0})"}
_EXACT = {"experiment": "experiment", "arm": "arm", "id": "{0}", "id_check": "0"}

_LOCAL_QUERY = """
WITH keyed AS (
    SELECT CASE WHEN good THEN {experiment} END AS experiment_key,
           CASE WHEN good THEN experiment END AS experiment,
           CASE WHEN good THEN arm END AS arm,
           CASE WHEN good THEN slot END AS slot,
           {visitor} AS visitor,  -- malformed lines: one group per file
           {visitor_check} AS visitor_check,
           {arm} AS arm_key,
           ts
    FROM exposure_lines
),
grouped AS (
    SELECT GROUPING(visitor) AS names_row, experiment_key, experiment, arm, slot, visitor, visitor_check,
           ARG_MIN(arm_key, ts) AS first_arm,
           MIN(ts) AS first_ts,
           MAX(ts) AS last_ts,
           COUNT(*) AS lines,
           CASE WHEN MIN(arm_key) <> MAX(arm_key) THEN 1 ELSE 0 END AS multi_arm
    FROM keyed
    GROUP BY GROUPING SETS ((experiment_key, visitor, visitor_check), (experiment_key, experiment, arm, slot))
),
conversion_lists AS (
    SELECT {conversion_visitor} AS visitor, {conversion_check} AS visitor_check, MIN(ts) AS first_conversion, SUM(COALESCE(value, 0)) AS total,
           LIST(STRUCT_PACK(ts := ts, value := COALESCE(value, 0))) AS conversions
    FROM conversion_lines
    WHERE good
    GROUP BY 1, 2
),
valued AS (
    SELECT v.*,
           CASE WHEN c.visitor IS NULL THEN NULL
                WHEN c.first_conversion >= v.first_ts THEN c.total
                ELSE list_sum(list_transform(list_filter(c.conversions, lambda x: x.ts >= v.first_ts), lambda x: x.value))
           END AS value
    FROM grouped AS v
    LEFT JOIN conversion_lists AS c
        ON c.visitor = v.visitor AND c.visitor_check = v.visitor_check AND v.experiment_key IS NOT NULL
)
SELECT
    names_row, experiment_key, experiment, arm, slot, first_arm, CAST(first_ts AS DATE) AS day,
    CASE WHEN names_row = 0 AND experiment_key IS NULL THEN visitor END AS bad_file,
    COUNT(*) AS visitors, COUNT(value) AS converters, SUM(COALESCE(value, 0)) AS value,
    SUM(multi_arm) AS multi_arm, SUM(lines) AS lines, MIN(first_ts) AS first_ts, MAX(last_ts) AS last_ts
FROM valued
GROUP BY ALL
""".strip()


def local_query(*, exact: bool = False) -> str:
    """The aggregation of ``local_views``' lines, on compact keys or (``exact``) on the names."""
    keys = _EXACT if exact else _HASHED
    line_id = "CASE WHEN good THEN visitor ELSE source_file END"
    return _LOCAL_QUERY.format(
        experiment=keys["experiment"], arm=keys["arm"],
        visitor=keys["id"].format(line_id), visitor_check=keys["id_check"].format(line_id),
        conversion_visitor=keys["id"].format("visitor"), conversion_check=keys["id_check"].format("visitor"))


def file_keys(files: Sequence[str], *, exact: bool = False) -> str:
    """SQL for each file's name and its key in ``local_query``'s ``bad_file``."""
    values = ", ".join(f"({_quote(f)})" for f in files) or "(NULL)"
    key = (_EXACT if exact else _HASHED)["id"].format("f")
    return f"SELECT f, {key} FROM (VALUES {values}) AS t(f)"


LOCAL_CONVERSION_FILES_QUERY = "SELECT source_file, COUNT(*), COUNT(*) FILTER (WHERE good) FROM conversion_lines GROUP BY 1"


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
    JSON-lines files (plain or ``.gz``) for ``local_query()``: every line, its
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
