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

The experiment report is ``edgeproxy report`` on the configured exposure and
conversion logs, through ``experiment_report``: the one function to re-point
when the report's engine changes.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import time
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
def experiment_report(settings: Settings) -> dict[str, Any] | None:
    """``edgeproxy report --json --slots SLOTS EXPOSURES CONVERSIONS`` on the
    proxy's own logs, as a dict; ``None`` without an exposure log.

    The adapter the console's Live page reads: it depends only on the JSON
    shape of the report (``experiments[].arms[]`` with ``visitors``,
    ``conversions``, ``rate``, ``rate_ci``, ``abs_uplift``, ``rel_uplift``,
    ``p_value``; ``srm.flagged``), not on how the report is computed.
    Reads files: call it off the event loop.
    """
    from .. import report

    if settings.exposure_log is None:
        return None
    exposures = Path(settings.exposure_log)
    conversions = Path(settings.conversion_log) if settings.conversion_log is not None else None
    if not exposures.is_file():
        return {"experiments": [], "note": f"{exposures}: no exposure yet"}
    logs = [exposures] + ([conversions] if conversions is not None and conversions.is_file() else [])
    try:
        weights = report.weights_from_slots(Path(settings.slots))
        exp_logs, conv_logs = report.sort_logs(logs)
        result = report.build_report(exp_logs, conv_logs, slot_weights=weights)
    except report.ReportInputError as exc:
        return {"experiments": [], "error": str(exc)}
    return result.to_dict()


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
    """``experiment_report`` for the Live page, recomputed only when a log
    changed, and, when computing it takes a while (a month of logs), at
    most once per ten times that long: opening the page often never keeps
    a core busy re-reading the logs.  One computation at a time."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._stamps: tuple | None = None
        self._value: dict[str, Any] | None = None
        self._at = 0.0
        self._took = 0.0

    async def get(self, settings: Settings) -> tuple[dict[str, Any] | None, float]:
        """The report and when it was computed (POSIX seconds)."""
        async with self._lock:
            stamps = _log_stamps(settings)
            fresh = stamps == self._stamps or (self._took > 1.0 and time.time() - self._at < 10 * self._took)
            if self._stamps is None or not fresh:
                started = time.perf_counter()
                self._value = await asyncio.to_thread(experiment_report, settings)
                self._took = time.perf_counter() - started
                self._stamps, self._at = stamps, time.time()
            return self._value, self._at
