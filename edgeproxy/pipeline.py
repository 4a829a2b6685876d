"""One request, start to finish.  Read this file first.

``handle()`` only sequences the stages; each lives in its own module::

    1 classify   classify/     RequestFacts -> Visitor          (who is asking)
    2 choose     choose.py     Visitor, Catalog, now -> Decision (what each slot shows)
    3 fetch      fetch.py      the origin's response head, body still streaming
    4 rewrite    rewrite/      origin bytes + edits -> personalised bytes
    5 respond    respond.py    head (private, Server-Timing, cookies) + streamed body
    6 record     record.py     metrics from the request's Record, once, at the end

Fail open everywhere: if classify or choose raises or overruns the time
budget, the page goes out as the origin sent it; the rewriter leaves any slot
it cannot handle untouched; only an origin failure becomes a 502/504.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import functools
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import aiohttp
from aiohttp import web

from . import choose as choosing
from . import conditional
from . import classify as classifying
from .classify import cookies as cookie_rules
from . import fetch as fetching
from .catalog.watch import CatalogStore
from .errors import UpstreamError
from .headers import ReadHeaders, forward_request_headers, is_trusted, read_request_headers, request_facts
from .model import NO_DECISION, Observe, RequestFacts, SetCookie, Visitor
from .record import Metrics, Record
from .respond import Plan, send
from .rewrite.codec import AVAILABLE, parse_accept
from .settings import Settings
from .websocket import tunnel_websocket

log = logging.getLogger("edgeproxy.pipeline")

OBSERVE = Observe()
# The plan of every request that is not personalised (nothing reads it but
# to see there is nothing to do, so one frozen instance serves them all).
NO_PLAN = Plan(decision=NO_DECISION, edits=MappingProxyType({}))
# The conversion beacon (CONTRACT §7), answered by the proxy itself:
# GET or POST /_edge/convert?value=12.50 -> 204, one conversion line; a body
# over ``beacon_max_body_bytes`` gets 413 unread (issue 10: it took 10 MB).
BEACON_PATH = "/_edge/convert"
PREVIEW_HEADER = "X-Edge-Preview-Token"
PREVIEW_COOKIE = "edge_preview_token"
PREVIEW_PARAM = "edge_preview"
PREVIEW_TOKEN_PARAM = "edge_preview_token"
# Requests for these never get a personalised page: assets, not documents.
_ASSET_EXTENSIONS = frozenset(
    "css js mjs map json xml txt csv png jpg jpeg gif webp avif svg ico bmp woff woff2 ttf otf eot "
    "mp4 webm mp3 ogg wav pdf zip gz br wasm webmanifest".split()
)
# An Accept header of a page load names one of these (absent: maybe a page).
_PAGE_ACCEPTS = ("text/html", "application/xhtml", "*/*")
# Sec-Fetch-Dest values of a page load (absent on older browsers and curl).
_DOCUMENT_DESTS = frozenset({"", "document", "iframe", "frame", "embed", "object"})


@dataclasses.dataclass(slots=True)
class State:
    """The long-lived objects of one proxy process (opened in ``server``)."""

    settings: Settings
    session: aiohttp.ClientSession  # WebSockets on the aiohttp traffic server; requests with upstream_client = "aiohttp"
    catalog: CatalogStore
    classifiers: Any
    metrics: Metrics
    cache: Any = None
    render_cache: Any = None  # render_cache.RenderCache for bodies served from memory
    events: Any = None  # events.EventLog when an exposure/conversion log is configured
    preview_digest: str | None = None
    draining: bool = False
    origin: Any = None  # http.upstream.OriginPool: the origin requests (upstream_client = "protocols")

    @property
    def client(self) -> Any:
        """What ``fetch.fetch`` sends origin requests with."""
        return self.origin if self.origin is not None else self.session


async def handle(request: web.BaseRequest, state: State) -> web.StreamResponse:
    rec = Record(method=request.method, path=request.path)
    state.metrics.started()
    try:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await tunnel_websocket(request, state.session, state.settings, rec)
        facts, read = _facts(request, state.settings)
        rec.identify(facts)  # request id and client, for the access log
        if facts.path == BEACON_PATH and state.events is not None:
            return await _beacon(state, request, facts, rec)
        now = dt.datetime.now(dt.timezone.utc)
        visitor = _classify(state, facts, now, rec)  # 1
        plan = _choose(state, request, facts, visitor, now, rec)  # 2
        upstream = await _fetch(state, request, facts, plan, rec, read)  # 3
        if isinstance(upstream, web.StreamResponse):  # the origin failed
            return upstream
        if upstream.body_bytes is not None and not plan.edits and not plan.cookies:
            upstream = _from_store(request, upstream)  # a stored copy answers If-None-Match / Range
        s = state.settings
        response = await send(
            request, upstream, plan, rec, max_rewrite_bytes=s.max_rewrite_bytes, max_slot_bytes=s.max_slot_bytes,
            render_cache=state.render_cache, url=request.raw_path,
        )  # 4, 5
        if state.events is not None:
            _log_events(state, facts, visitor, plan, rec)  # 6
        return response
    finally:
        state.metrics.finished()
        state.metrics.observe(rec)  # 6


# ---------------------------------------------------------------------------
# 1. classify
# ---------------------------------------------------------------------------
def _facts(request: web.Request, settings: Settings) -> tuple[RequestFacts, ReadHeaders]:
    """The request's facts, and its header fields sorted once (the fetch
    stage builds the origin's headers from the same pass)."""
    trusted = is_trusted(request.remote, settings.trust_proxy)
    read = read_request_headers(request.headers.items(), trusted)
    facts = request_facts(
        method=request.method,
        path=request.path,
        query=request.query.items(),
        headers=(),
        peer=request.remote,
        networks=settings.trust_proxy,
        scheme="https" if request.transport is not None and request.transport.get_extra_info("sslcontext") else "http",
        host=request.headers.get("Host", ""),
        read=read,
        read_trusted=trusted,
    )
    return facts, read


def wants_page(facts: RequestFacts) -> bool:
    """Is this a page load the proxy may personalise?  Other requests
    (assets, XHR and API calls, form posts, WebSockets) are proxied untouched
    and unclassified: they set no cookies, count no affinity, and keep their
    conditional and Range headers."""
    if facts.method not in ("GET", "HEAD"):
        return False
    if facts.headers.get("sec-fetch-dest", "").lower() not in _DOCUMENT_DESTS:
        return False
    accept = facts.headers.get("accept")
    if accept is not None and not any(t in accept for t in _PAGE_ACCEPTS):
        return False  # e.g. an API client asking for application/json
    last = facts.path.rsplit("/", 1)[-1]
    ext = last.rsplit(".", 1)[-1].lower() if "." in last else ""
    return ext not in _ASSET_EXTENSIONS


def _classify(state: State, facts: RequestFacts, now: dt.datetime, rec: Record) -> Visitor | None:
    if not wants_page(facts):
        return None
    started = time.perf_counter()
    try:
        return classifying.classify(facts, state.classifiers, now)
    except Exception:  # fail open: the origin's page, unpersonalised
        log.exception("classify failed for %s %s", facts.method, facts.path)
        rec.fail_open("classify-error")
        return None
    finally:
        rec.add("classify", time.perf_counter() - started)


# ---------------------------------------------------------------------------
# 2. choose
# ---------------------------------------------------------------------------
def preview_allowed(state: State, facts: RequestFacts) -> bool:
    """The preview token, as a header, a preview-link cookie or the
    link's own ``edge_preview_token`` parameter.  Constant-time compares."""
    token = state.settings.preview_token
    if not token:
        return False
    given = facts.headers.get(PREVIEW_HEADER.lower())
    if given is not None and hmac.compare_digest(given.encode(), token.encode()):
        return True
    cookie = facts.cookies.get(PREVIEW_COOKIE)
    if cookie is not None and state.preview_digest and hmac.compare_digest(cookie.encode(), state.preview_digest.encode()):
        return True
    link = dict(facts.query).get(PREVIEW_TOKEN_PARAM)
    return link is not None and hmac.compare_digest(link.encode(), token.encode())


def preview_digest(settings: Settings) -> str | None:
    """The preview cookie's value: a digest of the token, never the token."""
    if not settings.preview_token:
        return None
    return hashlib.sha256(f"edgeproxy-preview:{settings.preview_token}".encode()).hexdigest()[:40]


def _choose(state: State, request: web.Request, facts: RequestFacts, visitor: Visitor | None, now: dt.datetime, rec: Record) -> Plan:
    if visitor is None:
        return NO_PLAN
    started = time.perf_counter()
    preview = preview_allowed(state, facts)
    catalog = state.catalog.current
    try:
        forced = choosing.parse_preview(dict(facts.query).get(PREVIEW_PARAM, "")) if preview else None
        decision = choosing.choose(visitor, catalog, now, forced=forced or None, holdout=state.settings.holdout)
    except Exception:
        log.exception("choose failed for %s", facts.path)
        rec.fail_open("choose-error")
        decision = NO_DECISION
    rec.add("choose", time.perf_counter() - started)
    edits = dict(decision.edits)
    if state.events is not None and visitor.visitor_id:
        # The control arm is logged, like a variant, only if its slot is on
        # the page: watch for it without changing it.
        for name, d in decision.slots.items():
            if d.experiment is not None and d.edit is None:
                edits[name] = OBSERVE
    # The budget covers the CPU time of classify + choose + rewrite, never
    # the origin's time (nothing before this point awaits).
    budget = state.settings.budget_s - (time.thread_time() - rec.cpu_started) if state.settings.budget_ms > 0 else None
    if edits and budget is not None and budget <= 0:
        rec.fail_open("budget")
        edits = {}
    rec.variants.update({name: d.variant for name, d in decision.slots.items()})
    cookies = list(visitor.cookies)
    if preview and state.preview_digest and facts.cookies.get(PREVIEW_COOKIE) != state.preview_digest:
        cookies.append(SetCookie(PREVIEW_COOKIE, state.preview_digest, 8 * 3600))
    capped = frozenset(name for name, d in decision.slots.items() if d.cap_key is not None and name in edits)
    secure = facts.scheme == "https"

    def on_applied(outcomes: Mapping[str, str]) -> SetCookie | None:
        applied = [name for name, outcome in outcomes.items() if outcome == "applied"]
        counts = choosing.count_views(visitor.caps, decision, applied, now, visitor.session_id)
        if counts == dict(visitor.caps):
            return None
        return classifying.encode_caps(counts, state.classifiers, secure=secure)

    def explain() -> dict:  # read when the head is built: cache status and fallback are known then
        return choosing.explain_trace(visitor, decision, {"cache": rec.cache, "preview": bool(forced), "fallback": rec.fallback})

    return Plan(
        decision=decision,
        edits=edits,
        cookies=tuple(cookies),
        secure=secure,
        explain=explain if preview else None,
        budget=budget,
        capped=capped,
        on_applied=on_applied if capped else None,
    )


# ---------------------------------------------------------------------------
# 3. fetch
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)  # browsers send a handful of distinct values
def upstream_accept_encoding(client_value: str | None) -> str | None:
    """What to ask the origin for when the body may be rewritten: the codings
    the client accepts that the proxy can decode (CONTRACT §4), so a body the
    proxy ends up not rewriting is still one the client can read."""
    if client_value is None:
        return None
    ranks = parse_accept(client_value)
    star = ranks.get("*")
    ok = [c for c in ("gzip", "br", "zstd", "deflate") if c in AVAILABLE and ranks.get(c, star if star is not None else 0) > 0]
    return ", ".join(ok) if ok else "identity"


# Request fields the proxy sets itself for the origin: only codings it can
# decode (CONTRACT §4), so any body can still be rewritten or read; and, when
# the page will be rewritten, no validators or ranges: it needs the full
# body, not a 304/206 of a copy the visitor has.
_DROP = frozenset({"accept-encoding"})
_DROP_REWRITTEN = _DROP | {"if-none-match", "if-modified-since", "if-range", "range"}


def _origin_headers(request: web.Request, facts: RequestFacts, plan: Plan, settings: Settings, read: ReadHeaders) -> list[tuple[str, str]]:
    headers = forward_request_headers(
        (),
        peer=request.remote,
        peer_trusted=facts.peer_trusted,
        scheme=facts.scheme,
        host=facts.host,
        upstream_host=fetching.upstream_host(settings),
        request_id=facts.request_id,
        drop=_DROP_REWRITTEN if plan.edits else _DROP,
        read=read,
    )
    wanted = upstream_accept_encoding(facts.headers.get("accept-encoding"))
    if wanted:
        headers.append(("Accept-Encoding", wanted))
    if settings.via:  # RFC 9110 §7.6.3: after any Via the client sent
        headers.append(("Via", f"{request.version[0]}.{request.version[1]} {settings.via}"))
    if PREVIEW_COOKIE in facts.cookies:
        headers = fetching.without_preview_cookie(headers, PREVIEW_COOKIE)
    return headers


async def _fetch(state: State, request: web.Request, facts: RequestFacts, plan: Plan, rec: Record, read: ReadHeaders):
    settings = state.settings
    url = fetching.upstream_url(settings, fetching.strip_query_param(request.raw_path, PREVIEW_TOKEN_PARAM))
    headers = _origin_headers(request, facts, plan, settings, read)
    started = time.perf_counter()
    try:
        if state.cache is not None and request.method in ("GET", "HEAD"):
            def with_headers(sent):
                return fetching.fetch(state.client, settings, method=request.method, url=url, headers=sent, body=None)

            upstream = await state.cache.fetch(
                lambda: with_headers(headers),
                method=request.method,
                url=url,
                request_headers=headers,
                fetch_with_headers=with_headers,
            )
        else:
            upstream = await fetching.fetch(
                state.client, settings, method=request.method, url=url, headers=headers, body=fetching.request_body(request)
            )
            if state.cache is not None and upstream.status < 400 and request.method not in ("OPTIONS", "TRACE"):
                # RFC 9111 §4.4: a successful unsafe request invalidates the URL.
                state.cache.invalidate(url)
    except UpstreamError as exc:
        rec.add("origin", time.perf_counter() - started)
        kind = type(exc).__name__
        state.metrics.upstream_errors.labels(kind).inc()
        log.warning("%s %s: %s", request.method, request.path, exc)
        rec.status = exc.status
        rec.fail_open("origin-" + kind)
        what = "did not answer in time" if exc.status == 504 else "could not be reached"
        title = "Gateway Timeout" if exc.status == 504 else "Bad Gateway"
        return web.Response(
            status=exc.status,
            text=f"{exc.status} {title}: the shop {what}\n",
            headers={"Cache-Control": "no-store", "Server-Timing": rec.server_timing(), "X-Request-ID": facts.request_id},
        )
    rec.add("origin", time.perf_counter() - started)
    rec.cache = upstream.cache_status
    return upstream


def _from_store(request, upstream: fetching.Upstream) -> fetching.Upstream:
    """A response held in memory (the cache's), answered as the origin would
    answer this request: 304 for matching validators, 206 for a byte range
    (RFC 9111 §4.3.2, RFC 9110 §14).  Only for responses not personalised:
    a personalised page has no validators and is never partial."""
    answer = conditional.answer(request.method, list(request.headers.items()), upstream.status, upstream.headers, upstream.body_bytes)
    if answer is None:
        return upstream
    status, headers, body = answer
    return dataclasses.replace(
        upstream, status=status, reason="", headers=headers, body_bytes=body if status != 304 else None, _index=None, _indexed=None
    )


# ---------------------------------------------------------------------------
# 6. record: experiment exposures and conversions (metrics: record.Metrics)
# ---------------------------------------------------------------------------
def _log_events(state: State, facts: RequestFacts, visitor: Visitor | None, plan: Plan, rec: Record) -> None:
    """One exposure per experiment slot that really rendered (its variant
    applied, or its control slot seen on the page); one conversion when the
    path is a configured conversion path."""
    events = state.events
    vid = visitor.visitor_id if visitor is not None else None
    if vid is None or visitor is None:
        vid = _visitor_id(state, facts)
        if vid is not None and _is_conversion(state.settings, facts.path):
            events.conversion(ts=time.time(), visitor=vid, path=facts.path, value=_value(facts), kind="path")
        return
    ts = time.time()
    ctx = visitor.context
    for name, d in plan.decision.slots.items():
        if d.experiment is None or d.arm is None:
            continue
        if rec.outcomes.get(name) not in ("applied", "seen"):
            continue
        events.exposure(
            ts=ts, visitor=vid, experiment=d.experiment, arm=d.arm, slot=name, path=facts.path,
            device=ctx.get("device"), country=ctx.get("country"), source=ctx.get("source"),
        )
    if _is_conversion(state.settings, facts.path):
        events.conversion(ts=ts, visitor=vid, path=facts.path, value=_value(facts), kind="path")


def _is_conversion(settings: Settings, path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, glob) for glob in settings.conversion_path)


def _value(facts: RequestFacts) -> float | None:
    raw = dict(facts.query).get("value")
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _visitor_id(state: State, facts: RequestFacts) -> str | None:
    """The visitor id from the proxy's cookie, for requests that were not
    classified (a POST to a conversion path, the beacon).  ``None`` without
    consent or a valid cookie."""
    c = state.classifiers
    names = c.names
    if not cookie_rules.has_consent(facts.cookies, facts.headers, names.consent, names.consent_value):
        return None
    known = cookie_rules.read_visitor(c.codec, names.visitor, facts.cookies.get(names.visitor))
    return known.id if known is not None else None


async def _beacon_too_large(request: web.BaseRequest, cap: int) -> bool:
    """Whether the beacon's body is over ``cap`` bytes: by its
    ``Content-Length``, or by reading a chunked one only that far.  (The
    traffic port's protocol refuses such a body before the pipeline runs;
    this holds the same rule on the aiohttp server.)"""
    if not cap:
        return False
    if request.content_length is not None:
        return request.content_length > cap
    seen = 0
    if request.body_exists:
        async for chunk in request.content.iter_any():
            seen += len(chunk)
            if seen > cap:
                return True
    return False


async def _beacon(state: State, request: web.BaseRequest, facts: RequestFacts, rec: Record) -> web.Response:
    cap = state.settings.beacon_max_body_bytes
    if await _beacon_too_large(request, cap):
        rec.status = 413
        resp = web.Response(status=413, text=f"413 Content Too Large: the request body is over {cap} bytes\n",
                            headers={"Cache-Control": "no-store"})
        resp.force_close()  # the rest of the body is never read
        return resp
    rec.status = 204
    vid = _visitor_id(state, facts)
    if vid is not None:
        state.events.conversion(ts=time.time(), visitor=vid, path=facts.headers.get("referer", facts.path)[:512], value=_value(facts), kind="beacon")
    return web.Response(status=204, headers={"Cache-Control": "no-store"})
