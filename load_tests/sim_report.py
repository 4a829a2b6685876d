"""Proof by simulation that the report's tests mean what they say.

    python -m load_tests.sim_report [--experiments 2000] [--days 28] [--seed 1]

Prints, each with its 95 % interval over the simulated experiments:

1. **A/A** (no difference; 3 % conversion, 1,000 visitors per arm a day,
   ``--days`` days): the share of experiments flagged at p < 0.05 by
   - the fixed-horizon test read once, at the end (should be 5 % +- 1);
   - the fixed-horizon test read every day, stopping at the first p < 0.05
     (far more: the peeking problem);
   - the sequential (always-valid) test read every day (should stay <= 5 %).
2. **A/B** with a known uplift (3.0 % -> 3.3 %, +10 % relative, the plan's
   53,182 visitors per arm): how often each interval holds the true
   difference (coverage; >= 95 %) and how often each test finds it (power).
3. **End to end**: generated logs with that uplift through
   ``build_report`` (DuckDB and all): the true uplift inside the interval.

The experiments' counts are drawn day by day (binomial, numpy); the tests
are the report's own functions (``edgeproxy.report.stats``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from edgeproxy.report.stats import msprt_difference, newcombe_interval, wilson_interval, z_test_p

ALPHA = 0.05


def share(hits: int, n: int) -> str:
    lo, hi = wilson_interval(hits, n)
    return f"{100 * hits / n:5.1f} %  [{100 * lo:.1f}, {100 * hi:.1f}]"


def cumulative_days(rng, experiments: int, days: int, per_day: int, p1: float, p2: float):
    """Per experiment, the cumulative (x1, n1, x2, n2) at the end of each day."""
    import numpy as np

    n = per_day * np.arange(1, days + 1)
    x1 = rng.binomial(per_day, p1, size=(experiments, days)).cumsum(axis=1)
    x2 = rng.binomial(per_day, p2, size=(experiments, days)).cumsum(axis=1)
    return [[(int(a), int(m), int(b), int(m)) for a, b, m in zip(x1[e], x2[e], n)] for e in range(experiments)]


def simulate_aa(rng, experiments: int, days: int) -> None:
    runs = cumulative_days(rng, experiments, days, 1000, 0.03, 0.03)
    once = daily = seq_daily = 0
    for looks in runs:
        once += z_test_p(*looks[-1]) < ALPHA
        daily += any(z_test_p(*look) < ALPHA for look in looks)
        seq_daily += any((r := msprt_difference(*look)) is not None and r[0] < ALPHA for look in looks)
    print(f"A/A: {experiments:,} experiments, no true difference, 3 % conversion, 1,000 visitors/arm/day, {days} days")
    print(f"  fixed-horizon p < 0.05, read once at the end   {share(once, experiments)}   (expected 5 % +- 1)")
    print(f"  fixed-horizon p < 0.05, read every day         {share(daily, experiments)}   (the peeking problem)")
    print(f"  sequential p < 0.05, read every day            {share(seq_daily, experiments)}   (expected <= 5 %)")


def simulate_ab(rng, experiments: int) -> None:
    import numpy as np

    p1, p2, n = 0.033, 0.030, 53_182
    truth = p1 - p2
    x1 = rng.binomial(n, p1, size=experiments)
    x2 = rng.binomial(n, p2, size=experiments)
    covered = seq_covered = found = seq_found = 0
    for a, b in zip(x1.tolist(), x2.tolist()):
        lo, hi = newcombe_interval(a, n, b, n)
        covered += lo <= truth <= hi
        found += z_test_p(a, n, b, n) < ALPHA and a > b
        seq_p, (slo, shi) = msprt_difference(a, n, b, n)
        seq_covered += slo <= truth <= shi
        seq_found += seq_p < ALPHA and a > b
    del np
    print(f"A/B: {experiments:,} experiments, 3.0 % -> 3.3 % (+10 % relative), {n:,} visitors per arm (the plan's)")
    print(f"  95 % interval holds the true +0.30 pp          {share(covered, experiments)}   (expected 95 %)")
    print(f"  sequential 95 % interval holds it              {share(seq_covered, experiments)}   (expected >= 95 %)")
    print(f"  fixed-horizon test finds the uplift (power)    {share(found, experiments)}   (planned 80 %)")
    print(f"  sequential test finds it at the same size      {share(seq_found, experiments)}   (the price of peeking)")


def end_to_end(visitors: int) -> None:
    from edgeproxy.report import build_report

    from .report_data import EARLY, RATES, write_logs

    with tempfile.TemporaryDirectory(prefix="edgeproxy-sim-") as tmp:
        exp, conv, lines, _ = write_logs(Path(tmp), visitors=visitors, seed=7)
        started = time.perf_counter()
        report = build_report([exp], [conv])
        took = time.perf_counter() - started
    hero = next(e for e in report.experiments if e.name == "bf-hero")
    promo = next(a for a in hero.arms if a.arm == "promo")
    truth = (1 - EARLY) * (RATES["promo"] - RATES["control"])  # conversions before exposure do not count
    lo, hi = promo.abs_uplift_ci
    slo, shi = promo.seq_abs_uplift_ci
    print(f"end to end: {visitors:,} visitors' logs ({lines:,} exposure lines) through build_report in {took:.1f} s")
    print(f"  true uplift {100 * truth:+.2f} pp; measured {100 * promo.abs_uplift:+.2f} pp, "
          f"95 % interval [{100 * lo:+.2f}, {100 * hi:+.2f}] -> {'inside' if lo <= truth <= hi else 'OUTSIDE'}; "
          f"sequential [{100 * slo:+.2f}, {100 * shi:+.2f}] -> {'inside' if slo <= truth <= shi else 'OUTSIDE'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m load_tests.sim_report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiments", type=int, default=2000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--visitors", type=int, default=400_000, help="visitors in the end-to-end logs (default 400,000)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        import numpy as np
    except ImportError:
        print("the simulations need numpy (pip install -e '.[test]' brings it with scipy)", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    simulate_aa(rng, args.experiments, args.days)
    print()
    simulate_ab(rng, args.experiments)
    print()
    end_to_end(args.visitors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
