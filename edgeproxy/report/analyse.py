"""From aggregated counts to the report: per experiment and arm, the rates,
uplifts, tests and the SRM check.

The aggregation (SQL in ``aggregate.py``, or the test oracle) hands over
``Counts``: per experiment, arm and UTC day, the exposure lines, the
visitors whose *first* exposure was that day in that arm, how many of them
converted at or after it and the value of those conversions.  Everything
here is arithmetic on those counts, so any engine that produces them gives
the same report.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import SettingsError
from .logs import Malformed, ReportInputError
from .plan import Plan, make_plan, with_traffic
from .stats import (
    chi_square_gof,
    fisher_exact_p,
    min_expected_cell,
    msprt_difference,
    newcombe_interval,
    risk_ratio_interval,
    wilson_interval,
    z_test_p,
)

SRM_ALPHA = 0.001
FISHER_MIN_EXPECTED = 5.0  # below this expected cell count, the z-test gives way to Fisher's exact
CONTROL = "control"

METHODS = {
    "rate_ci": "Wilson score interval, 95%",
    "abs_uplift_ci": "Newcombe hybrid score interval (method 10), 95%",
    "rel_uplift_ci": "log risk ratio (Katz) interval, 95%",
    "p_value": "two-sided pooled two-proportion z-test; Fisher's exact test when an expected cell < 5",
    "srm": f"chi-square goodness of fit of arm visitor counts, flagged at p < {SRM_ALPHA}",
    "conversion": "a visitor with >= 1 conversion at or after their first exposure in the experiment",
    "sequential": "always-valid p-value and 95% confidence sequence of the uplift (pp): normal-mixture SPRT "
                  "(Johari et al. 2017; Howard et al. 2021), tuned to 5,000 visitors; valid however often you look",
}

READING_RULE = (
    "How to read it: the fixed-horizon p-value and intervals are valid only if you look once, at the sample size you "
    "planned (--plan). If you look every day, go by the sequential columns instead: a variant has won (or lost) "
    "as soon as its sequential interval excludes 0 (seq p < 0.05); until then, let the test run. Looking daily "
    "at the fixed-horizon p-value finds false winners far more often than 5% of the time."
)


# ---------------------------------------------------------------------------
# What the aggregation produces
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class DayCounts:
    """One arm's cohort of a day (UTC): the visitors whose first exposure in
    the experiment was that day in this arm, how many of them converted at
    or after it (any day) and the value, how many were also exposed to
    another arm, and all their exposure lines (any day, any arm)."""

    day: str  # YYYY-MM-DD
    arm: str
    visitors: int
    converters: int
    value: float
    multi_arm: int
    exposures: int


@dataclasses.dataclass(frozen=True, slots=True)
class ExperimentCounts:
    name: str
    slots: tuple[str, ...]
    start: str  # first and last exposure, ISO 8601 UTC to the second
    end: str
    days: tuple[DayCounts, ...]  # sorted by (day, arm)


@dataclasses.dataclass(frozen=True, slots=True)
class Counts:
    """Everything the report needs from the logs (or the warehouse)."""

    experiments: tuple[ExperimentCounts, ...]  # sorted by name
    exposure_lines: int
    conversion_lines: int
    malformed: tuple[Malformed, ...] = ()  # only files with malformed lines


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------
@dataclasses.dataclass(slots=True)
class ArmResult:
    arm: str
    visitors: int
    conversions: int | None = None  # None: no conversion log given
    value: float | None = None
    rate: float | None = None
    rate_ci: tuple[float, float] | None = None
    abs_uplift: float | None = None
    abs_uplift_ci: tuple[float, float] | None = None
    rel_uplift: float | None = None
    rel_uplift_ci: tuple[float, float] | None = None
    p_value: float | None = None
    test: str | None = None  # "z" or "fisher"
    seq_p_value: float | None = None  # always valid: may be read at every look
    seq_abs_uplift_ci: tuple[float, float] | None = None  # 95% confidence sequence of abs_uplift


@dataclasses.dataclass(slots=True)
class SrmResult:
    basis: str  # "equal split", "--weights" or "--slots"
    expected: dict[str, float]  # arm -> intended share (0-1)
    chi2: float
    df: int
    p_value: float
    flagged: bool


@dataclasses.dataclass(slots=True)
class ExperimentResult:
    name: str
    slots: list[str]
    start: str
    end: str
    exposures: int
    visitors: int
    arms: list[ArmResult]
    srm: SrmResult | None
    warnings: list[str]
    daily: list[DayCounts] = dataclasses.field(default_factory=list)
    plan: Plan | None = None  # with --plan: the sample it needs and the days at its traffic
    plan_problem: str | None = None  # with --plan: why there is no plan


@dataclasses.dataclass(slots=True)
class Report:
    exposure_files: list[str]
    conversion_files: list[str]  # empty: no conversion log, visitors and SRM only
    exposure_lines: int
    conversion_lines: int
    experiments: list[ExperimentResult]
    malformed: list[Malformed]
    methods: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(METHODS))
    engine: str = "duckdb"  # where the counts were aggregated: "duckdb", "postgresql", "python" (the test oracle)
    plan: Plan | None = None  # --plan with --baseline: the plan itself
    reading_rule: str = READING_RULE

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        from .render import to_json

        return to_json(self)


# ---------------------------------------------------------------------------
# The intended split
# ---------------------------------------------------------------------------
def parse_weights(specs: Iterable[str]) -> dict[str, dict[str, float]]:
    """``--weights bf-hero:control=70,promo=30`` (repeatable) as
    ``{experiment: {arm: percent}}``.  Without ``control``, it gets what
    the arms leave of 100 (as the proxy splits)."""
    out: dict[str, dict[str, float]] = {}
    for spec in specs:
        name, sep, arms = spec.partition(":")
        if not sep or not name or not arms:
            raise SettingsError("--weights", spec, "expected EXPERIMENT:ARM=PERCENT,ARM=PERCENT,...")
        weights: dict[str, float] = {}
        for part in arms.split(","):
            arm, eq, number = part.strip().partition("=")
            try:
                weight = float(number)
            except ValueError:
                weight = -1.0
            if not eq or not arm or not math.isfinite(weight) or weight < 0:
                raise SettingsError("--weights", spec, f"{part.strip()!r} is not ARM=PERCENT with a number >= 0")
            weights[arm] = weight
        if CONTROL not in weights and sum(weights.values()) < 100:
            weights[CONTROL] = 100 - sum(weights.values())
        if sum(weights.values()) <= 0:
            raise SettingsError("--weights", spec, "the weights add up to 0")
        out[name] = weights
    return out


def weights_from_slots(directory: Path) -> dict[str, dict[str, float]]:
    """The intended split of every experiment in a slots folder, as
    ``{experiment: {arm: percent}}`` with ``control`` the remainder.

    An experiment in several slots takes each arm's weight from the slots
    that have it (the proxy buckets a visitor the same way in all of them).
    """
    from ..catalog import load_catalog  # only this option needs the catalog

    if not directory.is_dir():
        raise ReportInputError(f"{directory}: no such slots folder (--slots)")
    catalog = load_catalog(directory)
    out: dict[str, dict[str, float]] = {}
    for slot in catalog.slots.values():
        for name, arms in slot.experiments.items():
            weights = out.setdefault(name, {})
            for arm in arms:
                weights[arm.variant.id] = arm.hi - arm.lo
    for weights in out.values():
        rest = 100 - sum(weights.values())
        if rest > 1e-9:
            weights[CONTROL] = rest
    return out


# ---------------------------------------------------------------------------
# The analysis
# ---------------------------------------------------------------------------
def arm_order(arms: Iterable[str]) -> list[str]:
    """The control first, then the variants by name."""
    return sorted(arms, key=lambda a: (a != CONTROL, a))


def analyse_experiment(
    counts: ExperimentCounts,
    with_conversions: bool,
    weights: Mapping[str, float] | None = None,
    basis: str = "--weights",
) -> ExperimentResult:
    """One experiment's arms, uplifts, tests and SRM check."""
    visitors: dict[str, int] = {}
    converted: dict[str, int] = {}
    value: dict[str, float] = {}
    exposures = multi = 0
    for d in counts.days:
        visitors[d.arm] = visitors.get(d.arm, 0) + d.visitors
        converted[d.arm] = converted.get(d.arm, 0) + d.converters
        value[d.arm] = value.get(d.arm, 0.0) + d.value
        exposures += d.exposures
        multi += d.multi_arm

    warnings: list[str] = []
    if multi:
        warnings.append(
            f"{multi} visitor(s) were exposed to more than one arm (each counted in their first arm): "
            "a split changed mid-experiment, the experiment's slots name their arms differently, "
            "or visitor ids collide"
        )
    names = arm_order(set(visitors) | set(weights or ()))
    arms = [ArmResult(arm=a, visitors=visitors.get(a, 0)) for a in names]
    control = next((a for a in arms if a.arm == CONTROL and a.visitors), None)
    if with_conversions:
        for a in arms:
            a.conversions, a.value = converted.get(a.arm, 0), value.get(a.arm, 0.0)
            if a.visitors:
                a.rate = a.conversions / a.visitors
                a.rate_ci = wilson_interval(a.conversions, a.visitors)
        if control is None:
            warnings.append("no control arm was seen: no uplift or p-value")
        else:
            for a in arms:
                if a is control or not a.visitors:
                    continue
                compare(a, control)
    for a in arms:
        if weights is not None and a.visitors and weights.get(a.arm, 0) == 0:
            warnings.append(f"arm {a.arm!r} has visitors but no weight in the intended split")

    srm = None
    if weights is not None:
        shares = [weights.get(a.arm, 0.0) for a in arms]
    else:
        shares = [1.0] * len(arms)
        basis = "equal split"
    if len(arms) >= 2:
        stat, df, p = chi_square_gof([a.visitors for a in arms], shares)
        total = sum(shares)
        srm = SrmResult(basis, {a.arm: s / total for a, s in zip(arms, shares)}, stat, df, p, p < SRM_ALPHA)
    return ExperimentResult(
        name=counts.name,
        slots=sorted(counts.slots),
        start=counts.start,
        end=counts.end,
        exposures=exposures,
        visitors=sum(visitors.values()),
        arms=arms,
        srm=srm,
        warnings=warnings,
        daily=list(counts.days),
    )


def compare(a: ArmResult, control: ArmResult) -> None:
    """Fill ``a``'s uplift, intervals and p-value against ``control``."""
    x1, n1, x2, n2 = a.conversions or 0, a.visitors, control.conversions or 0, control.visitors
    a.abs_uplift = x1 / n1 - x2 / n2
    a.abs_uplift_ci = newcombe_interval(x1, n1, x2, n2)
    if x2:
        a.rel_uplift = (x1 / n1) / (x2 / n2) - 1
        rr = risk_ratio_interval(x1, n1, x2, n2)
        a.rel_uplift_ci = (rr[0] - 1, rr[1] - 1) if rr else None
    if min_expected_cell(x1, n1, x2, n2) < FISHER_MIN_EXPECTED:
        a.p_value, a.test = fisher_exact_p(x1, n1, x2, n2), "fisher"
    else:
        a.p_value, a.test = z_test_p(x1, n1, x2, n2), "z"
    sequential = msprt_difference(x1, n1, x2, n2)
    if sequential is not None:
        a.seq_p_value, a.seq_abs_uplift_ci = sequential


def analyse(
    counts: Counts,
    *,
    exposure_files: list[str],
    conversion_files: list[str],
    with_conversions: bool,
    weights: Mapping[str, Mapping[str, float]] | None = None,
    slot_weights: Mapping[str, Mapping[str, float]] | None = None,
    engine: str = "duckdb",
    plan: PlanSpec | None = None,
) -> Report:
    """The report of ``counts``.  ``weights`` (``--weights``) win over
    ``slot_weights`` (``--slots``); without either, an equal split.  With
    ``plan``, each experiment gets the days its sample takes at its traffic."""
    weights, slot_weights = weights or {}, slot_weights or {}
    results = []
    for exp in counts.experiments:
        if exp.name in weights:
            intended, basis = weights[exp.name], "--weights"
        elif exp.name in slot_weights:
            intended, basis = slot_weights[exp.name], "--slots"
        else:
            intended, basis = None, "equal split"
        result = analyse_experiment(exp, with_conversions, intended, basis)
        if plan is not None:
            result.plan, result.plan_problem = plan.plan_or_problem(result)
        results.append(result)
    return Report(
        exposure_files=exposure_files,
        conversion_files=conversion_files,
        exposure_lines=counts.exposure_lines,
        conversion_lines=counts.conversion_lines,
        experiments=results,
        malformed=list(counts.malformed),
        engine=engine,
        plan=plan.standalone() if plan is not None else None,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class PlanSpec:
    """``--plan``'s options; ``baseline`` None: each experiment's control rate."""

    mde: float
    baseline: float | None = None
    arms: int | None = None  # None: each experiment's own arms (2 without logs)
    power: float = 0.8
    alpha: float = 0.05

    def standalone(self) -> Plan | None:
        if self.baseline is None:
            return None
        return make_plan(self.baseline, self.mde, arms=self.arms or 2, power=self.power, alpha=self.alpha)

    def for_experiment(self, exp: ExperimentResult) -> Plan | None:
        """The plan at ``exp``'s traffic (``None`` without a baseline: no
        ``--baseline`` and no control conversions to take it from)."""
        control = next((a for a in exp.arms if a.arm == CONTROL), None)
        baseline, source = self.baseline, "--baseline"
        if baseline is None:
            if control is None or not control.rate:
                return None
            baseline, source = control.rate, "observed control rate"
        plan = make_plan(baseline, self.mde, arms=self.arms or max(2, len(exp.arms)), power=self.power,
                         alpha=self.alpha, baseline_source=source)
        return with_traffic(plan, exp.visitors, exp.start, exp.end)

    def plan_or_problem(self, exp: ExperimentResult) -> tuple[Plan | None, str | None]:
        """``for_experiment``, or why there is no plan when the observed
        control rate cannot move by ``mde`` (a control converting 95 % and
        +10 %).  (Bug fixed: that was a traceback of the whole report.)"""
        try:
            return self.for_experiment(exp), None
        except ValueError:
            if self.baseline is not None:
                raise
            rate = next((a.rate for a in exp.arms if a.arm == CONTROL), None) or 0.0
            return None, (f"the control converts {100 * rate:.2f}% of its visitors, and a {100 * self.mde:g}% change "
                          "of that is not a conversion rate: choose a smaller change")
