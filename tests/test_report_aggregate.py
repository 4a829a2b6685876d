"""The SQL aggregation against the Python oracle: the same ``Counts`` on
generated logs with everything that makes counting hard (malformed lines,
several experiments and arms, visitors switching arms, conversions before
exposure, rotated and gzipped parts, logs out of order), and the same
report from the warehouse query run on DuckDB tables of the same lines."""

from __future__ import annotations

import gzip
import io
import random
from pathlib import Path

import orjson
import pytest

from edgeproxy.cli import build_parser, main
from edgeproxy.errors import SettingsError
from edgeproxy.events import iso_ms
from edgeproxy.report import analyse, build_report, build_report_from_engine, run_report
from edgeproxy.report.aggregate import aggregate_files, connect_duckdb
from edgeproxy.report.sql import SOURCE, dialect_name, local_views, transpile

from report_oracle import oracle_counts

T0 = 1_795_766_102.0  # 2026-11-27T07:55:02Z
EXPERIMENTS = {
    "bf-hero": (("control", "promo"), ("hero",)),
    "banner": (("control", "blue", "red"), ("banner",)),
    # one experiment in three slots of a page: the middle slot is nobody's min or max
    "page": (("control", "new"), ("a-top", "b-middle", "c-bottom")),
}
MALFORMED = [
    b"not json\n",
    b"[1, 2]\n",
    b'{"ts": "2026-11-27T07:55:02.000Z", "visitor": "v3", "arm": "promo"}\n',
    b'{"ts": "yesterday", "visitor": "v4", "experiment": "bf-hero", "arm": "promo"}\n',
    b'{"ts": "2026-11-27T07:55:02.000Z", "visitor": "", "experiment": "bf-hero", "arm": "promo"}\n',
    b'{"ts": "2026-11-27T07:55:0',  # torn
]


def generate(tmp: Path, seed: int, visitors: int = 600) -> tuple[list[Path], list[Path]]:
    """Exposure logs in three parts (one gzipped, one out of order) and a
    conversion log, with malformed lines sprinkled in."""
    rnd = random.Random(seed)
    exposures: list[bytes] = []
    conversions: list[bytes] = []
    tick = 0
    for i in range(visitors):
        visitor = f"v{i:05d}"
        tick += 1 + rnd.randrange(3)
        ts = T0 + tick * 37.0 + rnd.randrange(1000) / 1000  # one ms grid, no two visitors' lines alike
        first = ts
        for name, (arms, slots) in EXPERIMENTS.items():
            if rnd.random() < 0.3:
                continue
            arm = rnd.choice(arms)
            for view in range(1 + rnd.randrange(3)):
                when = ts + view * 3600.5 + rnd.randrange(5) * 86400  # some views days later
                # a visitor switching arms (a changed split) now and then, strictly later
                shown = rnd.choice(arms) if view and rnd.random() < 0.1 else arm
                for slot in slots if name == "page" else slots[:1]:
                    exposures.append(orjson.dumps({
                        "ts": iso_ms(when), "visitor": visitor, "experiment": name, "arm": shown, "slot": slot,
                        "path": "/", "device": "mobile", "country": "GB", "source": "direct"}) + b"\n")
        if rnd.random() < 0.25:
            when = first + rnd.choice((-60.0, 0.0, 30.0, 7200.0, 3 * 86400.0))  # some before the first exposure
            value = rnd.choice((None, 10.0, 12.5, 99.75))
            conversions.append(orjson.dumps({"ts": iso_ms(when), "visitor": visitor, "path": "/checkout/complete",
                                             "value": value, "kind": "path"}) + b"\n")
            if rnd.random() < 0.3:  # a second purchase
                conversions.append(orjson.dumps({"ts": iso_ms(when + 500), "visitor": visitor, "value": 5.0}) + b"\n")
    # an arm seen only by visitors first exposed to another arm (and as a later line)
    exposures.append(orjson.dumps({"ts": iso_ms(T0 + 10 ** 6), "visitor": "v00000", "experiment": "bf-hero",
                                   "arm": "zombie", "slot": "hero"}) + b"\n")
    for bad in MALFORMED[:-1]:
        exposures.insert(rnd.randrange(len(exposures)), bad)
        conversions.insert(rnd.randrange(len(conversions)), bad.replace(b'"experiment": "bf-hero", ', b""))
    conversions.append(b'{"ts": "2026-11-27T07:55:02.000Z", "visitor": "v1", "value": "12 EUR"}\n')
    third = len(exposures) // 3
    parts = [exposures[:third], exposures[third:2 * third], exposures[2 * third:]]
    parts[1].reverse()  # another worker's log, written out of order
    old = tmp / "exposures.jsonl.2.gz"
    old.write_bytes(gzip.compress(b"".join(parts[0])))
    mid = tmp / "exposures.jsonl.1"
    mid.write_bytes(b"".join(parts[1]))
    new = tmp / "exposures.jsonl"
    new.write_bytes(b"".join(parts[2]) + MALFORMED[-1])
    conv = tmp / "conversions.jsonl"
    conv.write_bytes(b"".join(conversions))
    return [old, mid, new], [conv]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_duckdb_counts_equal_the_python_oracle_on_awkward_logs(tmp_path, seed):
    exposures, conversions = generate(tmp_path, seed)
    assert aggregate_files(exposures, conversions) == oracle_counts(exposures, conversions)


@pytest.mark.parametrize("seed", [1, 2])
def test_compact_keys_count_what_the_names_themselves_count(tmp_path, seed):
    exposures, conversions = generate(tmp_path, seed)
    assert aggregate_files(exposures, conversions) == aggregate_files(exposures, conversions, exact=True)


def test_two_arms_sharing_a_compact_key_are_counted_apart(tmp_path):
    # two arm names whose 32-bit keys collide in this DuckDB's hash(): the
    # report sees it from the names rows and counts again on the names
    import duckdb

    a, b = "arm-122166", "arm-179585"
    shared = duckdb.connect().execute(
        f"SELECT CAST(hash('{a}') >> 32 AS UINTEGER) = CAST(hash('{b}') >> 32 AS UINTEGER)").fetchone()[0]
    if not shared:
        pytest.skip("this DuckDB's hash() gives the two arm names different keys")
    lines = [
        {"ts": iso_ms(T0 + i), "visitor": f"v{i}", "experiment": "clash", "arm": (a, b)[i % 3 == 0], "slot": "s"}
        for i in range(30)
    ] + [{"ts": iso_ms(T0 + 99), "visitor": "v1", "experiment": "clash", "arm": b, "slot": "s"}]  # a switch
    exposures = tmp_path / "exposures.jsonl"
    exposures.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    counts = aggregate_files([exposures], [])
    assert counts == oracle_counts([exposures], [])
    visitors = {d.arm: d.visitors for d in counts.experiments[0].days}
    assert visitors == {a: 20, b: 10} and sum(d.multi_arm for d in counts.experiments[0].days) == 1


def test_the_oracle_sees_what_the_generator_made(tmp_path):
    exposures, conversions = generate(tmp_path, 1)
    counts = oracle_counts(exposures, conversions)
    by_name = {e.name: e for e in counts.experiments}
    assert by_name["page"].slots == ("a-top", "b-middle", "c-bottom")
    assert "zombie" in {d.arm for d in by_name["bf-hero"].days}
    assert sum(d.multi_arm for d in by_name["banner"].days) > 0
    *exposure_parts, conversion_log = counts.malformed
    assert sum(m.count for m in exposure_parts) == 6  # five sprinkled over the parts, the torn last line
    assert conversion_log.count == 5  # four of them (one is a fine conversion) and a bad value
    assert sum(d.converters for e in counts.experiments for d in e.days) > 0


def test_identical_reports_from_duckdb_and_the_oracle(tmp_path):
    exposures, conversions = generate(tmp_path, 4)
    report = build_report(exposures, conversions)
    oracle = analyse(oracle_counts(exposures, conversions), exposure_files=[str(p) for p in exposures],
                     conversion_files=[str(p) for p in conversions], with_conversions=True)
    assert report.to_dict() == oracle.to_dict() | {"engine": "duckdb"}


def load_duckdb_tables(database: Path, exposures: list[Path], conversions: list[Path]) -> None:
    """A warehouse of the logs' good lines, as a log shipper would load them."""
    con = connect_duckdb(str(database))
    con.execute(local_views([str(p) for p in exposures], [str(p) for p in conversions]))
    con.execute("CREATE TABLE exposures AS SELECT ts, visitor, experiment, arm, slot FROM exposure_lines WHERE good")
    con.execute("CREATE TABLE conversions AS SELECT ts, visitor, value FROM conversion_lines WHERE good")
    con.close()


def test_the_warehouse_query_on_duckdb_tables_gives_the_same_counts(tmp_path):
    exposures, conversions = generate(tmp_path, 5)
    load_duckdb_tables(tmp_path / "shop.duckdb", exposures, conversions)
    from edgeproxy.report.aggregate import aggregate_engine

    files = aggregate_files(exposures, conversions)
    warehouse = aggregate_engine(f"duckdb://{tmp_path / 'shop.duckdb'}")
    assert warehouse.experiments == files.experiments
    assert (warehouse.exposure_lines, warehouse.conversion_lines) == (files.exposure_lines, files.conversion_lines)
    assert warehouse.malformed == ()  # a warehouse holds typed rows


def test_report_from_engine_url_has_the_same_arms(tmp_path):
    exposures, conversions = generate(tmp_path, 6)
    load_duckdb_tables(tmp_path / "shop.duckdb", exposures, conversions)
    via_engine = build_report_from_engine(f"duckdb://{tmp_path / 'shop.duckdb'}")
    via_files = build_report(exposures, conversions)
    assert [e.arms for e in via_engine.experiments] == [e.arms for e in via_files.experiments]
    assert SOURCE.startswith("WITH visitors AS")


@pytest.mark.parametrize("dialect, marker", [
    ("clickhouse", "argMin(arm, ts)"),
    ("bigquery", "MIN_BY(arm, ts)"),
    ("snowflake", "MIN_BY(arm, ts)"),
    ("postgres", "ARRAY_AGG(arm ORDER BY ts)"),
    ("postgresql", "ARRAY_AGG(arm ORDER BY ts)"),
    ("spark", "MIN_BY(arm, ts)"),
    ("duckdb", "ARG_MIN(arm, ts)"),
])
def test_sql_prints_the_query_in_each_warehouse_s_dialect(dialect, marker):
    import sqlglot

    out = io.StringIO()
    assert run_report(build_parser().parse_args(["report", "--sql", dialect]), out=out, err=io.StringIO()) == 0
    query = out.getvalue()
    assert marker in query and "conversions" in query and query.rstrip().endswith(";")
    sqlglot.parse_one(query.rstrip().rstrip(";"), read=dialect_name(dialect))  # it parses back in its dialect


def test_the_printed_duckdb_query_runs_on_duckdb_tables(tmp_path):
    exposures, conversions = generate(tmp_path, 11, visitors=80)
    load_duckdb_tables(tmp_path / "shop.duckdb", exposures, conversions)
    con = connect_duckdb(str(tmp_path / "shop.duckdb"))
    kinds = {row[0] for row in con.execute(transpile("duckdb")).fetchall()}
    assert kinds == {"cohort", "arm", "slot", "conversions"}


def test_an_unknown_dialect_is_a_settings_error_naming_the_choices():
    with pytest.raises(SettingsError, match="clickhouse, bigquery, snowflake, postgres, spark, duckdb"):
        run_report(build_parser().parse_args(["report", "--sql", "oracle"]), out=io.StringIO(), err=io.StringIO())


def test_an_unreachable_engine_exits_2_without_its_password(capsys):
    assert main(["report", "--engine", "postgresql://shop:secret@127.0.0.1:1/warehouse"]) == 2
    err = capsys.readouterr().err
    assert "postgresql://shop:***@127.0.0.1:1/warehouse" in err and "secret" not in err


def test_the_clickhouse_tables_in_deploy_have_every_column_the_query_reads():
    import sqlglot
    from sqlglot import exp

    deploy = Path(__file__).resolve().parent.parent / "deploy"
    tables = {}
    for statement in sqlglot.parse((deploy / "clickhouse.sql").read_text(), read="clickhouse"):
        if isinstance(statement, exp.Create) and statement.kind == "TABLE":
            schema = statement.this
            tables[schema.this.name] = {c.name for c in schema.expressions if isinstance(c, exp.ColumnDef)}
    query = sqlglot.parse_one(transpile("clickhouse"), read="clickhouse")
    read = {c.name for c in query.find_all(exp.Column)}
    assert {"ts", "visitor", "experiment", "arm", "slot"} <= tables["exposures"]
    assert {"ts", "visitor", "value"} <= tables["conversions"]
    assert read - {"first_ts", "last_ts", "multi_arm", "lines", "value"} <= tables["exposures"] | tables["conversions"]


def test_the_kubernetes_pods_ship_their_logs_with_a_sidecar():
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    deploy = Path(__file__).resolve().parent.parent / "deploy"
    docs = list(yaml.safe_load_all((deploy / "kubernetes.yaml").read_text()))
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    proxy, shipper = pod["containers"]
    logs = {m["name"]: m for m in shipper["volumeMounts"]}["logs"]
    assert logs["mountPath"] == "/srv/logs" and logs["readOnly"] is True
    assert any(e["value"] == "/srv/logs/exposures.jsonl" for e in proxy["env"] if "value" in e)
    config = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["vector.yaml"])
    assert {s["table"] for s in config["sinks"].values()} == {"exposures", "conversions"}
