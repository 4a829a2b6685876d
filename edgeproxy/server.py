"""The proxy process: open the long-lived objects, listen, drain, stop.

``ProxyServer(settings)`` is what ``edgeproxy serve``, ``edgeproxy demo``
and the tests run::

    server = ProxyServer(settings)
    await server.start()          # slots loaded, ports bound, ready
    server.port, server.admin_port
    await server.stop()           # drain in-flight requests, flush, close

``serve(settings)`` runs one until SIGTERM/SIGINT (uvloop when installed);
with ``--workers N`` it starts N processes sharing the port (SO_REUSEPORT),
the first of them also serving the admin port.

Shutdown order (SIGTERM): ``/readyz`` turns 503, the listening socket
closes, in-flight requests get up to ``drain_timeout`` seconds to finish,
then the slot watcher, the upstream session and the geo database close.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from prometheus_client import Gauge

from . import classify as classifying
from .accesslog import open_access_log
from .admin import build_admin_app
from .catalog.watch import CatalogStore, watch
from .fetch import open_session
from .pipeline import BEACON_PATH, State, handle, preview_digest
from .record import Metrics
from .render_cache import RenderCache
from .errors import SettingsError
from .http.admission import NO_LIMIT, InFlightLimit, QueueDelay
from .settings import Settings, build_settings

log = logging.getLogger("edgeproxy.server")


def _open_cache(settings: Settings):
    """The shared upstream cache, when enabled and available."""
    if settings.cache_bytes <= 0:
        return None
    try:
        from .cache import UpstreamCache
    except ImportError:
        return None
    # The proxy's own cookies must not split a `Vary: Cookie` page per visitor.
    own = (settings.cookie_visitor, settings.cookie_session, settings.cookie_affinity, settings.cookie_cap)
    return UpstreamCache(settings.cache_bytes, vary_ignored_cookies=own)


def require_slots(settings: Settings) -> None:
    """A mistyped slots folder would serve an unpersonalised shop while every
    probe says ready: refuse to start instead."""
    if not Path(settings.slots).is_dir():
        raise SettingsError("slots", str(settings.slots), "no such folder (create it, even empty, or give --slots DIR)")


class ProxyServer:
    """One proxy process's server: the proxy port and (optionally) the admin port."""

    def __init__(self, settings: Settings, *, reuse_port: bool = False, admin: bool = True) -> None:
        self.settings = settings
        self.reuse_port = reuse_port
        self.with_admin = admin
        self.state: State | None = None
        self._runner: web.ServerRunner | None = None
        self._traffic = None  # http.protocol.TrafficServer with traffic_server = "protocols"
        self._admin_runner: web.AppRunner | None = None
        self._watcher: asyncio.Task | None = None
        self._flusher: asyncio.Task | None = None
        # The loop-lag probe (queueing-delay shedding, the adaptive in-flight
        # limit): the traffic server's, or this one for traffic_server = "aiohttp".
        self._admission = None

    @property
    def port(self) -> int:
        if self._traffic is not None:
            return self._traffic.port
        assert self._runner is not None, "Cannot read port before start()"
        return self._runner.addresses[0][1]

    @property
    def admin_port(self) -> int | None:
        if self._admin_runner is None:
            return None
        return self._admin_runner.addresses[0][1]

    async def start(self) -> None:
        s = self.settings
        require_slots(s)
        catalog = await asyncio.to_thread(CatalogStore, Path(s.slots), max_fragment_bytes=s.max_fragment_bytes)
        classifiers = await asyncio.to_thread(classifying.open_classifiers, s)
        await asyncio.to_thread(warm_up)
        state = State(
            settings=s,
            session=open_session(s),
            catalog=catalog,
            classifiers=classifiers,
            metrics=Metrics(access_log=open_access_log(s)),
            cache=_open_cache(s),
            render_cache=RenderCache(s.render_cache_bytes, keys_per_url=s.render_cache_keys_per_url) if s.render_cache_bytes > 0 else None,
            preview_digest=preview_digest(s),
        )
        if s.upstream_client == "protocols":
            from .http.upstream import open_pool

            state.origin = open_pool(s)
        if s.exposure_log or s.conversion_log:
            from .events import EventLog

            state.events = EventLog(s.exposure_log, s.conversion_log)
            await state.events.start()
        self.state = state
        try:
            await self._listen(state)
            if self.with_admin:
                admin = web.AppRunner(build_admin_app(state), handle_signals=False, access_log=None)
                await admin.setup()
                self._admin_runner = admin
                await web.TCPSite(admin, s.admin_host, s.admin_port, reuse_port=self.reuse_port or None).start()
        except BaseException:
            await self._close()
            raise
        self._watcher = asyncio.ensure_future(watch(catalog, s.reload_interval))
        self._flusher = asyncio.ensure_future(_flush_metrics(state, self._traffic, self._admission))
        log.info(
            "edgeproxy on %s:%d -> %s (admin %s), %d slots, %d variants",
            s.host, self.port, s.upstream, f"{s.admin_host}:{self.admin_port}" if self.with_admin else "off",
            len(catalog.current.slots), len(catalog.current),
        )

    async def _listen(self, state: State) -> None:
        s = self.settings
        if s.traffic_server == "protocols":
            from .http.protocol import Limits, TrafficServer

            limits = Limits(
                head_timeout=s.header_timeout,
                keepalive_timeout=s.keepalive_timeout,
                body_timeout=s.body_timeout,
                send_timeout=s.send_timeout,
                max_connections=s.max_connections,
                max_in_flight=s.max_in_flight,
                max_header_bytes=s.max_header_bytes,
                max_headers=s.max_headers,
                max_target_bytes=s.max_target_bytes,
                max_body_bytes=s.max_body_bytes,
                routes=((BEACON_PATH, s.beacon_max_body_bytes),),
                retry_after=s.retry_after,
                via=s.via,
                queue_delay_target=s.queue_delay_target_ms / 1000.0,
                queue_delay_interval=s.queue_delay_interval_ms / 1000.0,
                min_in_flight=s.min_in_flight,
                in_flight_lag_target=s.in_flight_lag_target_ms / 1000.0,
            )
            refused = state.metrics.refused
            traffic = TrafficServer(_bind(state), limits, on_refuse=lambda reason: refused.labels(reason).inc())
            self._traffic = traffic
            self._admission = traffic.queue_delay
            await traffic.start(s.host, s.port, reuse_port=self.reuse_port, backlog=s.backlog)
            return
        admission = _AiohttpAdmission(s, state)
        self._admission = admission.queue_delay
        server = web.Server(
            admission.wrap(_bind(state)),
            request_factory=_via_request_factory(s.via),
            handler_cancellation=True,
            access_log=None,
            max_line_size=16 * 1024,
            max_field_size=16 * 1024,
        )
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=s.drain_timeout)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, s.host, s.port, reuse_port=self.reuse_port or None, backlog=s.backlog)
        await site.start()
        admission.queue_delay.start()

    def reopen_logs(self) -> None:
        """Reopen the access log and the exposure and conversion logs by path
        at their next write (SIGHUP, after logrotate moved them)."""
        state = self.state
        if state is None:
            return
        if state.metrics.access_log is not None:
            state.metrics.access_log.reopen()
        if state.events is not None:
            state.events.reopen()
        log.info("SIGHUP: reopening the log files")

    async def stop(self) -> None:
        """Drain in-flight requests (up to ``drain_timeout``), then close."""
        if self.state is not None:
            self.state.draining = True
        await self._close()

    async def _close(self) -> None:
        if self._admission is not None:
            self._admission.stop()
            self._admission = None
        if self._traffic is not None:
            await self._traffic.close(self.settings.drain_timeout)  # stops listening, drains
            self._traffic = None
        if self._runner is not None:
            await self._runner.cleanup()  # stops listening, waits for handlers
            self._runner = None
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
            self._admin_runner = None
        if self.state is not None:
            state, self.state = self.state, None
            await state.session.close()
            await asyncio.to_thread(state.metrics.close)  # the access log's last lines
            if state.origin is not None:
                await state.origin.close()
            if state.events is not None:
                await state.events.close()  # flushes: nothing lost on a clean stop
            close = getattr(state.cache, "close", None)
            if callable(close):
                result = close()
                if asyncio.iscoroutine(result):
                    await result
            close = getattr(state.classifiers, "close", None)
            if callable(close):
                close()


# Tags slots are commonly put on: their end-tag scanners are compiled at
# start, not on a visitor's first request.
_WARM_TAGS = ("div", "section", "ul", "ol", "li", "main", "aside", "header", "footer", "nav", "article", "span", "p", "table", "tbody")


def settle_heap() -> None:
    """After start-up, move what it built (ua-parser's rules, the catalog,
    compiled patterns, modules: ~50,000 objects) out of the cyclic garbage
    collector's reach (``gc.freeze``).  A full collection over them took
    8-12 ms on this project's box, longer than the 10 ms personalisation
    budget: a request it landed in fell back to the origin's page
    (``fallback="budget"``, seen under the overload soak) and paid the pause.
    Frozen objects are never collected, so start-up's own garbage is
    collected first."""
    gc.collect()
    gc.freeze()


def warm_up() -> None:
    """Run the rewriter once on a small page with every kind of edit, so the
    first visitor does not pay for lazily compiled patterns (a cold first
    rewrite costs ~10x a warm one, which could overrun ``budget_ms``)."""
    from .model import ReplaceInner, SortChildren, SortKey
    from .rewrite import rewrite_document
    from .rewrite.scanner import body_scanner, closer

    for tag in _WARM_TAGS:
        body_scanner(tag)
    for raw in ("script", "style", "textarea", "title", "template"):
        closer(raw)
    page = (
        b"<!doctype html><html><head><title>t</title><script>var a='<div>';</script><style>p{}</style></head><body>"
        b'<!-- c --><section data-edge-slot="a"><p>x</p></section>'
        b'<ul data-edge-slot="b"><li data-sku="1" data-category="c" data-price="2">1</li><li data-sku="2" data-price="1">2</li></ul>'
        b"</body></html>"
    )
    edits = {
        "a": ReplaceInner("<h1>y</h1>"),
        "b": SortChildren((SortKey("affinity"), SortKey("attr", attr="data-price"), SortKey("pin", skus=("2",))), ("c",)),
    }
    rewrite_document(page, edits)


def _overload_gauges(metrics) -> tuple[Gauge, Gauge]:
    """The two gauges of the traffic port's admission (set by ``_flush_metrics``)."""
    r = metrics.registry
    return (
        Gauge(
            "edgeproxy_event_loop_lag_seconds",
            "How late the event loop ran a timer: the largest sample of the last second (admission.QueueDelay's probe and the flusher)",
            registry=r, multiprocess_mode="max",
        ),
        Gauge(
            "edgeproxy_in_flight_limit",
            "The in-flight cap now (adaptive: in_flight_lag_target_ms; fixed: max_in_flight; 0 = none)",
            registry=r, multiprocess_mode="livesum",
        ),
    )


async def _flush_metrics(state: State, traffic=None, admission=None, interval: float = 1.0) -> None:
    """Move gathered request counts into the Prometheus series every second,
    so with ``--workers`` the admin port's sum is never more than a second
    behind for any worker; the traffic port's open connections, its loop lag
    and its in-flight limit."""
    lag_gauge, limit_gauge = _overload_gauges(state.metrics)

    def set_limit() -> None:
        limit = admission.limit
        limit_gauge.set(0 if limit is None or limit.value >= NO_LIMIT else limit.value)

    if admission is not None:
        set_limit()  # from the start, not a second later
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        # This sleep's own lateness is a sample too (the probe may be off).
        lag = max(0.0, loop.time() - due)
        state.metrics.flush()
        if traffic is not None:
            state.metrics.open_connections.set(len(traffic.connections))
        if admission is not None:
            lag = max(lag, admission.take_peak())
            set_limit()
        lag_gauge.set(lag)


def _close_unanswered(request: web.BaseRequest) -> web.StreamResponse:
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=400)


class _AiohttpAdmission:
    """The traffic port's admission for ``traffic_server = "aiohttp"`` (the
    rollback server): the same in-flight cap (adaptive or fixed) and
    queueing-delay shedding as ``edgeproxy.http``, the same 503 +
    ``Retry-After`` (the connection kept), counted in
    ``edgeproxy_refused_total`` (``in_flight``, ``queue_delay``).  A shed
    request never reaches the pipeline.  (aiohttp has no connection cap
    nor head limits of ours: those stay with the default server.)"""

    def __init__(self, settings: Settings, state: State) -> None:
        self.limit = InFlightLimit(settings.max_in_flight, settings.min_in_flight, settings.in_flight_lag_target_ms / 1000.0)
        self.queue_delay = QueueDelay(settings.queue_delay_target_ms / 1000.0, settings.queue_delay_interval_ms / 1000.0, limit=self.limit)
        self.retry_after = str(settings.retry_after)
        self.refused = state.metrics.refused
        self.in_flight = 0

    def wrap(self, handler):
        async def admitted(request: web.BaseRequest) -> web.StreamResponse:
            shed = None
            if self.in_flight >= self.limit.value:
                self.limit.saturated = True
                shed = "in_flight"
            elif self.queue_delay.shedding:
                shed = "queue_delay"
            if shed is not None:
                self.refused.labels(shed).inc()
                # The connection is kept (aiohttp reads any body past it).
                return web.Response(status=503, text="503 Service Unavailable: the proxy is at capacity\n", headers={"Retry-After": self.retry_after})
            self.in_flight += 1
            try:
                return await handler(request)
            finally:
                self.in_flight -= 1

        return admitted


def _via_request_factory(via: str):
    """aiohttp's requests, but their responses go out as the traffic port's
    do: ``Via`` appended (RFC 9110 §7.6.3) and no ``Server`` of aiohttp's
    own (the origin's is passed on).  ``StreamResponse.prepare`` calls
    ``_prepare_hook`` after it has filled in its default headers."""

    class ProxyRequest(web.BaseRequest):
        async def _prepare_hook(self, response: web.StreamResponse) -> None:
            headers = response.headers
            # aiohttp's setdefault put this very string object there: an
            # origin's Server header is another object, even when equal.
            if headers.get("Server") is SERVER_SOFTWARE:
                del headers["Server"]
            if via:
                headers.add("Via", f"1.1 {via}")

    def factory(message, payload, protocol, payload_writer, task, _cls=ProxyRequest):
        return _cls(message, payload, protocol, payload_writer, task, asyncio.get_running_loop())

    return factory


def _bind(state: State):
    async def request_handler(request: web.BaseRequest) -> web.StreamResponse:
        if request.version < (1, 0):  # HTTP/0.9: no status line to answer with; close (found by load_tests.fuzz)
            return _close_unanswered(request)
        return await handle(request, state)

    return request_handler


# ---------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------
def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _run(settings: Settings, *, reuse_port: bool, admin: bool, parent: int | None = None) -> int:
    server = ProxyServer(settings, reuse_port=reuse_port, admin=admin)
    await server.start()
    settle_heap()  # this process only serves from here on (not in ProxyServer.start: tests start hundreds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    # logrotate's postrotate: SIGHUP reopens the log files (always handled:
    # its default action would stop the proxy).
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, server.reopen_logs)
    # Signals that arrived during start-up were held back (see _worker).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD_SIGNALS)
    watchdog = asyncio.ensure_future(_orphan_watch(parent, stop)) if parent is not None else None
    print(
        f"edgeproxy: proxying http://{settings.host}:{server.port} -> {settings.upstream}"
        + (f"; admin http://{settings.admin_host}:{server.admin_port}" if admin else "")
        + f" (pid {os.getpid()})",
        file=sys.stderr,
        flush=True,
    )
    await stop.wait()
    if watchdog is not None:
        watchdog.cancel()
    log.info("draining (up to %gs)", settings.drain_timeout)
    await server.stop()
    return 0


async def _orphan_watch(parent: int, stop: asyncio.Event) -> None:
    """A worker whose parent died (SIGKILL, OOM) drains and exits instead
    of serving on as an orphan nobody supervises."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.warning("the supervising process %d is gone; stopping", parent)
    stop.set()


def run_one(settings: Settings, *, reuse_port: bool = False, admin: bool = True, parent: int | None = None) -> int:
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        return runner.run(_run(settings, reuse_port=reuse_port, admin=admin, parent=parent))


def setup_logging(settings: Settings, worker: int | None = None) -> None:
    """Logs to stderr at ``log_level``.  (The access log is not a logger:
    ``accesslog.AccessLog`` writes its lines from its own thread.)"""
    tag = f" w{worker}" if worker is not None else ""
    logging.basicConfig(level=settings.log_level.upper(), format=f"%(asctime)s{tag} %(levelname)s %(name)s: %(message)s")


# Held back while a worker starts, until its loop handles them.
_HELD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def _worker(settings: Settings, index: int, parent: int) -> None:
    # Hold SIGTERM/SIGINT until the loop's handlers are in place, so a stop
    # during start-up is a clean drain, not a kill (and SIGHUP, a reopen,
    # not an exit).
    signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    setup_logging(settings, index)
    sys.exit(run_one(settings, reuse_port=True, admin=index == 0, parent=parent))


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; with ``workers > 1``, as that many processes."""
    if settings.workers <= 1:
        return run_one(settings)
    # Metrics of all workers through prometheus_client's multiprocess mode:
    # the workers (spawned, so they import it afresh) write to this folder,
    # the admin port (worker 0) reads them all.
    metrics_dir = tempfile.mkdtemp(prefix="edgeproxy-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(settings, i, os.getpid()), name=f"edgeproxy-w{i}") for i in range(settings.workers)]
    stopping = False

    def forward(signum, _frame):
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    def forward_hup(signum, _frame):
        # logrotate signals the process it knows (this one): each worker reopens its logs.
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward_hup)
    code = 0
    try:
        for proc in procs:
            proc.start()
        # Supervise: a worker that dies on its own takes the others down and
        # the exit status says so (the orchestrator restarts the container).
        while any(p.is_alive() for p in procs):
            if not stopping and any(p.exitcode is not None for p in procs):
                log.error("a worker exited (%s); stopping the others", ", ".join(f"{p.name}={p.exitcode}" for p in procs if p.exitcode is not None))
                code = 1
                forward(signal.SIGTERM, None)
            deadline = time.monotonic() + settings.drain_timeout + 10
            while stopping and any(p.is_alive() for p in procs) and time.monotonic() < deadline:
                time.sleep(0.1)
            if stopping:
                for p in procs:
                    if p.is_alive():
                        p.kill()
                break
            time.sleep(0.2)
        for proc in procs:
            proc.join()
            exitcode = proc.exitcode or 0
            # A worker the forwarded SIGTERM reached while spawn was still
            # importing (before _worker blocked the signal) stopped cleanly
            # too.  (Bug fixed: a stop during start-up exited with 241.)
            if stopping and exitcode == -signal.SIGTERM:
                exitcode = 0
            code = code or exitcode
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return code


def serve_from_args(args: argparse.Namespace) -> int:
    """``edgeproxy serve``: settings from flags > env > TOML > defaults."""
    flags = {k: v for k, v in vars(args).items() if k not in ("command",)}
    settings = build_settings(flags)
    require_slots(settings)  # before any worker starts: one clear error
    setup_logging(settings)
    return serve(settings)
