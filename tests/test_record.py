"""record.Metrics: per-request counts gathered in plain dicts and bucket
lists, flushed into the Prometheus series; the exposition must be what
prometheus_client's own per-observation calls would give."""

from __future__ import annotations

import random
import time
import types

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from edgeproxy import record
from edgeproxy.record import FLUSH_EVERY, LATENCY_BUCKETS, STAGE_BUCKETS, Metrics, Record

# Back-dated start times: each request's total latency is one of these
# (the clock observe() reads is fixed at NOW), below, on, between and past
# the bounds.
NOW = 1_000.0
AGES = (0.0001, 0.0005, 0.0007, 0.004, 0.04, 3.0, 20.0)


def _records(n: int, seed: int = 7, observe=None) -> list[tuple[Record, float]]:
    """``n`` finished requests, each given to ``observe`` as soon as made."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        rec = Record(method=rnd.choice(["GET", "HEAD", "POST", "BREW"]), path="/")
        rec.status = rnd.choice([200, 200, 304, 502])
        age = rnd.choice(AGES)
        rec.started = NOW - age
        if i % 3:
            rec.add("classify", rnd.choice([0.00002, 0.00003, 0.0001, 0.7]))
            rec.add("rewrite", rnd.random() / 1000)
            rec.personalised = True
            rec.variants["hero"] = rnd.choice(["a", None])
        rec.add("origin", rnd.random() / 100)
        rec.cache = rnd.choice(["BYPASS", "HIT", "MISS"])
        out.append((rec, age))
        if observe is not None:
            observe(rec)
    return out


def _series(registry: CollectorRegistry, prefix: str) -> dict[str, float]:
    text = generate_latest(registry).decode()
    lines = [line for line in text.splitlines() if line.startswith(prefix) and "_created" not in line]
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines}


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal series; sums may differ in the last bits (added in another order)."""
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-9 * max(1.0, abs(b[k])) for k in a)


def test_bucketed_histograms_expose_what_per_observation_calls_would(monkeypatch):
    monkeypatch.setattr(record, "time", types.SimpleNamespace(perf_counter=lambda: NOW, time=time.time, thread_time=time.thread_time))
    m = Metrics()
    records = _records(3 * FLUSH_EVERY + 5, observe=m.observe)
    m.flush()
    # The same observations through prometheus_client's own observe().
    ref = CollectorRegistry()
    latency = Histogram("edgeproxy_request_duration_seconds", "x", ["personalised"], buckets=LATENCY_BUCKETS, registry=ref)
    stage = Histogram("edgeproxy_stage_duration_seconds", "x", ["stage"], buckets=STAGE_BUCKETS, registry=ref)
    added = Histogram("edgeproxy_added_latency_seconds", "x", buckets=LATENCY_BUCKETS, registry=ref)
    for rec, age in records:
        for name, secs in rec.timings.items():
            stage.labels(name).observe(secs)
        if "classify" in rec.timings:
            added.observe(rec.timings["classify"] + rec.timings.get("choose", 0.0) + rec.timings.get("rewrite", 0.0))
        latency.labels("yes" if rec.personalised else "no").observe(NOW - (NOW - age))
    got = _series(m.registry, "edgeproxy_stage_duration_seconds")
    assert got and _same(got, _series(ref, "edgeproxy_stage_duration_seconds"))
    got = _series(m.registry, "edgeproxy_added_latency_seconds")
    assert got and _same(got, _series(ref, "edgeproxy_added_latency_seconds"))
    got = _series(m.registry, "edgeproxy_request_duration_seconds")
    assert got and _same(got, _series(ref, "edgeproxy_request_duration_seconds"))
    assert sum(_series(m.registry, "edgeproxy_request_duration_seconds_count").values()) == len(records)


def test_counts_reach_the_series_without_a_scrape_after_flush_every_requests():
    m = Metrics()
    _records(FLUSH_EVERY, observe=m.observe)
    assert sum(_series(m.registry, "edgeproxy_requests_total").values()) == FLUSH_EVERY
    assert not m._observed and not m._counts
