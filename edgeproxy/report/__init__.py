"""``edgeproxy report``: every experiment against its control (CONTRACT §7).

Per experiment and arm, from the JSON-lines logs ``events.EventLog`` writes
(any number of files, plain or ``.gz``, in any order: each file's kind is
recognised from its lines) or from the shop's warehouse:

- **visitors**: distinct visitor ids exposed to the arm.  A visitor belongs
  to the arm of their *first* exposure (earliest ``ts``) in the experiment;
  one seen in two arms of the same experiment (a changed split, slots of
  one experiment naming their arms differently, an id collision) stays in
  the first and is reported as a data-quality warning.
- **conversions**: those visitors with at least one conversion at or after
  their first exposure in that experiment (a conversion before it cannot be
  an effect of the arm).  ``value`` sums the values of those conversions.
- **rate** with a 95% Wilson interval; **uplift vs control**, absolute
  (Newcombe) and relative (Katz); a two-sided **p-value** (z, or Fisher's
  exact for small counts); **SRM**, sample-ratio mismatch against the
  intended split (``--weights``, ``--slots``, else equal), flagged at
  p < 0.001.

The package, stage by stage::

    logs.py       which file is which; what is wrong with a malformed line
    sql.py        the aggregation as one SQL query; sqlglot for other dialects
    aggregate.py  run it: DuckDB over the files (default), or --engine URL -> Counts
    stats.py      Wilson, Newcombe, Katz, z, Fisher, chi-square (pure functions)
    analyse.py    Counts -> Report (per arm: rates, uplifts, tests, SRM, always-valid p and interval)
    plan.py       --plan: visitors per arm, days at the observed traffic
    render.py     Report -> text, JSON, HTML
    cli.py        the command

From Python (the console calls this)::

    report = build_report([Path("exposures.jsonl")], [Path("conversions.jsonl")])
    report.to_json()

Malformed lines are skipped and counted; the first few are reported as
``file:line: reason``.  Exit status: 0 (also when SRM is flagged), 2 when an
input cannot be read or an option is malformed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .aggregate import DEFAULT_MEMORY_LIMIT, aggregate_engine, aggregate_files
from .analyse import (
    CONTROL,
    FISHER_MIN_EXPECTED,
    METHODS,
    SRM_ALPHA,
    ArmResult,
    Counts,
    DayCounts,
    ExperimentCounts,
    ExperimentResult,
    PlanSpec,
    Report,
    SrmResult,
    analyse,
    analyse_experiment,
    parse_weights,
    weights_from_slots,
)
from .cli import run_report
from .logs import MAX_EXAMPLES, Malformed, ReportInputError, log_kind, parse_ts, sort_logs
from .plan import Plan, make_plan
from .render import format_text, render_html, to_json
from .stats import (
    Z95,
    chi2_sf,
    chi_square_gof,
    fisher_exact_p,
    min_expected_cell,
    msprt_difference,
    newcombe_interval,
    regularized_gamma_q,
    risk_ratio_interval,
    wilson_interval,
    visitors_per_arm,
    z_test_p,
)


def build_report(
    exposures: Path | Sequence[Path],
    conversions: Path | Sequence[Path] | None = None,
    *,
    weights: Mapping[str, Mapping[str, float]] | None = None,
    slot_weights: Mapping[str, Mapping[str, float]] | None = None,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    plan: PlanSpec | None = None,
) -> Report:
    """The report of the exposure and conversion log files, aggregated by
    DuckDB (``ReportInputError`` when a file cannot be read).  ``weights``
    (``--weights``) win over ``slot_weights`` (``--slots``); without
    either, an equal split.  Without conversion files, visitors and SRM only."""
    exposures = [exposures] if isinstance(exposures, Path) else list(exposures)
    conversions = [conversions] if isinstance(conversions, Path) else list(conversions or ())
    counts = aggregate_files(exposures, conversions, memory_limit=memory_limit)
    return analyse(counts, exposure_files=[str(p) for p in exposures], conversion_files=[str(p) for p in conversions],
                   with_conversions=bool(conversions), weights=weights, slot_weights=slot_weights, plan=plan)


def build_report_from_engine(
    url: str,
    *,
    weights: Mapping[str, Mapping[str, float]] | None = None,
    slot_weights: Mapping[str, Mapping[str, float]] | None = None,
    plan: PlanSpec | None = None,
) -> Report:
    """The report of the ``exposures`` and ``conversions`` tables behind
    ``url`` (``postgresql://…`` or ``duckdb:///file.db``)."""
    from .aggregate import _redact

    counts = aggregate_engine(url)
    engine = "postgresql" if url.lower().startswith("postgres") else "duckdb"
    return analyse(counts, exposure_files=[f"{_redact(url)} exposures"], conversion_files=[f"{_redact(url)} conversions"],
                   with_conversions=True, weights=weights, slot_weights=slot_weights, engine=engine, plan=plan)


__all__ = [
    "CONTROL", "FISHER_MIN_EXPECTED", "MAX_EXAMPLES", "METHODS", "SRM_ALPHA", "Z95",
    "ArmResult", "Counts", "Plan", "PlanSpec", "DayCounts", "ExperimentCounts", "ExperimentResult", "Malformed", "Report",
    "ReportInputError", "SrmResult",
    "aggregate_engine", "aggregate_files", "analyse", "analyse_experiment", "build_report",
    "build_report_from_engine", "chi2_sf", "chi_square_gof", "fisher_exact_p", "format_text", "log_kind", "make_plan", "msprt_difference",
    "min_expected_cell", "newcombe_interval", "parse_ts", "parse_weights", "regularized_gamma_q", "render_html",
    "risk_ratio_interval", "run_report", "sort_logs", "to_json", "visitors_per_arm", "weights_from_slots", "wilson_interval",
    "z_test_p",
]
