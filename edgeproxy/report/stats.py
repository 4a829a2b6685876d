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


# ---------------------------------------------------------------------------
# Always-valid inference: the mixture sequential probability ratio test
# ---------------------------------------------------------------------------
SEQUENTIAL_TUNING = 5000  # visitors (both arms) at which the confidence sequence is tightest (GrowthBook's default)


def sequential_rho(alpha: float = 0.05, tuning: float = SEQUENTIAL_TUNING) -> float:
    """The mixture's spread per visitor, tuned to be tightest at ``tuning``
    visitors (Howard et al. 2021, eq. 3.14, as GrowthBook computes it)."""
    log_term = -2 * math.log(alpha)
    return math.sqrt((log_term + math.log(log_term + 1)) / tuning)


def msprt_difference(x1: int, n1: int, x2: int, n2: int, alpha: float = 0.05,
                     tuning: float = SEQUENTIAL_TUNING) -> tuple[float, tuple[float, float]] | None:
    """Always-valid two-sided p-value and (1 - alpha) confidence sequence
    for ``x1/n1 - x2/n2``, from the normal-mixture SPRT (Johari et al. 2017,
    Optimizely's Stats Engine; Howard et al. 2021, GrowthBook's sequential
    mode).  ``None`` when the difference has no variance (no conversions,
    or all).

    With ``V`` the variance of the estimated difference ``d`` and a normal
    mixing distribution of variance ``tau2 = rho^2 * V * N`` over the
    effect (``N = n1 + n2``), the likelihood ratio against "no difference" is
    ``L = sqrt(V / (V + tau2)) * exp(tau2 * d^2 / (2 V (V + tau2)))``;
    the p-value is ``min(1, 1 / L)`` and the interval holds every effect
    ``d0`` whose ratio stays below ``1 / alpha``.  Both hold at every look:
    the chance that the interval *ever* excludes the true effect, however
    often one looks, is at most ``alpha``.
    """
    p1, p2 = x1 / n1, x2 / n2
    var = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
    if var <= 0:
        return None
    d = p1 - p2
    tau2 = sequential_rho(alpha, tuning) ** 2 * var * (n1 + n2)
    log_lr = 0.5 * math.log(var / (var + tau2)) + tau2 * d * d / (2 * var * (var + tau2))
    p = 1.0 if log_lr <= 0 else min(1.0, math.exp(-log_lr))
    half = math.sqrt(var * (var + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((var + tau2) / var)))
    return p, (d - half, d + half)


# ---------------------------------------------------------------------------
# Planning: visitors per arm for a two-proportion test
# ---------------------------------------------------------------------------
def cohens_h(p1: float, p2: float) -> float:
    """Cohen's effect size for two proportions: 2 asin(sqrt p1) - 2 asin(sqrt p2)
    (statsmodels' ``proportion_effectsize``)."""
    return 2 * math.asin(math.sqrt(p1)) - 2 * math.asin(math.sqrt(p2))


def normal_power(effect: float, n: float, alpha: float) -> float:
    """Power of the two-sided two-sample z-test with ``n`` per group and
    standardised effect ``effect`` (statsmodels' ``NormalIndPower`` with
    ratio 1: both rejection tails count)."""
    crit = normal_ppf(1 - alpha / 2)
    shift = abs(effect) * math.sqrt(n / 2)
    return normal_cdf(shift - crit) + normal_cdf(-shift - crit)


def visitors_per_arm(baseline: float, mde: float, *, power: float = 0.8, alpha: float = 0.05) -> float:
    """Visitors per arm (not rounded) to detect a *relative* change ``mde``
    of the conversion rate ``baseline`` (0.10: from 3 % to 3.3 %) with
    ``power`` in a two-sided test at ``alpha``: the ``n`` where
    ``normal_power`` reaches ``power``, by bisection to 1e-9 of a visitor."""
    target = baseline * (1 + mde)
    if not (0 < baseline < 1 and 0 < target < 1) or mde == 0:
        raise ValueError(f"baseline {baseline!r} and mde {mde!r} must give two different rates in (0, 1)")
    h = cohens_h(target, baseline)
    lo, hi = 1e-9, 1.0
    while normal_power(h, hi, alpha) < power:
        hi *= 2
    while hi - lo > 1e-9 * max(1.0, hi):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if normal_power(h, mid, alpha) < power else (lo, mid)
    return hi
