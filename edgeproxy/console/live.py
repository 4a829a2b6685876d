"""How the variants are doing: renders per variant, and each experiment's report.

Renders come from the ``edgeproxy_slot_decisions`` counter, read the way
``/metrics`` reads it (the process's registry, or every worker's files with
``--workers N``), so the console and a Prometheus scrape never disagree.
"Since start" is the counter itself; "the last 5 minutes" is the counter
now minus a snapshot taken about 5 minutes ago.  ``RenderHistory`` keeps
those snapshots (one every ``SAMPLE_EVERY`` seconds, from a task the
console starts with the admin app, and one at each look), so the window is
there even when nobody had the page open.  Until the console has run that
long, the window is what it has seen, and the page says so.

The experiment report is ``edgeproxy report --plan`` on the configured
exposure and conversion logs, through the report package's Python API
(``read_report`` and ``planned``, together ``experiment_report``): the
numbers are the report's own, never recomputed here.  The console adds
only the sample-size ``progress`` (visitors so far against the plan's
visitors per arm, and the days left at the observed pace).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, multiprocess

from ..record import Metrics
from ..settings import Settings

WINDOW_S = 300.0  # "the last 5 minutes"
SAMPLE_EVERY = 10.0  # seconds between background snapshots
SLOT_SERIES = "edgeproxy_slot_decisions"

Counts = dict[tuple[str, str], float]  # (slot, variant or "default") -> renders


def slot_counts(metrics: Metrics) -> Counts:
    """Renders per (slot, variant) since the proxy started: the values of
    ``edgeproxy_slot_decisions_total`` that ``/metrics`` would print now."""
    metrics.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        families = multiprocess.MultiProcessCollector(registry).collect()
    else:
        families = metrics.slots.collect()
    counts: Counts = {}
    for family in families:
        if family.name != SLOT_SERIES:
            continue
        for sample in family.samples:
            if sample.name == SLOT_SERIES + "_total":
                key = (sample.labels["slot"], sample.labels["variant"])
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


@dataclasses.dataclass(frozen=True, slots=True)
class Window:
    """Renders over the last ``seconds`` (at most ``WINDOW_S``)."""

    counts: Counts
    seconds: float


class RenderHistory:
    """Timestamped snapshots of ``slot_counts``, the last ~``2 * WINDOW_S``
    seconds of them."""

    def __init__(self, *, window: float = WINDOW_S, every: float = SAMPLE_EVERY) -> None:
        self.window = window
        self.every = every
        self.started = time.time()
        self._snapshots: collections.deque[tuple[float, Counts]] = collections.deque(maxlen=int(2 * window / every) + 4)

    def sample(self, counts: Counts, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if self._snapshots and now - self._snapshots[-1][0] < self.every / 2:
            return  # one look per half period is plenty
        self._snapshots.append((now, counts))

    def recent(self, counts: Counts, now: float | None = None) -> Window:
        """``counts`` minus the newest snapshot at least ``window`` old (or
        the oldest one, when none is that old yet)."""
        now = time.time() if now is None else now
        base: tuple[float, Counts] | None = None
        for t, snap in self._snapshots:
            if now - t >= self.window:
                base = (t, snap)
            else:
                break
        if base is None:
            base = self._snapshots[0] if self._snapshots else (self.started, {})
        t, snap = base
        delta = {key: value - snap.get(key, 0.0) for key, value in counts.items()}
        return Window(delta, max(0.0, now - t))


# ---------------------------------------------------------------------------
# The experiment report (CONTRACT §7)
# ---------------------------------------------------------------------------
DEFAULT_MDE = 0.10  # relative: the smallest change worth detecting, unless the page's ?mde= says otherwise


@dataclasses.dataclass(frozen=True, slots=True)
class LogReport:
    """``edgeproxy report`` on the proxy's own logs, before any plan: what
    ``ReportCache`` keeps.  ``report`` is None with a ``note`` (nothing
    logged yet) or an ``error`` (a log cannot be read)."""

    report: Any = None  # edgeproxy.report.Report
    note: str = ""
    error: str = ""


def read_report(settings: Settings) -> LogReport | None:
    """``edgeproxy report --slots SLOTS EXPOSURES CONVERSIONS`` through the
    report package's Python API (``build_report``); ``None`` without an
    exposure log.  Reads files: call it off the event loop."""
    from .. import report

    if settings.exposure_log is None:
        return None
    exposures = Path(settings.exposure_log)
    conversions = Path(settings.conversion_log) if settings.conversion_log is not None else None
    if not exposures.is_file():
        return LogReport(note=f"{exposures}: no exposure yet")
    logs = [exposures] + ([conversions] if conversions is not None and conversions.is_file() else [])
    try:
        weights = report.weights_from_slots(Path(settings.slots))
        exp_logs, conv_logs = report.sort_logs(logs)
        return LogReport(report.build_report(exp_logs, conv_logs, slot_weights=weights))
    except report.ReportInputError as exc:
        return LogReport(error=str(exc))


def planned(read: LogReport | None, mde: float = DEFAULT_MDE) -> dict[str, Any] | None:
    """``read`` as ``edgeproxy report --json --plan --mde MDE`` prints it:
    each experiment with the plan the report makes for it (``PlanSpec``:
    the observed control rate as the baseline, the experiment's own arms,
    80 % power, alpha 0.05, and the days at its traffic).  An experiment
    whose control rate cannot move by ``mde`` (it converts everyone) has
    no plan, and says why in ``plan_problem``."""
    from .. import report

    if read is None:
        return None
    if read.report is None:
        return {"experiments": [], **({"note": read.note} if read.note else {}), **({"error": read.error} if read.error else {})}
    spec = report.PlanSpec(mde=mde)
    experiments, problems = [], {}
    for exp in read.report.experiments:
        try:
            plan = spec.for_experiment(exp)
        except ValueError:  # the control's rate moved by mde leaves 0..1
            rate = next((a.rate for a in exp.arms if a.arm == report.CONTROL), None) or 0.0
            plan, problems[exp.name] = None, (
                f"the control converts {100 * rate:.2f}% of its visitors, and a {100 * mde:g}% change of that "
                "is not a conversion rate: choose a smaller change")
        experiments.append(dataclasses.replace(exp, plan=plan))
    data = dataclasses.replace(read.report, experiments=experiments).to_dict()
    for exp in data["experiments"]:
        if exp["name"] in problems:
            exp["plan_problem"] = problems[exp["name"]]
    return data


def experiment_report(settings: Settings, *, mde: float = DEFAULT_MDE) -> dict[str, Any] | None:
    """``edgeproxy report --json --slots SLOTS --plan --mde MDE EXPOSURES
    CONVERSIONS`` on the proxy's own logs, as a dict; ``None`` without an
    exposure log.

    The adapter the console's Live page reads: the report package's public
    API (``build_report``, ``PlanSpec``, ``Report.to_dict``), never a copy
    of its statistics.  The page depends only on the report's JSON shape:
    ``experiments[]`` with ``arms[]`` (``visitors``, ``conversions``,
    ``rate``, ``rate_ci``, ``abs_uplift``, ``abs_uplift_ci``,
    ``rel_uplift``, ``p_value``, ``test``, ``seq_p_value``,
    ``seq_abs_uplift_ci``), ``srm``, ``plan`` (``visitors_per_arm``,
    ``visitors_per_day``, ``days``, ``days_so_far``, …) and the report's
    ``reading_rule``.  Reads files: call it off the event loop.
    """
    return planned(read_report(settings), mde)


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """How far an experiment is towards the sample its plan needs."""

    needed: int  # visitors per arm (the plan's)
    arms: tuple[tuple[str, int], ...]  # (arm, visitors so far)
    days_left: int | None  # None: no traffic to go by
    reached: bool  # every arm has its sample: the fixed-horizon p-value may be read now


def progress(exp: Mapping[str, Any]) -> Progress | None:
    """The sample-size progress of one experiment of the report's JSON
    (``None`` without a plan).

    The days left are the plan's: the days its whole sample takes at the
    observed traffic (the report's ``with_traffic``) less the days of logs
    so far, so the page's "in all", "so far" and "left" add up.  Until
    every arm has its sample, at least one day is left (with an uneven
    split the smaller arm is still short when the total is not).
    """
    plan = exp.get("plan")
    if not plan:
        return None
    needed = plan["visitors_per_arm"]
    arms = tuple((a["arm"], a["visitors"]) for a in exp.get("arms", []))
    reached = all(visitors >= needed for _arm, visitors in arms)
    days_left: int | None = None
    if reached:
        days_left = 0
    elif plan.get("days") is not None and plan.get("days_so_far") is not None:
        days_left = max(1, math.ceil(plan["days"] - plan["days_so_far"]))
    return Progress(needed, arms, days_left, reached)


def _log_stamps(settings: Settings) -> tuple:
    stamps = []
    for path in (settings.exposure_log, settings.conversion_log):
        try:
            st = os.stat(path) if path is not None else None
        except OSError:
            st = None
        stamps.append((st.st_size, st.st_mtime_ns) if st is not None else None)
    return tuple(stamps)


class ReportCache:
    """``read_report`` for the Live page, recomputed only when a log
    changed, and, when computing it takes a while (a month of logs), at
    most once per ten times that long: opening the page often never keeps
    a core busy re-reading the logs.  One computation at a time.  The plan
    is not cached: it is arithmetic on the report (``planned``), so each
    look may ask for its own MDE."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._stamps: tuple | None = None
        self._value: LogReport | None = None
        self._at = 0.0
        self._took = 0.0

    async def get(self, settings: Settings) -> tuple[LogReport | None, float]:
        """The report and when it was computed (POSIX seconds)."""
        async with self._lock:
            stamps = _log_stamps(settings)
            fresh = stamps == self._stamps or (self._took > 1.0 and time.time() - self._at < 10 * self._took)
            if self._stamps is None or not fresh:
                started = time.perf_counter()
                self._value = await asyncio.to_thread(read_report, settings)
                self._took = time.perf_counter() - started
                self._stamps, self._at = stamps, time.time()
            return self._value, self._at


MDE_RANGE = (0.1, 500.0)  # percent


def parse_mde(text: str | None) -> tuple[float, str]:
    """The Live page's ``?mde=`` (a relative change in percent: ``5`` is
    3 % -> 3.15 %) as a fraction, and a problem to show when it is not
    one (then the default)."""
    if text is None or text.strip() == "":
        return DEFAULT_MDE, ""
    try:
        percent = float(text.strip().rstrip("%"))
    except ValueError:
        percent = math.nan
    lo, hi = MDE_RANGE
    if not lo <= percent <= hi:
        return DEFAULT_MDE, f"{text!r} is not a change in percent between {lo:g} and {hi:g}: using {100 * DEFAULT_MDE:g} %"
    return percent / 100, ""
