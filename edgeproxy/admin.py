"""The admin app, on its own port (``--admin-port``, default 9000, bound to
``admin_host``, default 127.0.0.1): never reachable through the proxy port.

=============== =============================================================
``/healthz``    200 while the process runs (liveness)
``/readyz``     200 when the slots are loaded and the proxy is not draining;
                503 otherwise (readiness: take it out of the load balancer)
``/metrics``    Prometheus text format (``record.Metrics``)
``/dashboard``  the last 15 minutes as charts (latency against the budget,
                stages, requests/s, fail-open, origin errors, cache, variants),
                polling ``/dashboard.json`` every 2 s; no outside asset
``/console/``   the merchandisers' console (``edgeproxy.console``)
=============== =============================================================
"""

from __future__ import annotations

import os
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from . import console
from .dashboard import DEFAULT_STEP_S, totals
from .dashboard_page import DASHBOARD_HTML
from .pipeline import State
from .record import LATENCY_BUCKETS, STAGE_BUCKETS

ADMIN_STATE = web.AppKey("edgeproxy_admin_state", State)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    state = request.app[ADMIN_STATE]
    if state.draining:
        return web.Response(status=503, text="draining\n")
    catalog = state.catalog.current
    return web.Response(text=f"ready: {len(catalog.slots)} slots, {len(catalog)} variants, {len(catalog.errors)} rejected files\n")


def _refresh(state: State) -> None:
    """Bring every series up to date: the gauges read from the process
    state, and the counts ``observe`` gathered since the last flush."""
    catalog = state.catalog.current
    m = state.metrics
    m.catalog_variants.set(len(catalog))
    m.catalog_errors.set(len(catalog.errors))
    m.budget.set(state.settings.budget_s)
    m.workers.set(state.settings.workers)
    m.draining.set(1 if state.draining else 0)
    m.flush()
    if state.cache is not None:
        m.cache_bytes.set(state.cache.bytes)
        m.cache_entries.set(len(state.cache))
    if state.events is not None:
        es = state.events.stats
        m.events_written.labels("exposure").set(es.exposures_written)
        m.events_written.labels("conversion").set(es.conversions_written)
        m.events_dropped.set(es.dropped)
    if m.access_log is not None:
        m.access_written.set(m.access_log.stats.written)
        m.access_dropped.set(m.access_log.stats.dropped)
    if state.render_cache is not None:
        stats = state.render_cache.stats
        m.render_bytes.set(stats["bytes"])
        m.render_entries.set(stats["entries"])
        m.render_overflows.set(stats["key_overflows"])
        m.render_keys_per_url.set(stats["max_keys_per_url"])


def _registry(state: State) -> CollectorRegistry:
    """What ``/metrics`` serves: this process's registry, or with
    ``--workers N`` every worker's series summed by prometheus_client."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return state.metrics.registry


async def metrics(request: web.Request) -> web.Response:
    state = request.app[ADMIN_STATE]
    _refresh(state)
    body = generate_latest(_registry(state))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def dashboard_json(request: web.Request) -> web.Response:
    """The dashboard's data (``dashboard.History`` and ``dashboard.totals``);
    ``?step=N`` sets the chart resolution in seconds (default 10)."""
    state = request.app[ADMIN_STATE]
    _refresh(state)
    try:
        step = min(300, max(1, int(request.query.get("step", DEFAULT_STEP_S))))
    except ValueError:
        step = DEFAULT_STEP_S
    workers = state.settings.workers
    data = {
        "now": time.time(),
        "budget_ms": state.settings.budget_ms,
        "workers": workers,
        "charts_scope": "this process" if workers <= 1 else f"worker 0 of {workers} (about 1/{workers} of the traffic)",
        "draining": state.draining,
        "in_flight": state.metrics.active,
        "series": state.metrics.history.series(step=step),
        "totals": totals(_registry(state).collect(), LATENCY_BUCKETS, STAGE_BUCKETS),
    }
    return web.json_response(data, headers={"Cache-Control": "no-store"})


async def dashboard(request: web.Request) -> web.Response:
    return web.Response(text=DASHBOARD_HTML, content_type="text/html", headers={"Cache-Control": "no-store"})


async def _to_dashboard(request: web.Request) -> web.Response:
    raise web.HTTPFound("/dashboard")


def build_admin_app(state: State) -> web.Application:
    app = web.Application()
    app[ADMIN_STATE] = state
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/dashboard", dashboard)
    app.router.add_get("/dashboard.json", dashboard_json)
    app.router.add_get("/", _to_dashboard)
    console.mount(app, state)
    return app


__all__ = ["build_admin_app"]
