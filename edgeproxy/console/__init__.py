"""The merchandisers' console (CONTRACT §8): what is live, for whom, and how
it is doing, read-only, on the admin port.

===================== =====================================================
``/console/``         overview: every slot and variant file, whom it
                      targets in words, priority, cap, experiment, state
                      (``overview.py``)
``/console/preview``  preview as a visitor: the form, each slot's decision
                      and why, the page as that visitor beside the default
                      (``preview.py``)
``/console/page``     the page itself for the preview's iframes
``/console/live``     renders per variant, each experiment's report
                      (``live.py``)
``/console/state.json``  the catalog generation and live numbers the pages
                      poll (a changed generation reloads them)
===================== =====================================================

It is mounted on the admin app (``mount``), so it has the dashboard's
access rule: the admin port, bound to ``admin_host`` (127.0.0.1 by
default), never reachable through the proxy port.  Every page is GET,
changes nothing, and the files in slots/ stay the only source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import secrets
import time
from collections.abc import AsyncIterator

from aiohttp import web

from ..pipeline import State
from ..settings import Settings
from .live import SAMPLE_EVERY, RenderHistory, ReportCache, parse_mde, planned, slot_counts
from .overview import overview
from .pages import count_text, live_page, live_rows, overview_page, preview_page, shell, window_text
from .preview import PreviewForm, render_page

STATE = web.AppKey("edgeproxy_console_state", State)
HISTORY = web.AppKey("edgeproxy_console_history", RenderHistory)
REPORTS = web.AppKey("edgeproxy_console_reports", ReportCache)


def _csp(nonce: str) -> str:
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "frame-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
    )


_COMMON = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}


def _page(title: str, body: str, *, page: str, generation: int) -> web.Response:
    nonce = secrets.token_urlsafe(16)
    text = shell(title, body, nonce=nonce, page=page, generation=generation)
    headers = {**_COMMON, "Content-Security-Policy": _csp(nonce), "X-Frame-Options": "SAMEORIGIN"}
    return web.Response(text=text, content_type="text/html", charset="utf-8", headers=headers)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


async def overview_view(request: web.Request) -> web.Response:
    state = request.app[STATE]
    catalog = state.catalog.current
    now = _now()
    return _page("Overview", overview_page(overview(catalog, now), now), page="overview", generation=catalog.generation)


def share_url(request: web.Request, form: PreviewForm) -> str:
    query = form.query()
    return f"{request.scheme}://{request.host}/console/preview" + (f"?{query}" if query else "")


async def preview_view(request: web.Request) -> web.Response:
    state = request.app[STATE]
    catalog = state.catalog.current
    form = PreviewForm.parse(request.query, _now())
    if any(not value for value in request.query.values()):
        # A submitted form sends its empty fields too: the link to share
        # is the short one.
        raise web.HTTPFound("/console/preview" + (f"?{form.query()}" if form.query() else ""))
    decision, trace = form.decide(catalog, holdout=state.settings.holdout)
    body = preview_page(form, trace, form.passed_over(catalog, decision), share_url=share_url(request, form))
    return _page("Preview", body, page="preview", generation=catalog.generation)


def proxy_base(request: web.Request, settings: Settings) -> str:
    """Where the preview page's relative links and assets load from: the
    proxy port, on the host name the browser reached the admin port by
    (when the proxy listens on all addresses); the origin when the proxy's
    port is not known (``--port 0``)."""
    if not settings.port:
        return settings.upstream.rstrip("/") + "/"
    host = settings.host
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = host == ""
    if unspecified:
        host = request.url.host or "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/"


async def page_view(request: web.Request) -> web.Response:
    """The page for one of the preview's iframes (``view=visitor`` or
    ``view=default``), sandboxed: the shop's scripts run in an opaque
    origin, never with the admin port's."""
    state = request.app[STATE]
    form = PreviewForm.parse(request.query, _now())
    decision = None
    if request.query.get("view") != "default":
        decision, _trace = form.decide(state.catalog.current, holdout=state.settings.holdout)
    rendered = await render_page(state, form, decision, base=proxy_base(request, state.settings))
    headers = {
        **_COMMON,
        "Content-Security-Policy": "sandbox allow-scripts; frame-ancestors 'self'",
        "Content-Type": rendered.content_type,
    }
    if rendered.outcomes:
        headers["X-Edge-Console-Outcomes"] = ",".join(f"{k}={v}" for k, v in rendered.outcomes.items())
    if rendered.note:
        headers["X-Edge-Console-Note"] = rendered.note
    return web.Response(status=rendered.status, body=rendered.body, headers=headers)


async def _live_numbers(request: web.Request):
    state = request.app[STATE]
    history = request.app[HISTORY]
    counts = slot_counts(state.metrics)
    history.sample(counts)
    return counts, history.recent(counts)


async def live_view(request: web.Request) -> web.Response:
    state = request.app[STATE]
    catalog = state.catalog.current
    counts, recent = await _live_numbers(request)
    served = {name: [v.id for v in slot.variants] for name, slot in catalog.slots.items()}
    mde, mde_problem = parse_mde(request.query.get("mde"))
    report = None
    if state.settings.exposure_log is not None:
        if state.events is not None:
            await state.events.flush()  # the report reads what the proxy logged so far
        read, computed = await request.app[REPORTS].get(state.settings)
        report = planned(read, mde)
        if report is not None:
            report["computed"] = dt.datetime.fromtimestamp(computed, dt.timezone.utc).strftime("%H:%M:%S UTC")
    started = dt.datetime.fromtimestamp(request.app[HISTORY].started, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = live_page(live_rows(served, counts, recent), recent, report, started=started, mde=mde, mde_problem=mde_problem)
    return _page("Live", body, page="live", generation=catalog.generation)


async def state_json(request: web.Request) -> web.Response:
    state = request.app[STATE]
    counts, recent = await _live_numbers(request)
    data = {
        "generation": state.catalog.current.generation,
        "renders": {f"{s}/{v}": count_text(n) for (s, v), n in counts.items()},
        "recent": {f"{s}/{v}": count_text(n) for (s, v), n in recent.counts.items()},
        "window": window_text(recent.seconds),
    }
    return web.json_response(data, headers=_COMMON)


async def _sampler(app: web.Application) -> AsyncIterator[None]:
    """Snapshot the render counters every ``SAMPLE_EVERY`` seconds, so "the
    last 5 minutes" is there when someone opens the page."""
    state, history = app[STATE], app[HISTORY]

    async def run() -> None:
        while True:
            history.sample(slot_counts(state.metrics), time.time())
            await asyncio.sleep(SAMPLE_EVERY)

    task = asyncio.ensure_future(run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _to_console(request: web.Request) -> web.Response:
    raise web.HTTPFound("/console/")


def build_console(state: State) -> web.Application:
    """The console as a sub-application (mounted at ``/console``)."""
    app = web.Application()
    app[STATE] = state
    app[HISTORY] = RenderHistory()
    app[REPORTS] = ReportCache()
    app.router.add_get("/", overview_view)
    app.router.add_get("/preview", preview_view)
    app.router.add_get("/page", page_view)
    app.router.add_get("/live", live_view)
    app.router.add_get("/state.json", state_json)
    app.cleanup_ctx.append(_sampler)
    return app


def mount(app: web.Application, state: State) -> None:
    """Add the console to the admin ``app`` under ``/console/``."""
    app.router.add_get("/console", _to_console)
    app.add_subapp("/console", build_console(state))


__all__ = ["build_console", "mount"]
