"""The report's statistics: pure functions of aggregated counts.

Every function here takes counts (visitors, converters) and returns numbers;
none reads a log.  Each is tested against published tables and against
scipy/statsmodels (test-only dependencies) to 1e-9.

- proportions: **Wilson** score interval; **Newcombe** hybrid score interval
  for a difference (method 10); **Katz** log risk-ratio interval.
- tests: pooled two-proportion **z**; **Fisher**'s exact (two-sided, R's
  convention); chi-square goodness of fit for the **SRM** check.
- distributions: the standard normal's cdf and quantile, the chi-square
  survival function (regularised upper incomplete gamma).
"""

from __future__ import annotations

import math
from statistics import NormalDist

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile

def wilson_interval(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for the proportion ``x / n``."""
    if n <= 0:
        return (0.0, 1.0)
    p = x / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe_interval(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for ``x1/n1 - x2/n2`` (method 10)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, z)
    l2, u2 = wilson_interval(x2, n2, z)
    d = p1 - p2
    return (d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2))


def risk_ratio_interval(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float] | None:
    """Katz log interval for the risk ratio ``(x1/n1) / (x2/n2)``; ``None``
    when either count is 0 (the log ratio is unbounded)."""
    if x1 <= 0 or x2 <= 0:
        return None
    rr = (x1 / n1) / (x2 / n2)
    se = math.sqrt(max(0.0, 1 / x1 - 1 / n1 + 1 / x2 - 1 / n2))
    return (rr * math.exp(-z * se), rr * math.exp(z * se))


def z_test_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (equivalently,
    Pearson's chi-square on the 2x2 table without continuity correction)."""
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (x1 / n1 - x2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided Fisher's exact p-value of the 2x2 table ``[[x1, n1-x1], [x2,
    n2-x2]]``: the probability, given the margins, of a table no more likely
    than the observed one (the convention of R's ``fisher.test``)."""
    k = x1 + x2  # conversions: the column margin
    lo, hi = max(0, k - n2), min(k, n1)
    base = _log_choose(n1 + n2, k)

    def logp(a: int) -> float:
        return _log_choose(n1, a) + _log_choose(n2, k - a) - base

    observed = logp(x1)
    # A relative tolerance so tables as likely as the observed one, up to
    # rounding, count as "no more likely".
    cutoff = observed + 1e-7
    total = sum(math.exp(lp) for lp in (logp(a) for a in range(lo, hi + 1)) if lp <= cutoff)
    return min(1.0, total)


def min_expected_cell(x1: int, n1: int, x2: int, n2: int) -> float:
    """The smallest expected count of the 2x2 table under independence."""
    n, k = n1 + n2, x1 + x2
    return min(r * c / n for r in (n1, n2) for c in (k, n - k))


def regularized_gamma_q(a: float, x: float) -> float:
    """Q(a, x) = Γ(a, x) / Γ(a), the regularised upper incomplete gamma
    function (Numerical Recipes §6.2: series for x < a + 1, else Lentz's
    continued fraction)."""
    if a <= 0:
        raise ValueError(f"a={a!r}: must be > 0")
    if x <= 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    log_prefix = -x + a * math.log(x) - math.lgamma(a)
    eps, tiny = 1e-15, 1e-300
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * eps:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < eps:
            break
    return min(1.0, math.exp(log_prefix) * h)


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-square with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"df={df!r}: must be >= 1")
    return regularized_gamma_q(df / 2, x / 2)


def chi_square_gof(observed: list[int], shares: list[float]) -> tuple[float, int, float]:
    """Chi-square goodness of fit of ``observed`` counts against expected
    ``shares`` (normalised here).  Returns ``(statistic, df, p)``; a count
    where none is expected makes the statistic infinite (p = 0)."""
    total, weight = sum(observed), sum(shares)
    stat = 0.0
    for o, s in zip(observed, shares):
        e = total * s / weight
        if e > 0:
            stat += (o - e) ** 2 / e
        elif o > 0:
            stat = math.inf
    df = len(observed) - 1
    return stat, df, chi2_sf(stat, df) if df >= 1 else 1.0



_NORMAL = NormalDist()


def normal_cdf(z: float) -> float:
    """P(Z <= z) for the standard normal."""
    return 0.5 * math.erfc(-z / math.sqrt(2))


def normal_ppf(p: float) -> float:
    """The standard normal's ``p`` quantile (Wichura's AS 241, as the
    standard library computes it: ~1e-16 relative)."""
    return _NORMAL.inv_cdf(p)
