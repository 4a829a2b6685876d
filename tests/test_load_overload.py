"""load_tests.overload: the overload soak, in seconds instead of minutes.

The real command (origin and ``edgeproxy serve`` as child processes) with
every phase cut to a second or two: it runs, sheds, writes its JSON, and
finds no proxy fault.  Latency and flatness verdicts are for real runs, not
for a few seconds on a busy test machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from load_tests.overload import SHED_REASONS, Phase, growth, histogram_quantile

ROOT = Path(__file__).resolve().parents[1]


def test_a_short_overload_run_sheds_with_503s_and_finds_no_proxy_fault(tmp_path):
    out = tmp_path / "overload.json"
    proc = subprocess.run(
        [sys.executable, "-m", "load_tests.overload", "--minutes", "0.04", "--capacity-seconds", "1", "--baseline-seconds", "1",
         "--sample-seconds", "0.5", "--max-in-flight", "4", "--out", str(out), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1: a verdict failed, which a few seconds cannot judge
    result = json.loads(out.read_text())
    over = result["overload"]
    assert result["capacity"]["rps"] > 0
    assert over["rate"] > result["baseline"]["rate"]  # 2x against 0.7x
    assert over["statuses"].get("200", 0) > 0 and over["statuses"].get("503", 0) > 0
    # Every 503 is the proxy's shedding: the in-flight cap, or queue delay on a busy machine.
    shed = sum(result["refused_by_reason"].get(reason, 0) for reason in SHED_REASONS)
    assert shed == over["statuses"]["503"]
    faults = result["proxy_faults"]
    assert faults["total"] == 0, faults
    assert result["samples"] and all(s["rss_kib"] > 0 and s["fds"] > 0 for s in result["samples"])
    assert "2x load (admitted)" in proc.stdout


def test_growth_compares_the_second_quarter_with_the_last():
    assert growth([50, 10, 11, 10, 12, 11, 12, 13]) == (11, 13)  # the warm-up quarter is left out
    assert growth([5]) == (5, 5)


def test_histogram_quantile_reads_the_increase_of_the_buckets():
    name = "edgeproxy_request_duration_seconds"
    before = {(name + "_bucket", (("le", "0.01"),)): 5.0, (name + "_bucket", (("le", "0.1"),)): 5.0, (name + "_bucket", (("le", "+Inf"),)): 5.0}
    after = {(name + "_bucket", (("le", "0.01"),)): 95.0, (name + "_bucket", (("le", "0.1"),)): 104.0, (name + "_bucket", (("le", "+Inf"),)): 105.0}
    assert histogram_quantile(before, after, name, 0.5) == 10.0
    assert histogram_quantile(before, after, name, 0.99) == 100.0


def test_a_phase_summary_keeps_admitted_and_shed_apart():
    phase = Phase("x", rate=10, connections=2, duration=2.0, admitted=[0.01, 0.02], shed=[0.001])
    phase.statuses.update({200: 2, 503: 1})
    phase.in_window.update({200: 2, 503: 1})  # a rate counts only what was answered inside the phase
    summary = phase.summary()
    assert summary["shed_share"] == 1 / 3 and summary["admitted_rps"] == 1.0
    assert summary["admitted_ms"]["p50"] == 10.0 and summary["shed_ms"]["p50"] == 1.0
