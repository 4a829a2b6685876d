"""``edgeproxy report EXPOSURES [CONVERSIONS]``: every experiment against its control.

Reads the JSON-lines logs that ``events.EventLog`` writes (CONTRACT §7) and
prints, per experiment and arm (any number of log files, e.g. rotated
``.gz`` ones, in any order: each file's kind is recognised from its lines):

- **visitors**: distinct visitor ids exposed to the arm.  A visitor belongs
  to the arm of their *first* exposure (earliest ``ts``) in the experiment;
  one seen in two arms of the same experiment (a changed split, slots of
  one experiment naming their arms differently, an id collision) stays in
  the first and is reported as a data-quality warning.
- **conversions**: those visitors with at least one conversion at or after
  their first exposure in that experiment (a conversion before it cannot be
  an effect of the arm).  ``value`` sums the values of those conversions.
- **rate** with a 95% **Wilson score** interval.
- **uplift vs control**, absolute (percentage points) with a 95% **Newcombe
  hybrid score** interval (Newcombe 1998, method 10: the difference of two
  Wilson intervals), and relative with a 95% **log risk-ratio (Katz)**
  interval.
- **p-value**, two-sided: the pooled **two-proportion z-test**; **Fisher's
  exact test** (two-sided, summing tables no more likely than the observed)
  when an expected cell of the 2x2 table is below 5, where the normal
  approximation is poor.  The table says which (``z`` / ``fisher``).
- **SRM**, sample-ratio mismatch: a chi-square goodness-of-fit test of the
  arms' visitor counts against the intended split, flagged at p < 0.001.
  Exposure lines do not carry weights, so the intended split comes from
  ``--weights bf-hero:control=70,promo=30`` (a missing ``control`` gets what
  the variants leave of 100), else from ``--slots DIR`` (the experiments'
  weights as the files say *now*), else it is an equal split among the arms
  seen.  An arm whose own ``when``/window/cap is narrower than its
  siblings' enrols fewer visitors than its weight (choose.py) and is rightly
  flagged: its visitors are not comparable with the control's.

p-values are per arm against control, not adjusted for several arms or for
looking at the data repeatedly; a flagged SRM means the arms are not
comparable, whatever the p-values say.

Malformed lines are skipped and counted; the first few are reported as
``file:line: reason``.  Statistics are pure Python (no scipy): the
chi-square survival function is the regularised upper incomplete gamma
function, by series and continued fraction.

Exit status: 0 (also when SRM is flagged), 2 when an input cannot be read or
``--weights`` is malformed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gzip
import html
import math
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from .errors import SettingsError

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile
SRM_ALPHA = 0.001
FISHER_MIN_EXPECTED = 5.0  # below this expected cell count, the z-test gives way to Fisher's exact
MAX_EXAMPLES = 5  # malformed lines reported per file
CONTROL = "control"

METHODS = {
    "rate_ci": "Wilson score interval, 95%",
    "abs_uplift_ci": "Newcombe hybrid score interval (method 10), 95%",
    "rel_uplift_ci": "log risk ratio (Katz) interval, 95%",
    "p_value": "two-sided pooled two-proportion z-test; Fisher's exact test when an expected cell < 5",
    "srm": f"chi-square goodness of fit of arm visitor counts, flagged at p < {SRM_ALPHA}",
    "conversion": "a visitor with >= 1 conversion at or after their first exposure in the experiment",
}


# ---------------------------------------------------------------------------
# 1. Statistics (pure functions, tested against published values)
# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# 2. Reading the logs
# ---------------------------------------------------------------------------
class ReportInputError(Exception):
    """An input file cannot be read (exit status 2)."""


@dataclasses.dataclass(slots=True)
class Malformed:
    """Skipped lines of one file: how many, and the first few as ``file:line: reason``."""

    file: str
    count: int = 0
    examples: list[str] = dataclasses.field(default_factory=list)

    def add(self, line_no: int, reason: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{self.file}:{line_no}: {reason}")


def parse_ts(value: Any) -> float:
    """An event's ``ts`` as Unix seconds: ISO 8601 (a naive time is UTC) or a number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if not isinstance(value, str):
        raise ValueError
    when = dt.datetime.fromisoformat(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Numbered non-blank lines of ``path`` (``.gz`` read through gzip)."""
    try:
        fh = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
        with fh:
            for no, line in enumerate(fh, 1):
                if line.strip():
                    yield no, line
    except (OSError, EOFError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ReportInputError(f"{path}: cannot read: {reason}") from exc


def _record(line: bytes, required: tuple[str, ...]) -> tuple[dict[str, Any] | None, float, str]:
    """The event of a line, its ts, or ``(None, 0, reason)``."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, 0.0, "not valid JSON"
    if not isinstance(event, dict):
        return None, 0.0, "not a JSON object"
    for key in required:
        value = event.get(key)
        if not isinstance(value, str) or not value:
            return None, 0.0, f"missing or empty {key!r}" if value in (None, "") else f"{key!r} is not a string"
    try:
        ts = parse_ts(event.get("ts"))
    except (ValueError, TypeError, OverflowError):
        return None, 0.0, f"bad ts {event.get('ts')!r}"
    return event, ts, ""


@dataclasses.dataclass(slots=True)
class _Experiment:
    """Exposures of one experiment while reading: per visitor, the first
    exposure's ts and arm, and whether they were seen in another arm."""

    name: str
    first: dict[str, list[Any]] = dataclasses.field(default_factory=dict)  # visitor -> [ts, arm, multi]
    slots: set[str] = dataclasses.field(default_factory=set)
    arms: set[str] = dataclasses.field(default_factory=set)  # every arm in a line, first or not
    lines: int = 0
    start: float = math.inf
    end: float = -math.inf


def read_exposures(
    path: Path, experiments: dict[str, _Experiment] | None = None
) -> tuple[dict[str, _Experiment], int, Malformed]:
    """Experiments by name (added to ``experiments``: several files, e.g.
    rotated logs, make one report), the number of good lines, and the
    malformed ones."""
    experiments = {} if experiments is None else experiments
    bad = Malformed(str(path))
    good = 0
    for no, line in _lines(path):
        event, ts, reason = _record(line, ("visitor", "experiment", "arm"))
        if event is None:
            bad.add(no, reason)
            continue
        good += 1
        name, visitor, arm = event["experiment"], event["visitor"], event["arm"]
        exp = experiments.get(name)
        if exp is None:
            exp = experiments[name] = _Experiment(name)
        exp.lines += 1
        exp.arms.add(arm)
        exp.start, exp.end = min(exp.start, ts), max(exp.end, ts)
        if isinstance(event.get("slot"), str):
            exp.slots.add(event["slot"])
        seen = exp.first.get(visitor)
        if seen is None:
            exp.first[visitor] = [ts, arm, False]
            continue
        if arm != seen[1]:
            seen[2] = True
            if ts < seen[0]:  # logs from several workers need not be in order
                seen[1] = arm
        seen[0] = min(seen[0], ts)
    return experiments, good, bad


def read_conversions(
    path: Path, conversions: dict[str, list[tuple[float, float]]] | None = None
) -> tuple[dict[str, list[tuple[float, float]]], int, Malformed]:
    """Per visitor, their conversions as ``(ts, value)`` (value 0 when
    none), added to ``conversions``."""
    conversions = {} if conversions is None else conversions
    bad = Malformed(str(path))
    good = 0
    for no, line in _lines(path):
        event, ts, reason = _record(line, ("visitor",))
        if event is None:
            bad.add(no, reason)
            continue
        value = event.get("value")
        if value is None:
            value = 0.0
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            bad.add(no, f"bad value {value!r}")
            continue
        good += 1
        conversions.setdefault(event["visitor"], []).append((ts, float(value)))
    return conversions, good, bad


# ---------------------------------------------------------------------------
# 3. The analysis
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


@dataclasses.dataclass(slots=True)
class Report:
    exposure_files: list[str]
    conversion_files: list[str]  # empty: no conversion log, visitors and SRM only
    exposure_lines: int
    conversion_lines: int
    experiments: list[ExperimentResult]
    malformed: list[Malformed]
    methods: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(METHODS))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    from .catalog import load_catalog  # only this option needs the catalog

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


def _arm_order(arms: Iterable[str]) -> list[str]:
    return sorted(arms, key=lambda a: (a != CONTROL, a))


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def analyse_experiment(
    exp: _Experiment,
    conversions: Mapping[str, list[tuple[float, float]]] | None,
    weights: Mapping[str, float] | None = None,
    basis: str = "--weights",
) -> ExperimentResult:
    """One experiment's arms, uplifts, tests and SRM check."""
    visitors: dict[str, int] = {}
    converted: dict[str, int] = {}
    value: dict[str, float] = {}
    multi = 0
    for visitor, (first_ts, arm, seen_elsewhere) in exp.first.items():
        visitors[arm] = visitors.get(arm, 0) + 1
        multi += seen_elsewhere
        if conversions is None:
            continue
        after = [v for ts, v in conversions.get(visitor, ()) if ts >= first_ts]
        if after:
            converted[arm] = converted.get(arm, 0) + 1
            value[arm] = value.get(arm, 0.0) + sum(after)

    warnings: list[str] = []
    if multi:
        warnings.append(
            f"{multi} visitor(s) were exposed to more than one arm (each counted in their first arm): "
            "a split changed mid-experiment, the experiment's slots name their arms differently, "
            "or visitor ids collide"
        )
    names = _arm_order(exp.arms | set(weights or ()))
    arms = [ArmResult(arm=a, visitors=visitors.get(a, 0)) for a in names]
    control = next((a for a in arms if a.arm == CONTROL and a.visitors), None)
    if conversions is not None:
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
                _compare(a, control)
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
        name=exp.name,
        slots=sorted(exp.slots),
        start=_iso(exp.start),
        end=_iso(exp.end),
        exposures=exp.lines,
        visitors=len(exp.first),
        arms=arms,
        srm=srm,
        warnings=warnings,
    )


def _compare(a: ArmResult, control: ArmResult) -> None:
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


def build_report(
    exposures: Path | Sequence[Path],
    conversions: Path | Sequence[Path] | None = None,
    *,
    weights: Mapping[str, Mapping[str, float]] | None = None,
    slot_weights: Mapping[str, Mapping[str, float]] | None = None,
) -> Report:
    """Read the logs and analyse every experiment (``ReportInputError``
    when a file cannot be read).  ``weights`` (``--weights``) win over
    ``slot_weights`` (``--slots``); without either, an equal split."""
    exposures = [exposures] if isinstance(exposures, Path) else list(exposures)
    conversions = [conversions] if isinstance(conversions, Path) else list(conversions or ())
    experiments: dict[str, _Experiment] = {}
    malformed: list[Malformed] = []
    exposure_lines = 0
    for path in exposures:
        _, good, bad = read_exposures(path, experiments)
        exposure_lines += good
        malformed.append(bad)
    converted: dict[str, list[tuple[float, float]]] | None = {} if conversions else None
    conversion_lines = 0
    for path in conversions:
        _, good, bad = read_conversions(path, converted)
        conversion_lines += good
        malformed.append(bad)
    weights, slot_weights = weights or {}, slot_weights or {}
    results = []
    for name in sorted(experiments):
        if name in weights:
            intended, basis = weights[name], "--weights"
        elif name in slot_weights:
            intended, basis = slot_weights[name], "--slots"
        else:
            intended, basis = None, "equal split"
        results.append(analyse_experiment(experiments[name], converted, intended, basis))
    return Report(
        exposure_files=[str(p) for p in exposures],
        conversion_files=[str(p) for p in conversions],
        exposure_lines=exposure_lines,
        conversion_lines=conversion_lines,
        experiments=results,
        malformed=[m for m in malformed if m.count],
    )


SNIFF_LINES = 1000


def log_kind(path: Path) -> str | None:
    """``"exposures"`` or ``"conversions"`` from the first event line of
    ``path`` (exposures name an ``experiment``); ``None`` when no line in
    the first ``SNIFF_LINES`` is a JSON object with a ``visitor``."""
    for no, line in _lines(path):
        if no > SNIFF_LINES:
            break
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and "visitor" in event:
            return "exposures" if "experiment" in event else "conversions"
    return None


def sort_logs(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Exposure and conversion logs among ``paths``, recognised by their
    lines, so the order on the command line does not matter.  A file with
    no event to go by (empty, or all malformed) keeps its position's
    meaning: the first is the exposure log, the others conversion logs."""
    exposures: list[Path] = []
    conversions: list[Path] = []
    for i, path in enumerate(paths):
        kind = log_kind(path) or ("exposures" if i == 0 else "conversions")
        (exposures if kind == "exposures" else conversions).append(path)
    return exposures, conversions


# ---------------------------------------------------------------------------
# 4. Output: text, JSON, HTML
# ---------------------------------------------------------------------------
def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.0001" if p < 0.0001 else f"{p:.4f}"


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def _signed_pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:+.{digits}f}%"


def _pp(x: float) -> str:
    return f"{100 * x:+.2f}"


def _share(a: ArmResult, total: int) -> str:
    return f"{100 * a.visitors / total:.1f}%" if total else "-"


def _cells(a: ArmResult, total: int, with_conversions: bool) -> list[str]:
    """One table row's cells, shared by the text and HTML reports."""
    head = [a.arm, f"{a.visitors:,}", _share(a, total)]
    if not with_conversions:
        return head
    conv = "-" if a.conversions is None else f"{a.conversions:,}"
    rate = _pct(a.rate)
    rate_ci = "-" if a.rate_ci is None else f"[{_pct(a.rate_ci[0])}, {_pct(a.rate_ci[1])}]"
    abs_up = "-" if a.abs_uplift is None else f"{_pp(a.abs_uplift)} pp"
    abs_ci = "-" if a.abs_uplift_ci is None else f"[{_pp(a.abs_uplift_ci[0])}, {_pp(a.abs_uplift_ci[1])}]"
    rel_up = "-" if a.rel_uplift is None else _signed_pct(a.rel_uplift)
    rel_ci = "-" if a.rel_uplift_ci is None else f"[{_signed_pct(a.rel_uplift_ci[0])}, {_signed_pct(a.rel_uplift_ci[1])}]"
    p = "-" if a.p_value is None else f"{fmt_p(a.p_value)} ({a.test})"
    return head + [conv, rate, rate_ci, abs_up, abs_ci, rel_up, rel_ci, p]


HEADERS = ["arm", "visitors", "share", "conv", "rate", "95% CI", "uplift", "95% CI (pp)", "rel uplift", "95% CI", "p-value"]
_RIGHT = {1, 2, 3, 4, 6, 8}


def _table(exp: ExperimentResult, with_conversions: bool) -> list[list[str]]:
    headers = HEADERS if with_conversions else HEADERS[:3]
    total = sum(a.visitors for a in exp.arms)
    return [headers] + [_cells(a, total, with_conversions) for a in exp.arms]


def srm_line(srm: SrmResult | None) -> str:
    if srm is None:
        return "SRM: not tested (one arm)"
    verdict = "MISMATCH - the arms are not comparable" if srm.flagged else "ok"
    split = "/".join(f"{100 * s:.4g}" for s in srm.expected.values())
    p = fmt_p(srm.p_value)
    p = f"p {p[0]} {p[1:]}" if p.startswith("<") else f"p = {p}"
    return f"SRM: {verdict} (chi2 = {srm.chi2:.2f}, df = {srm.df}, {p}; vs {srm.basis} {split})"


def format_text(report: Report) -> str:
    """The readable report ``edgeproxy report`` prints."""
    out: list[str] = []
    conv = (f", {', '.join(report.conversion_files)} ({report.conversion_lines:,} conversions)"
            if report.conversion_files else " (no conversion log: visitors and SRM only)")
    exposures = ", ".join(report.exposure_files) or "no exposure log"
    out.append(f"edgeproxy report: {exposures} ({report.exposure_lines:,} exposures){conv}")
    if not report.experiments:
        out.append("")
        out.append("no experiments in the exposure log")
    for exp in report.experiments:
        out.append("")
        slots = ", ".join(exp.slots) or "-"
        out.append(f"{exp.name}   slots: {slots}   {exp.start} .. {exp.end}   {exp.visitors:,} visitors")
        rows = _table(exp, bool(report.conversion_files))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            cells = [c.rjust(w) if i in _RIGHT else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
            out.append("  " + "  ".join(cells).rstrip())
        out.append("  " + srm_line(exp.srm))
        out.extend(f"  warning: {w}" for w in exp.warnings)
    for bad in report.malformed:
        out.append("")
        out.append(f"{bad.file}: {bad.count:,} malformed line(s) skipped")
        out.extend(f"  {e}" for e in bad.examples)
    out.append("")
    out.append("methods: rate CI Wilson score; uplift CI Newcombe hybrid score (pp), relative uplift CI log risk ratio (Katz);")
    out.append("  p-value two-sided, (z) pooled two-proportion z-test, (fisher) Fisher's exact when an expected cell < 5;")
    out.append(f"  SRM chi-square goodness of fit, flagged at p < {SRM_ALPHA}. A conversion counts at or after the")
    out.append("  visitor's first exposure. p-values are not adjusted for several arms or repeated looks.")
    return "\n".join(out) + "\n"


def to_json(report: Report) -> str:
    return orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n"


def _svg_chart(exp: ExperimentResult) -> str:
    """Conversion rate per arm: a dot with its 95% interval as whiskers, and
    the control's rate as a dashed reference line."""
    arms = [a for a in exp.arms if a.rate is not None and a.rate_ci is not None]
    if not arms:
        return ""
    row_h, label_w, plot_w, pad = 34, 150, 480, 20
    height = pad * 2 + row_h * len(arms) + 20
    width = label_w + plot_w + pad * 2
    top = max(a.rate_ci[1] for a in arms) or 0.01  # type: ignore[index]
    scale_max = _nice_ceiling(top * 1.1)

    def x(v: float) -> float:
        return label_w + pad + plot_w * v / scale_max

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="conversion rate per arm of {html.escape(exp.name)} with 95% intervals">'
    ]
    axis_y = pad + row_h * len(arms)
    for i in range(6):
        v = scale_max * i / 5
        parts.append(f'<line x1="{x(v):.1f}" y1="{pad - 5}" x2="{x(v):.1f}" y2="{axis_y}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{x(v):.1f}" y="{axis_y + 15}" font-size="11" text-anchor="middle" fill="#555">{100 * v:.3g}%</text>')
    control = next((a for a in arms if a.arm == CONTROL), None)
    if control is not None:
        cx = x(control.rate)  # type: ignore[arg-type]
        parts.append(f'<line x1="{cx:.1f}" y1="{pad - 5}" x2="{cx:.1f}" y2="{axis_y}" stroke="#888" stroke-dasharray="4 3"/>')
    for i, a in enumerate(arms):
        y = pad + row_h * i + row_h / 2
        lo, hi = a.rate_ci  # type: ignore[misc]
        colour = "#777" if a.arm == CONTROL else ("#1a7f37" if (a.abs_uplift_ci and a.abs_uplift_ci[0] > 0)
                                                  else "#cf222e" if (a.abs_uplift_ci and a.abs_uplift_ci[1] < 0) else "#0969da")
        parts.append(f'<text x="{label_w}" y="{y + 4:.1f}" font-size="13" text-anchor="end">{html.escape(a.arm)}</text>')
        parts.append(f'<line x1="{x(lo):.1f}" y1="{y:.1f}" x2="{x(hi):.1f}" y2="{y:.1f}" stroke="{colour}" stroke-width="2"/>')
        for end in (lo, hi):
            parts.append(f'<line x1="{x(end):.1f}" y1="{y - 7:.1f}" x2="{x(end):.1f}" y2="{y + 7:.1f}" stroke="{colour}" stroke-width="2"/>')
        parts.append(
            f'<circle cx="{x(a.rate):.1f}" cy="{y:.1f}" r="5" fill="{colour}">'  # type: ignore[arg-type]
            f"<title>{html.escape(a.arm)}: {_pct(a.rate)} [{_pct(lo)}, {_pct(hi)}]</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _nice_ceiling(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= ``v`` (axis maximum)."""
    if v <= 0:
        return 1.0
    exp10 = 10 ** math.floor(math.log10(v))
    for step in (1, 2, 2.5, 5, 10):
        if step * exp10 >= v:
            return min(1.0, step * exp10)
    return min(1.0, 10 * exp10)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#1f2328;padding:0 1em}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0}th,td{padding:.3em .7em;border-bottom:1px solid #d0d7de;text-align:left;white-space:nowrap}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f6f8fa}
.ok{color:#1a7f37}.bad{color:#cf222e;font-weight:600}.warn{color:#9a6700}.meta,.methods{color:#57606a}
code{background:#f6f8fa;padding:0 .3em}
"""


def render_html(report: Report) -> str:
    """A self-contained HTML page: the tables, an SVG chart per experiment."""
    e = html.escape
    body = [f"<h1>edgeproxy experiment report</h1>"]
    files = ", ".join(f"<code>{e(f)}</code>" for f in report.exposure_files) or "no exposure log"
    src = f"{files} ({report.exposure_lines:,} exposures)"
    if report.conversion_files:
        files = ", ".join(f"<code>{e(f)}</code>" for f in report.conversion_files)
        src += f", {files} ({report.conversion_lines:,} conversions)"
    else:
        src += ", no conversion log"
    body.append(f'<p class="meta">{src}</p>')
    if not report.experiments:
        body.append("<p>No experiments in the exposure log.</p>")
    for exp in report.experiments:
        body.append(f"<h2>{e(exp.name)}</h2>")
        body.append(f'<p class="meta">slots: {e(", ".join(exp.slots) or "-")} &middot; {e(exp.start)} .. {e(exp.end)} '
                    f"&middot; {exp.visitors:,} visitors &middot; {exp.exposures:,} exposures</p>")
        header, *rows = _table(exp, bool(report.conversion_files))
        body.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>")
        for cells in rows:
            body.append("<tr>" + "".join(
                f'<td class="n">{e(c)}</td>' if i in _RIGHT else f"<td>{e(c)}</td>" for i, c in enumerate(cells)
            ) + "</tr>")
        body.append("</tbody></table>")
        srm_class = "ok" if exp.srm is None or not exp.srm.flagged else "bad"
        body.append(f'<p class="{srm_class}">{e(srm_line(exp.srm))}</p>')
        body.extend(f'<p class="warn">warning: {e(w)}</p>' for w in exp.warnings)
        chart = _svg_chart(exp)
        if chart:
            body.append(f'<figure>{chart}<figcaption class="meta">Dot: conversion rate; whiskers: its 95% Wilson '
                        "interval; dashed line: the control's rate. Green / red: the uplift's 95% interval is "
                        "above / below zero.</figcaption></figure>")
    for bad in report.malformed:
        body.append(f'<h2 class="warn">{e(bad.file)}: {bad.count:,} malformed line(s) skipped</h2><ul>')
        body.extend(f"<li><code>{e(x)}</code></li>" for x in bad.examples)
        body.append("</ul>")
    body.append('<h2>Methods</h2><ul class="methods">')
    body.extend(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in report.methods.items())
    body.append("<li>p-values are not adjusted for several arms or repeated looks; "
                "a flagged SRM means the arms are not comparable.</li></ul>")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>edgeproxy report</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


# ---------------------------------------------------------------------------
# 5. The command
# ---------------------------------------------------------------------------
def run_report(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``edgeproxy report``: 0 when the report was made, 2 when an input is
    unreadable (``--weights`` errors raise ``SettingsError``: also 2)."""
    out = out or sys.stdout
    err = err or sys.stderr
    weights = parse_weights(getattr(args, "weights", None) or ())
    try:
        slot_weights = weights_from_slots(Path(args.slots)) if getattr(args, "slots", None) else None
        exposures, conversions = sort_logs([Path(p) for p in args.logs])
        report = build_report(exposures, conversions, weights=weights, slot_weights=slot_weights)
    except ReportInputError as exc:
        print(f"edgeproxy report: {exc}", file=err)
        return 2
    if getattr(args, "html", None):
        target = Path(args.html)
        try:
            target.write_text(render_html(report), encoding="utf-8")
        except OSError as exc:
            print(f"edgeproxy report: {target}: cannot write: {exc.strerror or exc}", file=err)
            return 2
        print(f"edgeproxy report: wrote {target}", file=err)
    out.write(to_json(report) if getattr(args, "json", False) else format_text(report))
    return 0
