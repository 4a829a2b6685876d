"""The report's benchmark and simulation scripts run and print their figures
(on tiny inputs: their point is the figures of a full run, in
load_tests/README.md, not their speed here)."""

from __future__ import annotations

import pytest

from load_tests import bench_report, sim_report
from load_tests.report_data import write_logs


def test_generated_logs_have_the_promised_shape(tmp_path):
    exp, conv, exposures, conversions = write_logs(tmp_path, visitors=2000, seed=3)
    assert exposures == sum(1 for _ in open(exp, "rb")) and 2000 * 2 < exposures < 2000 * 3
    assert conversions == sum(1 for _ in open(conv, "rb")) and 20 < conversions < 120


def test_the_benchmark_prints_ratios_and_checks_the_counts(tmp_path, capsys):
    assert bench_report.main(["--visitors", "3000", "--repeat", "1", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "report / read+decode wall time:" in out and "counts exact: yes (" in out and "peak RSS" in out


def test_the_simulation_prints_aa_ab_and_end_to_end_figures(capsys):
    pytest.importorskip("numpy", reason="the simulations need numpy (a test-only dependency, with scipy)")
    assert sim_report.main(["--experiments", "40", "--days", "5", "--visitors", "3000"]) == 0
    out = capsys.readouterr().out
    for line in ("read once at the end", "read every day", "sequential p < 0.05", "holds the true", "end to end:"):
        assert line in out
