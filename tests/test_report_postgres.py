"""``edgeproxy report --engine postgresql://…`` on a real PostgreSQL server
the test starts (Debian's ``postgresql`` package; ``.ci/run`` installs it):
loaded with the same lines as the DuckDB path, it gives the identical report.

The server runs from a temporary folder on 127.0.0.1 and a spare port, as
the ``postgres`` user when the tests run as root (PostgreSQL refuses root),
and is stopped at the end.  Skipped with the reason when the binaries or
psycopg are absent.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg is a test-only dependency (pip install -e '.[test]')")

from report_oracle import oracle_counts  # noqa: E402
from test_report_aggregate import generate  # noqa: E402

from edgeproxy.report import build_report, build_report_from_engine  # noqa: E402
from edgeproxy.report.aggregate import aggregate_engine, aggregate_files, connect_duckdb  # noqa: E402
from edgeproxy.report.sql import local_views, transpile  # noqa: E402

START_TIMEOUT = 30.0


def pg_bindir() -> Path | None:
    """The folder of ``initdb`` and ``postgres``: on PATH, else Debian's
    ``/usr/lib/postgresql/N/bin`` (newest N)."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def spare_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL will not run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="edgeproxy-pg-"))
    data = root / "data"
    if as_user:
        shutil.chown(root, "postgres")
    port = spare_port()
    server = None
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "edgeproxy",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        server = subprocess.Popen(
            [*as_user, str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
             "-k", str(root), "-c", "fsync=off", "-c", "timezone=UTC"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"postgresql://edgeproxy@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                psycopg.connect(url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.skip(f"PostgreSQL did not start on 127.0.0.1:{port}")
                time.sleep(0.2)
        yield url
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"initdb failed: {exc.stderr.decode(errors='replace')[-300:]}")
    finally:
        if server is not None:
            server.terminate()  # "smart" shutdown; the test's connections are closed
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(root, ignore_errors=True)


def load(url: str, exposures: list[Path], conversions: list[Path]) -> None:
    """The logs' good lines into tables ``exposures`` and ``conversions``,
    as a log shipper would load them."""
    con = connect_duckdb()
    con.execute(local_views([str(p) for p in exposures], [str(p) for p in conversions]))
    exposure_rows = con.execute("SELECT ts, visitor, experiment, arm, slot FROM exposure_lines WHERE good").fetchall()
    conversion_rows = con.execute("SELECT ts, visitor, value FROM conversion_lines WHERE good").fetchall()
    con.close()
    with psycopg.connect(url) as pg, pg.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS exposures, conversions")
        cur.execute("CREATE TABLE exposures (ts TIMESTAMP, visitor TEXT, experiment TEXT, arm TEXT, slot TEXT)")
        cur.execute("CREATE TABLE conversions (ts TIMESTAMP, visitor TEXT, value DOUBLE PRECISION)")
        with cur.copy("COPY exposures FROM STDIN") as copy:
            for row in exposure_rows:
                copy.write_row(row)
        with cur.copy("COPY conversions FROM STDIN") as copy:
            for row in conversion_rows:
                copy.write_row(row)


@pytest.mark.parametrize("seed", [7, 8])
def test_postgresql_gives_the_counts_of_duckdb_and_the_oracle(postgres_url, tmp_path, seed):
    exposures, conversions = generate(tmp_path, seed)
    load(postgres_url, exposures, conversions)
    files = aggregate_files(exposures, conversions)
    warehouse = aggregate_engine(postgres_url)
    assert warehouse.experiments == files.experiments == oracle_counts(exposures, conversions).experiments
    assert (warehouse.exposure_lines, warehouse.conversion_lines) == (files.exposure_lines, files.conversion_lines)


def test_the_report_from_postgresql_is_identical_to_the_one_from_the_files(postgres_url, tmp_path):
    exposures, conversions = generate(tmp_path, 9)
    load(postgres_url, exposures, conversions)
    from_files = build_report(exposures, conversions).to_dict()
    from_pg = build_report_from_engine(postgres_url).to_dict()
    assert from_pg["engine"] == "postgresql"
    for key in ("exposure_lines", "conversion_lines", "experiments", "methods"):
        assert from_pg[key] == from_files[key], key


def test_the_printed_postgres_query_runs_as_printed(postgres_url, tmp_path):
    exposures, conversions = generate(tmp_path, 10, visitors=50)
    load(postgres_url, exposures, conversions)
    with psycopg.connect(postgres_url) as pg, pg.cursor() as cur:
        cur.execute(transpile("postgres"))
        kinds = {row[0] for row in cur.fetchall()}
    assert kinds == {"cohort", "arm", "slot", "conversions"}
