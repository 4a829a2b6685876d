"""The admin app, on its own port (``--admin-port``, default 9000, bound to
``admin_host``, default 127.0.0.1): never reachable through the proxy port.

=============== =============================================================
``/healthz``    200 while the process runs (liveness)
``/readyz``     200 when the slots are loaded and the proxy is not draining;
                503 otherwise (readiness: take it out of the load balancer)
``/metrics``    Prometheus text format (``record.Metrics``)
``/dashboard``  a latency dashboard (p50/p90/p99 over the last minute and
                per-stage times), refreshed from ``/dashboard.json``
``/console/``   the merchandisers' console (``edgeproxy.console``)
=============== =============================================================
"""

from __future__ import annotations

import os
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from . import console
from .pipeline import State

ADMIN_STATE = web.AppKey("edgeproxy_admin_state", State)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    state = request.app[ADMIN_STATE]
    if state.draining:
        return web.Response(status=503, text="draining\n")
    catalog = state.catalog.current
    return web.Response(text=f"ready: {len(catalog.slots)} slots, {len(catalog)} variants, {len(catalog.errors)} rejected files\n")


async def metrics(request: web.Request) -> web.Response:
    state = request.app[ADMIN_STATE]
    catalog = state.catalog.current
    state.metrics.catalog_variants.set(len(catalog))
    state.metrics.catalog_errors.set(len(catalog.errors))
    m = state.metrics
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
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # --workers N: every worker's series, summed by prometheus_client.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(state.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[index]


async def dashboard_json(request: web.Request) -> web.Response:
    state = request.app[ADMIN_STATE]
    now = time.time()
    window = [(t, total, p) for t, total, p in state.metrics.recent if now - t <= 60]
    totals = sorted(total for _, total, _ in window)
    data = {
        "window_s": 60,
        "requests": len(window),
        "rps": round(len(window) / 60, 2),
        "personalised_share": round(sum(1 for *_, p in window if p) / len(window), 3) if window else 0,
        "latency_ms": {name: round(_percentile(totals, q) * 1000, 3) for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))},
        "in_flight": state.metrics.in_flight._value.get(),
        "draining": state.draining,
    }
    return web.json_response(data)


_DASHBOARD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgeproxy</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;color:#222}td,th{padding:.3em 1em;text-align:right}
th{text-align:left}h1{font-size:1.3em}.big{font-size:2em}</style></head>
<body><h1>edgeproxy: the last minute</h1>
<table><tbody id="t"></tbody></table>
<p>Prometheus metrics: <a href="/metrics">/metrics</a>. Readiness: <a href="/readyz">/readyz</a>.</p>
<script>
async function tick(){
  const r = await fetch('/dashboard.json'); const d = await r.json();
  const rows = [['requests', d.requests], ['requests/s', d.rps], ['personalised', (d.personalised_share*100).toFixed(1)+' %'],
    ['p50 ms', d.latency_ms.p50], ['p90 ms', d.latency_ms.p90], ['p99 ms', d.latency_ms.p99], ['max ms', d.latency_ms.max],
    ['in flight', d.in_flight], ['draining', d.draining]];
  document.getElementById('t').innerHTML = rows.map(([k,v]) => `<tr><th>${k}</th><td class="big">${v}</td></tr>`).join('');
}
tick(); setInterval(tick, 2000);
</script></body></html>
"""


async def dashboard(request: web.Request) -> web.Response:
    return web.Response(text=_DASHBOARD, content_type="text/html")


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
