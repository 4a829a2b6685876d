"""What edgeproxy says it did during a run, from its admin ``/metrics``.

Scraped just before and just after each closed-loop run (outside the CPU
window), the difference shows whether the requests were really personalised
(a proxy that fell back to the origin's bytes under load would look cheap for
the wrong reason), the slot outcomes and fallback reasons, the cache statuses,
and the mean wall time of each pipeline stage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Prometheus text exposition -> {(name, sorted labels): value}."""
    out: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = value
    return out


def _by(delta: Samples, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, labels), v in delta.items():
        if n == name and v:
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out


def summarise(before: Samples, after: Samples) -> dict:
    """The run's share of each counter, by the label that matters."""
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    sums = _by(delta, "edgeproxy_stage_duration_seconds_sum", "stage")
    counts = _by(delta, "edgeproxy_stage_duration_seconds_count", "stage")
    return {
        "requests_by_personalised": _by(delta, "edgeproxy_requests_total", "personalised"),
        "slot_outcomes": _by(delta, "edgeproxy_slot_outcomes_total", "outcome"),
        "fallbacks": _by(delta, "edgeproxy_fallbacks_total", "reason"),
        "cache": _by(delta, "edgeproxy_cache_lookups_total", "status"),
        "stage_mean_ms": {stage: sums[stage] / n * 1e3 for stage, n in counts.items() if n and stage in sums},
    }


def describe(summary: Mapping) -> str:
    """One line: personalised share, outcomes, fallbacks, cache, stage means."""
    parts = []
    req = summary.get("requests_by_personalised") or {}
    total = sum(req.values())
    if total:
        parts.append("personalised " + ", ".join(f"{k} {v / total:.1%}" for k, v in sorted(req.items())))
    if summary.get("slot_outcomes"):
        parts.append("slots " + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(summary["slot_outcomes"].items())))
    if summary.get("fallbacks"):
        parts.append("FALLBACKS " + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(summary["fallbacks"].items())))
    if summary.get("cache"):
        parts.append("cache " + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(summary["cache"].items())))
    if summary.get("stage_mean_ms"):
        parts.append("mean ms " + " ".join(f"{k} {v:.2f}" for k, v in summary["stage_mean_ms"].items()))
    return "; ".join(parts) or "no edgeproxy metrics"
