"""Stage 6 — record: one per-request record, read once at the end.

Stages write facts (timings, variants, slot outcomes, cache status, the
fallback reason) onto the request's ``Record``; ``Metrics.observe`` turns it
into Prometheus series when the response is done.  Nothing on the request
path talks to Prometheus directly.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger("edgeproxy.access")

# Latency buckets in seconds: fine-grained below 10 ms, where the proxy lives.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Gathered observations are moved into the Prometheus series at every scrape
# and at least every this many requests.
FLUSH_EVERY = 256
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
STAGE_BUCKETS = (0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05)


@dataclasses.dataclass(slots=True)
class Record:
    """Facts about one request, written by the stages as they run."""

    method: str = ""
    path: str = ""
    started: float = dataclasses.field(default_factory=time.perf_counter)
    cpu_started: float = dataclasses.field(default_factory=time.thread_time)  # for the personalisation budget
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  # seconds
    status: int = 0
    personalised: bool = False
    html: bool = False
    cache: str = "BYPASS"
    fallback: str | None = None
    variants: dict[str, str | None] = dataclasses.field(default_factory=dict)
    outcomes: dict[str, str] = dataclasses.field(default_factory=dict)
    bytes_out: int = 0
    aborted: bool = False

    def add(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def fail_open(self, reason: str) -> None:
        """Note why personalisation was skipped (first reason wins)."""
        if self.fallback is None:
            self.fallback = reason

    def server_timing(self, *, total: float | None = None) -> str:
        """``Server-Timing`` (W3C) with the stages measured so far, in ms."""
        parts = [f"{name};dur={secs * 1000:.2f}" for name, secs in self.timings.items()]
        elapsed = (time.perf_counter() - self.started) if total is None else total
        parts.append(f"total;dur={elapsed * 1000:.2f}")
        if self.cache != "BYPASS":
            parts.append(f'cache;desc="{self.cache}"')
        return ", ".join(parts)


class Metrics:
    """The Prometheus series of one process (see docs/OPERATIONS.md)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "edgeproxy_requests", "Requests handled", ["method", "status", "personalised"], registry=r
        )
        self.latency = Histogram(
            "edgeproxy_request_duration_seconds",
            "Time to the last byte of the response",
            ["personalised"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage = Histogram(
            "edgeproxy_stage_duration_seconds", "Time per pipeline stage", ["stage"], buckets=STAGE_BUCKETS, registry=r
        )
        self.slots = Counter(
            "edgeproxy_slot_decisions", "Slot renders by variant (default = origin content)", ["slot", "variant"], registry=r
        )
        self.outcomes = Counter(
            "edgeproxy_slot_outcomes", "Rewriter outcome per slot", ["outcome"], registry=r
        )
        self.fallbacks = Counter("edgeproxy_fallbacks", "Responses served unpersonalised, by reason", ["reason"], registry=r)
        self.cache = Counter("edgeproxy_cache_lookups", "Upstream cache lookups by status", ["status"], registry=r)
        self.upstream_errors = Counter("edgeproxy_upstream_errors", "Origin failures", ["kind"], registry=r)
        self.refused = Counter(
            "edgeproxy_refused", "Requests and connections the traffic port answered itself (limits, deadlines, overload, methods)", ["reason"], registry=r
        )
        # multiprocess_mode applies with --workers N (prometheus_client's
        # multiprocess mode); a single process ignores it.
        self.in_flight = Gauge("edgeproxy_in_flight_requests", "Requests being handled", registry=r, multiprocess_mode="livesum")
        self.open_connections = Gauge(
            "edgeproxy_open_connections", "Client connections open on the traffic port (updated every second)", registry=r, multiprocess_mode="livesum"
        )
        self.catalog_variants = Gauge("edgeproxy_catalog_variants", "Live variants", registry=r, multiprocess_mode="max")
        self.catalog_errors = Gauge("edgeproxy_catalog_errors", "Slot files rejected at the last load", registry=r, multiprocess_mode="max")
        self.bytes_out = Counter("edgeproxy_response_bytes", "Body bytes sent to clients", registry=r)
        # Cache sizes, read from the caches when /metrics is scraped.
        self.cache_bytes = Gauge("edgeproxy_cache_bytes", "Bytes held by the upstream cache", registry=r, multiprocess_mode="livesum")
        self.cache_entries = Gauge("edgeproxy_cache_entries", "Responses held by the upstream cache", registry=r, multiprocess_mode="livesum")
        self.render_bytes = Gauge("edgeproxy_render_cache_bytes", "Bytes held by the render cache", registry=r, multiprocess_mode="livesum")
        self.render_entries = Gauge("edgeproxy_render_cache_entries", "Rendered pages held", registry=r, multiprocess_mode="livesum")
        self.render_overflows = Gauge(
            "edgeproxy_render_cache_overflows", "Rendered pages dropped because a URL had too many distinct decisions",
            registry=r, multiprocess_mode="livesum",
        )
        self.render_keys_per_url = Gauge(
            "edgeproxy_render_cache_max_keys_per_url", "Most distinct decisions cached for one URL", registry=r, multiprocess_mode="max"
        )
        self.events_written = Gauge(
            "edgeproxy_events_written", "Exposure and conversion lines written", ["log"], registry=r, multiprocess_mode="livesum"
        )
        self.events_dropped = Gauge(
            "edgeproxy_events_dropped", "Experiment events dropped (buffer full or disk failing)", registry=r, multiprocess_mode="livesum"
        )
        self._children: dict[tuple, object] = {}
        self._counts: dict[tuple, int] = {}
        self._observed: list[tuple] = []
        self._bytes_out = 0
        # A short in-memory window of recent latencies for the dashboard.
        self.recent: deque[tuple[float, float, bool]] = deque(maxlen=4096)

    def flush(self) -> None:
        """Move the counts gathered by ``observe`` into the Prometheus series."""
        counts, self._counts = self._counts, {}
        observed, self._observed = self._observed, []
        child = self._child
        for (metric, values), n in counts.items():
            child(metric, *values).inc(n)
        for metric, values, secs in observed:
            child(metric, *values).observe(secs)
        if self._bytes_out:
            self.bytes_out.inc(self._bytes_out)
            self._bytes_out = 0

    def _child(self, metric, *values: str):
        """``metric.labels(*values)``, memoised: ``labels()`` takes a lock and
        validates on every call, and this runs several times per request."""
        key = (metric._name, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def observe(self, rec: Record) -> None:
        """Count one finished request.  Plain dictionary increments here;
        ``flush()`` moves them into the Prometheus series (at each scrape and
        every ``FLUSH_EVERY`` requests), because prometheus_client takes a
        lock per ``inc``/``observe`` and a request touches a dozen series."""
        total = time.perf_counter() - rec.started
        personalised = "yes" if rec.personalised else "no"
        # A client may send any method token: keep the label set bounded.
        method = rec.method if rec.method in _METHODS else "OTHER"
        counts = self._counts
        key = (self.requests, (method, str(rec.status), personalised))
        counts[key] = counts.get(key, 0) + 1
        observed = self._observed
        observed.append((self.latency, (personalised,), total))
        for stage, secs in rec.timings.items():
            observed.append((self.stage, (stage,), secs))
        for slot, variant in rec.variants.items():
            key = (self.slots, (slot, variant or "default"))
            counts[key] = counts.get(key, 0) + 1
        for outcome in rec.outcomes.values():
            key = (self.outcomes, (outcome,))
            counts[key] = counts.get(key, 0) + 1
        if rec.fallback:
            key = (self.fallbacks, (rec.fallback,))
            counts[key] = counts.get(key, 0) + 1
        if rec.cache != "BYPASS":
            key = (self.cache, (rec.cache,))
            counts[key] = counts.get(key, 0) + 1
        self._bytes_out += rec.bytes_out
        if len(observed) >= FLUSH_EVERY:
            self.flush()
        self.recent.append((time.time(), total, rec.personalised))
        if log.isEnabledFor(logging.INFO):
            log.info(
                "%s %s %d %.2fms personalised=%s cache=%s fallback=%s variants=%s",
                rec.method, rec.path, rec.status, total * 1000, personalised, rec.cache, rec.fallback or "-",
                ",".join(f"{k}={v or 'default'}" for k, v in rec.variants.items()) or "-",
            )
