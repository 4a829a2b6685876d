"""The report's statistics against scipy and statsmodels (test-only
dependencies) to 1e-9, the sample-size plan against statsmodels'
``NormalIndPower``, and the sequential test against its definition (the
mixture likelihood ratio integrated numerically)."""

from __future__ import annotations

import io
import math

import pytest

scipy_stats = pytest.importorskip("scipy.stats", reason="scipy is a test-only dependency (pip install -e '.[test]')")
smp = pytest.importorskip("statsmodels.stats.proportion", reason="statsmodels is a test-only dependency")
from scipy import integrate  # noqa: E402
from statsmodels.stats.power import NormalIndPower  # noqa: E402

from edgeproxy.cli import build_parser  # noqa: E402
from edgeproxy.errors import SettingsError  # noqa: E402
from edgeproxy.report import (  # noqa: E402
    chi2_sf,
    chi_square_gof,
    fisher_exact_p,
    make_plan,
    msprt_difference,
    newcombe_interval,
    risk_ratio_interval,
    run_report,
    visitors_per_arm,
    wilson_interval,
    z_test_p,
)
from edgeproxy.report.stats import normal_cdf, normal_ppf, sequential_rho  # noqa: E402

TABLES = [(300, 10_000, 270, 10_000), (56, 70, 48, 80), (1, 12, 9, 12), (4_200, 140_000, 3_900, 139_000), (7, 31, 19, 44)]


@pytest.mark.parametrize("x, n", [(81, 263), (15, 148), (1, 29), (3_000, 100_000), (50, 50)])
def test_wilson_equals_statsmodels(x, n):
    assert wilson_interval(x, n) == pytest.approx(smp.proportion_confint(x, n, method="wilson"), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("x1, n1, x2, n2", TABLES)
def test_newcombe_equals_statsmodels(x1, n1, x2, n2):
    expected = smp.confint_proportions_2indep(x1, n1, x2, n2, method="newcomb", compare="diff")
    assert newcombe_interval(x1, n1, x2, n2) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("x1, n1, x2, n2", TABLES)
def test_katz_ratio_interval_equals_statsmodels_log_method(x1, n1, x2, n2):
    expected = smp.confint_proportions_2indep(x1, n1, x2, n2, method="log", compare="ratio")
    assert risk_ratio_interval(x1, n1, x2, n2) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("x1, n1, x2, n2", TABLES)
def test_z_test_equals_statsmodels_pooled_ztest(x1, n1, x2, n2):
    _, p = smp.proportions_ztest([x1, x2], [n1, n2])
    assert z_test_p(x1, n1, x2, n2) == pytest.approx(p, rel=1e-9)


@pytest.mark.parametrize("x1, n1, x2, n2", [(3, 4, 1, 4), (1, 12, 9, 12), (0, 10, 3, 10), (6, 40, 1, 40), (12, 300, 3, 310)])
def test_fisher_equals_scipy(x1, n1, x2, n2):
    _, p = scipy_stats.fisher_exact([[x1, n1 - x1], [x2, n2 - x2]])
    assert fisher_exact_p(x1, n1, x2, n2) == pytest.approx(p, rel=1e-9)


@pytest.mark.parametrize("x, df", [(0.5, 1), (3.84, 1), (16.2, 2), (80.0, 3), (124.3, 100), (1e-3, 7)])
def test_chi2_survival_equals_scipy(x, df):
    assert chi2_sf(x, df) == pytest.approx(scipy_stats.chi2.sf(x, df), rel=1e-9)


@pytest.mark.parametrize("observed, shares", [([5040, 4960], [1, 1]), ([7000, 3000], [70, 30]), ([167_603, 166_879, 165_328], [1, 1, 1])])
def test_srm_goodness_of_fit_equals_scipy_chisquare(observed, shares):
    total = sum(observed)
    expected = [total * s / sum(shares) for s in shares]
    stat, p = scipy_stats.chisquare(observed, expected)
    assert chi_square_gof(observed, shares)[0::2] == pytest.approx((stat, p), rel=1e-9)


@pytest.mark.parametrize("z", [-6.0, -1.959963984540054, 0.0, 0.3, 2.5])
def test_normal_functions_equal_scipy(z):
    assert normal_cdf(z) == pytest.approx(scipy_stats.norm.cdf(z), rel=1e-9)
    q = scipy_stats.norm.cdf(z)
    assert normal_ppf(q) == pytest.approx(scipy_stats.norm.ppf(q), rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("baseline, mde, power, alpha", [
    (0.03, 0.10, 0.8, 0.05), (0.10, 0.05, 0.9, 0.05), (0.50, -0.10, 0.8, 0.01), (0.01, 0.20, 0.8, 0.05), (0.2, 0.5, 0.95, 0.1),
])
def test_visitors_per_arm_equal_statsmodels_normal_ind_power(baseline, mde, power, alpha):
    effect = smp.proportion_effectsize(baseline * (1 + mde), baseline)
    expected = NormalIndPower().solve_power(effect_size=effect, alpha=alpha, power=power, ratio=1, alternative="two-sided")
    assert visitors_per_arm(baseline, mde, power=power, alpha=alpha) == pytest.approx(expected, rel=1e-9)


def test_the_issue_s_plan_needs_53182_visitors_per_arm():
    plan = make_plan(0.03, 0.10)
    assert (plan.visitors_per_arm, plan.visitors) == (53_182, 106_364)


def test_three_arms_split_alpha_between_two_comparisons():
    effect = smp.proportion_effectsize(0.033, 0.03)
    expected = NormalIndPower().solve_power(effect_size=effect, alpha=0.025, power=0.8, ratio=1)
    plan = make_plan(0.03, 0.10, arms=3)
    assert plan.visitors_per_arm == math.ceil(expected) and plan.visitors == 3 * plan.visitors_per_arm


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    return run_report(build_parser().parse_args(argv), out=out, err=io.StringIO()), out.getvalue()


def test_plan_without_logs_prints_the_sample_size():
    code, text = run(["report", "--plan", "--baseline", "0.03", "--mde", "0.10"])
    assert code == 0
    assert text.startswith("plan: 53,182 visitors per arm, 106,364 in all (2 arms), to detect 3% -> 3.3%")


@pytest.mark.parametrize("argv, flag", [
    (["--plan", "--baseline", "0.03"], "--mde"),
    (["--plan", "--mde", "0.1"], "--baseline"),
    (["--plan", "--baseline", "1.5", "--mde", "0.1"], "--baseline"),
    (["--plan", "--baseline", "0.03", "--mde", "0"], "--mde"),
    (["--plan", "--baseline", "0.03", "--mde", "0.1", "--arms", "1"], "--arms"),
    (["--plan", "--baseline", "0.03", "--mde", "0.1", "--power", "1.2"], "--power"),
])
def test_bad_plan_options_name_the_flag(argv, flag):
    with pytest.raises(SettingsError) as info:
        run(["report", *argv])
    assert info.value.key == flag


# ---------------------------------------------------------------------------
# Sequential: the mixture SPRT
# ---------------------------------------------------------------------------
def mixture_likelihood_ratio(d: float, var: float, tau2: float) -> float:
    """The definition: the likelihood of the estimate ``d`` under effects
    drawn from N(0, tau2), over its likelihood under no effect."""
    def integrand(theta: float) -> float:
        return (math.exp((theta * d - theta * theta / 2) / var)
                * math.exp(-theta * theta / (2 * tau2)) / math.sqrt(2 * math.pi * tau2))
    spread = 12 * math.sqrt(tau2)
    return integrate.quad(integrand, -spread, spread, epsabs=0, epsrel=1e-12, limit=200, points=[0.0, d])[0]


@pytest.mark.parametrize("x1, n1, x2, n2", [(330, 10_000, 300, 10_000), (90, 1_000, 60, 1_000), (1_300, 40_000, 1_200, 40_000)])
def test_sequential_p_value_is_the_inverse_mixture_likelihood_ratio(x1, n1, x2, n2):
    p1, p2 = x1 / n1, x2 / n2
    var = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
    tau2 = sequential_rho() ** 2 * var * (n1 + n2)
    p, _ = msprt_difference(x1, n1, x2, n2)
    assert p == pytest.approx(min(1.0, 1 / mixture_likelihood_ratio(p1 - p2, var, tau2)), rel=1e-9)


@pytest.mark.parametrize("x1, n1, x2, n2", [(330, 10_000, 300, 10_000), (90, 1_000, 60, 1_000)])
def test_the_confidence_sequence_ends_where_the_ratio_reaches_one_over_alpha(x1, n1, x2, n2):
    p1, p2 = x1 / n1, x2 / n2
    var = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
    tau2 = sequential_rho() ** 2 * var * (n1 + n2)
    _, (lo, hi) = msprt_difference(x1, n1, x2, n2)
    d = p1 - p2
    for edge in (lo, hi):  # testing "the effect is `edge`": the ratio of d - edge against 0
        assert mixture_likelihood_ratio(d - edge, var, tau2) == pytest.approx(20.0, rel=1e-9)


def test_the_sequential_interval_is_wider_than_the_fixed_horizon_one():
    _, (lo, hi) = msprt_difference(1_300, 40_000, 1_200, 40_000)
    fixed_lo, fixed_hi = newcombe_interval(1_300, 40_000, 1_200, 40_000)
    assert lo < fixed_lo and hi > fixed_hi


def test_rho_is_growthbooks_for_alpha_005_and_5000_visitors():
    # gbstats: rho = sqrt((-2 log(alpha) + log(-2 log(alpha) + 1)) / N*)
    assert sequential_rho(0.05, 5000) == pytest.approx(math.sqrt((-2 * math.log(0.05) + math.log(-2 * math.log(0.05) + 1)) / 5000), rel=1e-12)


def test_no_variance_no_sequential_result():
    assert msprt_difference(0, 100, 0, 100) is None
