"""``edgeproxy report --plan``: how many visitors an experiment needs, and,
with logs, how many days that takes at the traffic they show.

The sample size is statsmodels' recipe for two proportions, computed here
without it: Cohen's ``h`` of the baseline rate and the rate the minimum
detectable effect would give, and the ``n`` per arm where a two-sided z-test
reaches the power (``stats.visitors_per_arm``; tests hold it to
``NormalIndPower`` to a relative 1e-9, far within one visitor).  With more than two arms each
variant is compared with the control, so alpha is split among those
comparisons (Bonferroni), which is what keeps the chance of any false
winner at alpha.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

from .stats import visitors_per_arm

DEFAULT_POWER = 0.8
DEFAULT_ALPHA = 0.05
DEFAULT_ARMS = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    baseline: float  # the control's conversion rate
    mde: float  # relative: 0.10 detects 3.0 % -> 3.3 %
    arms: int  # including the control
    power: float
    alpha: float  # overall; each comparison uses alpha / (arms - 1)
    visitors_per_arm: int
    visitors: int  # all arms
    baseline_source: str = "--baseline"  # or "observed control rate"
    visitors_per_day: float | None = None  # observed, with logs
    days: int | None = None  # days the whole sample takes at that traffic
    days_so_far: float | None = None


def make_plan(baseline: float, mde: float, *, arms: int = DEFAULT_ARMS, power: float = DEFAULT_POWER,
              alpha: float = DEFAULT_ALPHA, baseline_source: str = "--baseline") -> Plan:
    """The visitors per arm and in all (``ValueError`` naming a bad value)."""
    if arms < 2:
        raise ValueError(f"--arms {arms}: an experiment has at least 2 arms (the control and a variant)")
    if not 0 < power < 1:
        raise ValueError(f"--power {power}: must be between 0 and 1")
    if not 0 < alpha < 1:
        raise ValueError(f"--alpha {alpha}: must be between 0 and 1")
    per_arm = math.ceil(visitors_per_arm(baseline, mde, power=power, alpha=alpha / (arms - 1)))
    return Plan(baseline, mde, arms, power, alpha, per_arm, per_arm * arms, baseline_source)


def with_traffic(plan: Plan, visitors: int, start: str, end: str) -> Plan:
    """``plan`` with the days it takes at the traffic of an experiment that
    enrolled ``visitors`` between ``start`` and ``end`` (ISO 8601, UTC)."""
    span = (dt.datetime.fromisoformat(end.replace("Z", "+00:00"))
            - dt.datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds() / 86400
    days_so_far = max(span, 1.0)  # less than a day of logs says little about a day's traffic
    per_day = visitors / days_so_far
    days = math.ceil(plan.visitors / per_day) if per_day > 0 else None
    return dataclasses.replace(plan, visitors_per_day=per_day, days=days, days_so_far=span)


def plan_line(plan: Plan) -> str:
    """The plan in one sentence."""
    target = plan.baseline * (1 + plan.mde)
    each = "" if plan.arms == 2 else f" (each of {plan.arms - 1} comparisons at alpha {plan.alpha / (plan.arms - 1):.4g})"
    line = (f"plan: {plan.visitors_per_arm:,} visitors per arm, {plan.visitors:,} in all ({plan.arms} arms), to detect "
            f"{100 * plan.baseline:.3g}% -> {100 * target:.3g}% ({100 * plan.mde:+.3g}% relative, baseline from "
            f"{plan.baseline_source}) with {100 * plan.power:.3g}% power at alpha {plan.alpha:g}, two-sided{each}")
    if plan.visitors_per_day is not None:
        days = "-" if plan.days is None else f"{plan.days:,} days"
        line += (f"; at the observed {plan.visitors_per_day:,.0f} visitors/day: {days} "
                 f"({plan.days_so_far:.1f} days of logs so far)")
    return line
