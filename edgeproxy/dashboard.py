"""The built-in dashboard's data: the last 15 minutes, second by second.

``History`` is a ring of per-second aggregates, fed by ``record.Metrics.flush``
with exactly the counts and observations it moves into the Prometheus
series (at least once a second, and at every scrape), so the charts and
``/metrics`` are computed from the same numbers; the request path pays
nothing for it.  ``totals`` reads the Prometheus registry that ``/metrics``
serves, so the "since start" figures on the page equal ``/metrics`` exactly,
also with ``--workers N`` (the registry then sums every worker).  The charts
come from the ring of the process serving the admin port: with
``--workers N`` that is worker 0, about 1/N of the traffic (the page says so).

Percentiles are computed the way Prometheus' ``histogram_quantile`` does
(linear within a bucket; the +Inf bucket gives the last finite bound), from
the same buckets, so a Grafana panel over the same window shows the same value.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Iterable, Sequence
from typing import Any

WINDOW_S = 900  # 15 minutes
DEFAULT_STEP_S = 10
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
STAGES = ("classify", "choose", "origin", "rewrite")
# A cache status (before any "+RENDER") that means: answered from memory.
CACHE_HITS = frozenset({"HIT", "STALE", "COALESCED", "REVALIDATED"})
# Fallback reasons the pipeline sets when the origin failed (502/504):
# origin errors, not personalisation failing open.
ORIGIN_ERROR_PREFIX = "origin-Upstream"
# edgeproxy_refused_total reasons that are load shedding (503 + Retry-After).
SHED_REASONS = frozenset({"in_flight", "queue_delay", "connections"})


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """Prometheus' ``histogram_quantile`` over per-bucket (not cumulative)
    ``counts``; ``counts[-1]`` is the +Inf bucket.  None without data."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    cumulative = 0.0
    for i, count in enumerate(counts):
        if cumulative + count >= rank:
            if i == len(bounds):  # the +Inf bucket
                return bounds[-1]
            lower = bounds[i - 1] if i > 0 else 0.0
            if count <= 0:
                return bounds[i]
            return lower + (bounds[i] - lower) * (rank - cumulative) / count
        cumulative += count
    return bounds[-1]


def is_cache_hit(status: str) -> bool:
    return status.split("+", 1)[0] in CACHE_HITS


def is_origin_error(reason: str) -> bool:
    return reason.startswith(ORIGIN_ERROR_PREFIX)


@dataclasses.dataclass(slots=True)
class _Second:
    t: int
    requests: int = 0
    fail_open: int = 0
    origin_errors: int = 0
    cache_lookups: int = 0
    cache_hits: int = 0
    total: list[int] | None = None
    added: list[int] | None = None
    stages: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    variants: collections.Counter = dataclasses.field(default_factory=collections.Counter)


class History:
    """Per-second aggregates of the last ``WINDOW_S`` seconds (see module doc)."""

    def __init__(self, latency_bounds: Sequence[float], stage_bounds: Sequence[float], *, window_s: int = WINDOW_S) -> None:
        self.latency_bounds = tuple(latency_bounds)
        self.stage_bounds = tuple(stage_bounds)
        self.window_s = window_s
        self._seconds: collections.deque[_Second] = collections.deque(maxlen=window_s + 1)

    def _current(self, now: float) -> _Second:
        t = int(now)
        if not self._seconds or self._seconds[-1].t != t:
            self._seconds.append(_Second(t, total=[0] * (len(self.latency_bounds) + 1), added=[0] * (len(self.latency_bounds) + 1)))
        return self._seconds[-1]

    def add(self, now: float, counts: dict[tuple[Any, tuple], int], observed: dict[tuple[Any, tuple], list]) -> None:
        """One flush of ``record.Metrics``: ``counts`` maps (metric, label
        values) to increments, ``observed`` maps (metric, label values) of a
        histogram to its observations already in that metric's buckets
        (a count per bucket, the last +Inf, then the sum of seconds)."""
        sec = self._current(now)
        for (metric, values), n in counts.items():
            name = metric._name
            if name == "edgeproxy_requests":
                sec.requests += n
            elif name == "edgeproxy_fallbacks":
                if is_origin_error(values[0]):
                    sec.origin_errors += n
                else:
                    sec.fail_open += n
            elif name == "edgeproxy_cache_lookups":
                sec.cache_lookups += n
                if is_cache_hit(values[0]):
                    sec.cache_hits += n
            elif name == "edgeproxy_slot_decisions":
                sec.variants[values] += n
        stage_bounds = self.stage_bounds
        assert sec.total is not None and sec.added is not None
        for (metric, values), buckets in observed.items():
            name = metric._name
            if name == "edgeproxy_request_duration_seconds":
                target = sec.total
            elif name == "edgeproxy_added_latency_seconds":
                target = sec.added
            elif name == "edgeproxy_stage_duration_seconds":
                target = sec.stages.get(values[0])
                if target is None:
                    target = sec.stages[values[0]] = [0] * (len(stage_bounds) + 1)
            else:
                continue
            for i, n in enumerate(buckets[:-1]):
                target[i] += n

    def series(self, now: float | None = None, step: int = DEFAULT_STEP_S) -> dict[str, Any]:
        """The window as ``step``-second points: requests/s, latency
        percentiles (ms), per-stage p95 (ms), fail-open, origin-error and
        cache-hit ratios (null where there was nothing to divide), and each
        slot's variant shares over the whole window."""
        now = time.time() if now is None else now
        step = max(1, int(step))
        end = int(now) + 1
        start = end - self.window_s
        points = (end - start) // step
        nl, ns = len(self.latency_bounds) + 1, len(self.stage_bounds) + 1
        buckets = [
            {"requests": 0, "fail_open": 0, "origin_errors": 0, "lookups": 0, "hits": 0, "total": [0] * nl, "added": [0] * nl,
             "stages": {s: [0] * ns for s in STAGES}}
            for _ in range(points)
        ]
        variants: collections.Counter = collections.Counter()
        for sec in self._seconds:
            if sec.t < start or sec.t >= end:
                continue
            b = buckets[min(points - 1, (sec.t - start) // step)]
            b["requests"] += sec.requests
            b["fail_open"] += sec.fail_open
            b["origin_errors"] += sec.origin_errors
            b["lookups"] += sec.cache_lookups
            b["hits"] += sec.cache_hits
            for i, n in enumerate(sec.total or ()):
                b["total"][i] += n
            for i, n in enumerate(sec.added or ()):
                b["added"][i] += n
            for stage, counts in sec.stages.items():
                into = b["stages"].setdefault(stage, [0] * ns)
                for i, n in enumerate(counts):
                    into[i] += n
            variants.update(sec.variants)

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        def ratio(a: int, b: int) -> float | None:
            return round(a / b, 4) if b else None

        lat, sb = self.latency_bounds, self.stage_bounds
        return {
            "t": [start + i * step for i in range(points)],
            "step_s": step,
            "window_s": self.window_s,
            "rps": [round(b["requests"] / step, 3) for b in buckets],
            "total_ms": {name: [ms(histogram_quantile(q, lat, b["total"])) for b in buckets] for name, q in QUANTILES},
            "added_ms": {name: [ms(histogram_quantile(q, lat, b["added"])) for b in buckets] for name, q in QUANTILES},
            "stage_p95_ms": {s: [ms(histogram_quantile(0.95, sb, b["stages"][s])) for b in buckets] for s in STAGES},
            "fail_open": [ratio(b["fail_open"], b["requests"]) for b in buckets],
            "origin_errors": [ratio(b["origin_errors"], b["requests"]) for b in buckets],
            "cache_hit": [ratio(b["hits"], b["lookups"]) for b in buckets],
            "variants": _shares(variants),
        }


def _shares(counts: collections.Counter) -> dict[str, dict[str, float]]:
    """{slot: {variant: share}} from {(slot, variant): count}."""
    per_slot: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for (slot, variant), n in counts.items():
        per_slot[slot][variant] = per_slot[slot].get(variant, 0) + n
    out = {}
    for slot in sorted(per_slot):
        total = sum(per_slot[slot].values())
        out[slot] = {v: round(n / total, 4) for v, n in sorted(per_slot[slot].items(), key=lambda kv: -kv[1])}
    return out


def totals(families: Iterable[Any], latency_bounds: Sequence[float], stage_bounds: Sequence[float]) -> dict[str, Any]:
    """The "since start" figures from the registry ``/metrics`` serves
    (``registry.collect()``): counts, ratios and percentiles, computed from
    the very samples a scrape returns."""
    by_name: dict[str, list] = collections.defaultdict(list)
    for family in families:
        for sample in family.samples:
            by_name[sample.name].append(sample)

    def total(name: str, keep=lambda labels: True) -> float:
        return sum(s.value for s in by_name.get(name, ()) if keep(s.labels))

    def quantiles(name: str, bounds: Sequence[float], keep=lambda labels: True) -> dict[str, float | None]:
        cumulative: dict[float, float] = collections.defaultdict(float)
        for s in by_name.get(name + "_bucket", ()):
            if keep(s.labels):
                cumulative[float(s.labels["le"])] += s.value
        if not cumulative:
            return {q: None for q, _ in QUANTILES}
        les = [*bounds, float("inf")]
        per_bucket, previous = [], 0.0
        for le in les:
            per_bucket.append(cumulative.get(le, previous) - previous)
            previous = cumulative.get(le, previous)
        return {n: (None if (v := histogram_quantile(q, bounds, per_bucket)) is None else round(v * 1000, 3)) for n, q in QUANTILES}

    requests = total("edgeproxy_requests_total")
    fallbacks = total("edgeproxy_fallbacks_total")
    origin_fallbacks = total("edgeproxy_fallbacks_total", lambda l: is_origin_error(l["reason"]))
    lookups = total("edgeproxy_cache_lookups_total")
    hits = total("edgeproxy_cache_lookups_total", lambda l: is_cache_hit(l["status"]))
    variants: collections.Counter = collections.Counter()
    for s in by_name.get("edgeproxy_slot_decisions_total", ()):
        variants[(s.labels["slot"], s.labels["variant"])] += s.value
    return {
        "requests": int(requests),
        "fail_open": int(fallbacks - origin_fallbacks),
        "origin_errors": int(total("edgeproxy_upstream_errors_total")),
        "cache_lookups": int(lookups),
        "cache_hits": int(hits),
        "cache_hit_ratio": round(hits / lookups, 4) if lookups else None,
        "total_ms": quantiles("edgeproxy_request_duration_seconds", latency_bounds),
        "added_ms": quantiles("edgeproxy_added_latency_seconds", latency_bounds),
        "stage_p95_ms": {
            stage: quantiles("edgeproxy_stage_duration_seconds", stage_bounds, lambda l, s=stage: l["stage"] == s)["p95"]
            for stage in STAGES
        },
        "variants": _shares(variants),
        # Overload: the worst loop lag of the last second (the largest of the
        # workers'), the in-flight limits summed, the 503s of load shedding.
        "loop_lag_ms": round(max((s.value for s in by_name.get("edgeproxy_event_loop_lag_seconds", ())), default=0.0) * 1000, 3),
        "in_flight_limit": int(total("edgeproxy_in_flight_limit")),
        "shed": int(total("edgeproxy_refused_total", lambda l: l["reason"] in SHED_REASONS)),
    }
