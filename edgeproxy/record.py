"""Stage 6 — record: one per-request record, read once at the end.

Stages write facts (timings, variants, slot outcomes, cache status, the
fallback reason) onto the request's ``Record``; ``Metrics.observe`` turns it
into Prometheus series and hands it to the access log (``accesslog.py``)
when the response is done: the one place a finished request is read.
Nothing on the request path talks to Prometheus or the log directly.
"""

from __future__ import annotations

import bisect
import dataclasses
import time
from collections import deque
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .dashboard import History

if TYPE_CHECKING:  # pragma: no cover
    from .accesslog import AccessLog
    from .model import RequestFacts

# Latency buckets in seconds: fine-grained below 10 ms, where the proxy lives.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Gathered counts are moved into the Prometheus series at every scrape and
# at least every this many requests.
FLUSH_EVERY = 64
_bisect = bisect.bisect_left
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
    request_id: str = ""  # X-Request-ID: the client's (validated) or one made here
    client: str | None = None  # the client address, for the access log (which never writes it raw)

    def identify(self, facts: RequestFacts) -> None:
        """Take the request id and client address from the request's facts."""
        self.request_id = facts.request_id
        self.client = facts.client_ip

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

    def __init__(self, registry: CollectorRegistry | None = None, *, access_log: AccessLog | None = None) -> None:
        self.access_log = access_log
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
        self.added = Histogram(
            "edgeproxy_added_latency_seconds",
            "The proxy's own time on a page load (classify + choose + rewrite), the part budget_ms bounds",
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
        # Read at scrape time from the settings and the process state.
        self.budget = Gauge(
            "edgeproxy_latency_budget_seconds", "The personalisation budget (budget_ms); 0 = none", registry=r, multiprocess_mode="max"
        )
        self.workers = Gauge("edgeproxy_workers", "Worker processes (--workers)", registry=r, multiprocess_mode="max")
        self.draining = Gauge("edgeproxy_draining", "1 while draining after SIGTERM", registry=r, multiprocess_mode="max")
        self.access_written = Gauge(
            "edgeproxy_access_log_written", "Access log lines written", registry=r, multiprocess_mode="livesum"
        )
        self.access_dropped = Gauge(
            "edgeproxy_access_log_dropped", "Access log lines dropped (queue full or sink failing)", registry=r,
            multiprocess_mode="livesum",
        )
        # Which build runs: the version and the rewriter's byte loop
        # ("compiled" or "pure", see edgeproxy.rewrite.native).
        from . import __version__
        from .rewrite import native

        self.build_info = Gauge(
            "edgeproxy_build_info", "Always 1; the labels say which build runs", ["version", "scanner"],
            registry=r, multiprocess_mode="max",
        )
        self.build_info.labels(version=__version__, scanner=native.ACTIVE).set(1)
        self._children: dict[tuple, object] = {}
        self._counts: dict[tuple, int] = {}
        # Histogram observations, already in buckets: (metric, label values)
        # -> [count per bucket (the last one +Inf)..., sum of seconds].
        self._observed: dict[tuple, list] = {}
        self._requests = 0
        self._bytes_out = 0
        # A short in-memory window of recent latencies (kept for callers of the old dashboard data).
        self.recent: deque[tuple[float, float, bool]] = deque(maxlen=4096)
        # Requests in ``pipeline.handle`` now: a plain int, copied into the
        # ``in_flight`` gauge at each flush and whenever it falls to 0, not
        # a locked inc() and dec() per request.
        self.active = 0
        # The last 15 minutes per second, for /dashboard (fed by flush()).
        self.history = History(LATENCY_BUCKETS, STAGE_BUCKETS)
        self._bounds = {id(self.latency): LATENCY_BUCKETS, id(self.added): LATENCY_BUCKETS, id(self.stage): STAGE_BUCKETS}

    def flush(self) -> None:
        """Move the counts gathered by ``observe`` into the Prometheus series:
        one locked ``inc`` per series and bucket touched since the last flush,
        not one ``observe`` per request and stage."""
        counts, self._counts = self._counts, {}
        observed, self._observed = self._observed, {}
        self._requests = 0
        self.history.add(time.time(), counts, observed)
        child = self._child
        for (metric, values), n in counts.items():
            child(metric, *values).inc(n)
        for (metric, values), buckets in observed.items():
            _add_buckets(child(metric, *values), buckets)
        if self._bytes_out:
            self.bytes_out.inc(self._bytes_out)
            self._bytes_out = 0
        self.in_flight.set(self.active)

    def _child(self, metric, *values: str):
        """``metric.labels(*values)``, memoised: ``labels()`` takes a lock and
        validates on every call, and this runs several times per request."""
        key = (metric._name, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values) if values else metric
        return child

    def _buckets_for(self, key: tuple) -> list:
        """A new bucket list for the series ``key`` = (metric, label values)."""
        buckets = self._observed[key] = [0] * (len(self._bounds[id(key[0])]) + 2)
        return buckets

    def _observe(self, metric, values: tuple, secs: float) -> None:
        key = (metric, values)
        buckets = self._observed.get(key)
        if buckets is None:
            bounds = self._bounds[id(metric)]
            buckets = self._observed[key] = [0] * (len(bounds) + 2)
        else:
            bounds = self._bounds[id(metric)]
        buckets[bisect.bisect_left(bounds, secs)] += 1
        buckets[-1] += secs

    def observe(self, rec: Record) -> None:
        """Count one finished request.  Plain dictionary and list increments
        here; ``flush()`` moves them into the Prometheus series (at each
        scrape and every ``FLUSH_EVERY`` requests), because prometheus_client
        takes a lock per ``inc``/``observe`` and a request touches a dozen
        series."""
        total = time.perf_counter() - rec.started
        personalised = "yes" if rec.personalised else "no"
        # A client may send any method token: keep the label set bounded.
        method = rec.method if rec.method in _METHODS else "OTHER"
        counts = self._counts
        key = (self.requests, (method, str(rec.status), personalised))
        counts[key] = counts.get(key, 0) + 1
        observed = self._observed
        key = (self.latency, (personalised,))
        buckets = observed.get(key) or self._buckets_for(key)
        buckets[_bisect(LATENCY_BUCKETS, total)] += 1
        buckets[-1] += total
        timings = rec.timings
        stage = self.stage
        for name, secs in timings.items():
            key = (stage, (name,))
            buckets = observed.get(key) or self._buckets_for(key)
            buckets[_bisect(STAGE_BUCKETS, secs)] += 1
            buckets[-1] += secs
        if "classify" in timings:  # a page load: the proxy's own share of its latency
            added = timings["classify"] + timings.get("choose", 0.0) + timings.get("rewrite", 0.0)
            self._observe(self.added, (), added)
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
        self._requests += 1
        if self._requests >= FLUSH_EVERY:
            self.flush()
        self.recent.append((time.time(), total, rec.personalised))
        if self.access_log is not None:
            self.access_log.add(rec, total)

    def started(self) -> None:
        """A request entered the pipeline."""
        self.active += 1

    def finished(self) -> None:
        """A request left the pipeline.  Idle is published at once, so the
        gauge never rests on a stale count between flushes."""
        self.active -= 1
        if not self.active:
            self.in_flight.set(0)

    def close(self) -> None:
        """Write out the access log (at shutdown, after the last request)."""
        if self.access_log is not None:
            self.access_log.close()


def _add_buckets(histogram, buckets: list) -> None:
    """Add bucketed observations (``Metrics._observe``'s lists) to a
    prometheus_client ``Histogram`` child: what ``observe()`` once per
    observation would have added.  Uses its ``_buckets`` and ``_sum`` values
    (prometheus_client's layout since 0.4; a test checks the exposition
    equals per-observation ``observe()``)."""
    for i, n in enumerate(buckets[:-1]):
        if n:
            histogram._buckets[i].inc(n)
    histogram._sum.inc(buckets[-1])
