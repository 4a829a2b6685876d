"""``edgeproxy report`` on a big shop's logs, against reading them in Python.

    python -m load_tests.bench_report [--visitors 2000000] [--repeat 2] [--scale 10] [--dir DIR]

Generates ``--visitors`` visitors' logs (``report_data.py``: ~2.3 exposure
lines per visitor, ~3 % converting; 2,000,000 gives ~4.6 M exposure lines)
and times, each in its own process, best of ``--repeat``, with its peak RSS:

* ``read+decode``: reading every exposure line and ``orjson``-decoding it in
  Python, nothing else: the floor of any Python aggregation (the issue's
  baseline);
* ``report``: ``python -m edgeproxy report EXPOSURES CONVERSIONS --json``,
  the whole command (DuckDB aggregation, statistics, output).

Prints the ratio report / baseline (the issue's target: <= 0.6) and the
report's peak RSS (target: <= 512 MiB), and checks the counts against what
the generator wrote.  ``--scale N`` also times the report on N x the
visitors (N x the data) for the scaling target (<= 1.2 N x the time, the
same memory).  Figures are ratios within one run: the machine is
shared, absolute seconds are not comparable across runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from .report_data import write_logs

BASELINE = """
import sys, orjson
n = 0
with open(sys.argv[1], "rb") as fh:
    for line in fh:
        orjson.loads(line)
        n += 1
print(n)
"""


def child_peak_rss(argv: list[str]) -> tuple[float, float, bytes, float]:
    """Wall seconds, the child's own peak RSS (MiB, from wait4), its stdout
    and its CPU seconds (user + system, all threads: the figure the other
    sessions on a shared machine do not move)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()  # type: ignore[union-attr]
    err = proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv[:4])} failed: {err.decode(errors='replace')[-2000:]}")
    return wall, usage.ru_maxrss / 1024, out, usage.ru_utime + usage.ru_stime


def best(argv: list[str], repeat: int) -> tuple[float, float, bytes, float]:
    return best_of([child_peak_rss(argv) for _ in range(repeat)])


def best_of(runs: list[tuple[float, float, bytes, float]]) -> tuple[float, float, bytes, float]:
    """The fastest wall and CPU time, the highest peak RSS, the last output."""
    return min(r[0] for r in runs), max(r[1] for r in runs), runs[-1][2], min(r[3] for r in runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m load_tests.bench_report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--visitors", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each, the fastest counts (default 2)")
    ap.add_argument("--scale", type=int, default=0, metavar="N", help="also time the report on N x the exposure lines")
    ap.add_argument("--dir", type=Path, help="keep the generated logs here (default: a temp dir, removed)")
    args = ap.parse_args(argv)

    work = args.dir or Path(tempfile.mkdtemp(prefix="edgeproxy-bench-report-"))
    try:
        exp, conv = work / "exposures.jsonl", work / "conversions.jsonl"
        if not (exp.exists() and conv.exists()):
            print(f"generating {args.visitors:,} visitors' logs in {work} ...", flush=True)
            write_logs(work, visitors=args.visitors)
        lines = sum(1 for _ in open(exp, "rb"))
        size = exp.stat().st_size / 2**20
        print(f"exposures: {lines:,} lines, {size:,.0f} MiB; conversions: {conv.stat().st_size / 2**20:,.1f} MiB")
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)

        # alternately, so both meet the same neighbours on a shared machine
        report_argv = [sys.executable, "-m", "edgeproxy", "report", str(exp), str(conv), "--json"]
        base_runs, rep_runs = [], []
        for _ in range(args.repeat):
            base_runs.append(child_peak_rss([sys.executable, "-c", BASELINE, str(exp)]))
            rep_runs.append(child_peak_rss(report_argv))
        base_wall, base_rss, out, base_cpu = best_of(base_runs)
        assert int(out) == lines
        rep_wall, rep_rss, out, rep_cpu = best_of(rep_runs)
        pairs = ", ".join(f"{r[0] / b[0]:.2f}x" for b, r in zip(base_runs, rep_runs))
        report = orjson.loads(out)
        visitors = sum(e["visitors"] for e in report["experiments"] if e["name"] == "bf-hero")
        exact = report["exposure_lines"] == lines and visitors == args.visitors and not report["malformed"]

        print()
        print(f"{'':16}{'wall s':>9}{'CPU s':>9}{'peak RSS MiB':>15}")
        print(f"{'read+decode':16}{base_wall:9.2f}{base_cpu:9.2f}{base_rss:15.0f}")
        print(f"{'edgeproxy report':16}{rep_wall:9.2f}{rep_cpu:9.2f}{rep_rss:15.0f}")
        print()
        print(f"report / read+decode wall time: {rep_wall / base_wall:.2f}x (target <= 0.6x); "
              f"CPU time {rep_cpu / base_cpu:.2f}x (on {os.cpu_count()} CPUs); load average now {os.getloadavg()[0]:.1f}")
        print(f"each pair, report / read+decode run just before it: {pairs}")
        print(f"report peak RSS: {rep_rss:.0f} MiB (target <= 512 MiB)")
        print(f"counts exact: {'yes' if exact else 'NO'} ({report['exposure_lines']:,} exposure lines, "
              f"{visitors:,} visitors in bf-hero)")

        if args.scale > 1:
            bigger = work / f"x{args.scale}"
            big_exp, big_conv = bigger / "exposures.jsonl", bigger / "conversions.jsonl"
            if not (big_exp.exists() and big_conv.exists()):
                print(f"generating {args.scale * args.visitors:,} visitors' logs in {bigger} ...", flush=True)
                write_logs(bigger, visitors=args.scale * args.visitors, seed=2)
            big_wall, big_rss, out, big_cpu = best([sys.executable, "-m", "edgeproxy", "report", str(big_exp), str(big_conv),
                                           "--json"], 1)
            big_lines = orjson.loads(out)["exposure_lines"]
            print(f"{args.scale}x the visitors ({big_lines:,} exposure lines): {big_wall:.2f} s = "
                  f"{big_wall / rep_wall:.1f}x the time (target <= {1.2 * args.scale:.1f}x; CPU {big_cpu / rep_cpu:.1f}x), "
                  f"peak RSS {big_rss:.0f} MiB, load average now {os.getloadavg()[0]:.1f}")
        return 0 if exact else 1
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
