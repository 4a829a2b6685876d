"""Stage 3 (part) — cache: the in-memory shared upstream cache (RFC 9111).

One idea per module: ``cache_rules`` (what RFC 9111 allows, pure
functions), ``cache_store`` (the byte-bounded LRU of stored responses),
``cache_flight`` (what coalesced requests wait on) and this one
(``UpstreamCache``: lookup, who leads a fetch, revalidation, serving).

``UpstreamCache.fetch`` wraps the pipeline's origin fetch.  It stores the
*origin's* responses (raw, still content-encoded) and serves them to every
visitor; personalisation happens afterwards, per visitor, on the copy it
returns.  It behaves like Varnish or nginx with sane defaults:

What is looked up and stored
----------------------------
* Only ``GET`` (and ``HEAD``, answered from a stored ``GET``) consults the
  cache; other methods are ``BYPASS``.  Only ``GET`` responses are stored.
* A request with ``Cache-Control: no-store`` is ``BYPASS`` (RFC 9111
  §5.2.1.5).  A request with ``Authorization`` is never answered from the
  cache (the origin must see the credentials); its response is stored only
  when it says ``public``, ``s-maxage`` or ``must-revalidate`` (§3.5).
* **Cookies.**  A request's ``Cookie`` does not prevent caching (unlike
  Varnish's built-in VCL, which would make a personalising proxy, where every
  visitor carries the proxy's cookies, cache nothing).  As RFC 9111 and nginx
  do, the origin decides: a response that depends on cookies must say
  ``Vary: Cookie`` (then it is keyed on the ``Cookie`` value — pairs
  sorted, the proxy's own cookies named in ``vary_ignored_cookies`` left out,
  since the origin never reads them — in practice per session),
  ``Cache-Control: private``, or carry ``Set-Cookie`` — the last two are
  never stored, so never shared.
* A response is stored when all of these hold (§3): its status is one we
  understand as final and complete (200, 203, 204, 300, 301, 302, 307, 308,
  404, 405, 410, 414, 501 — never 206 or 304); it has no ``Set-Cookie``; its
  ``Cache-Control`` has no ``no-store``, ``private`` or ``no-cache``
  (qualified forms such as ``private="X"`` count too: the whole response is
  not stored, the simple safe reading); its ``Vary`` is not ``*``; and it has
  **explicit** freshness: ``s-maxage`` > ``max-age`` > ``Expires`` (relative
  to the origin's own ``Date``, else to our clock).  There is no heuristic
  freshness: a response without any of the three is not stored.  A response
  with zero freshness is stored only when a ``stale-while-revalidate`` or
  ``stale-if-error`` window makes it useful.
* The key is the URL (``HEAD`` reads the ``GET`` entry) plus the request's
  values of the fields the response names in ``Vary`` — names lower-cased,
  values whitespace-trimmed and -collapsed, repeated fields joined with
  ``", "`` (``Cookie`` lines with ``"; "``), a missing field distinct from
  an empty one; ``Accept-Encoding`` is
  reduced to its sorted set of codings with q > 0 (``"br, gzip;q=1"`` and
  ``"gzip,br"`` share an entry).  Pass the cache the headers you send the
  origin, so the key sees what the origin saw.
* **Keyed forwarding fields.**  The values of ``keyed_fields`` in the
  request (by default ``headers.KEYED``: ``X-Forwarded-Host``,
  ``X-Forwarded-Proto``, ``-Port``, ``-Prefix``, ``Forwarded`` without its
  ``for=``/``by=``…) are part of every key, as if each response named them
  in ``Vary``.  The origin sees them (frameworks build absolute URLs from
  them), so a response may depend on them without saying so; keyed, a page
  that reflects a forged ``Host`` is stored for that host alone and never
  reaches a visitor who asked for the real one.  (Bug fixed: the key was the
  upstream URL alone, so ``Host: evil.example`` could poison every visitor's
  copy through ``X-Forwarded-Host``.)  The proxy strips every other
  forwarding header of an untrusted client before the origin sees it
  (``headers.forward_request_headers``); docs/HEADERS.md lists each header.
* Age (§4.2.3): the origin's ``Age`` plus the time we waited for the
  response head, plus the time since it was stored.  The origin's ``Date`` is
  not used to age a response (as in Varnish: a skewed origin clock must not
  make every response stale on arrival).  Every copy served from memory
  carries ``Age``.
* Bodies up to ``max_entry_bytes`` are read into memory before the response
  is handed on (as nginx's proxy buffering does); a longer one — known from
  ``Content-Length`` or found while reading — streams through uncached, the
  bytes already read first.  The cache holds at most ``max_bytes`` (bodies
  plus headers plus a small per-entry overhead), least recently used out.
* A non-error response to an unsafe method (``POST``, ``PUT``, ``DELETE``
  …) passed through ``fetch`` invalidates the URL and its same-origin
  ``Location`` / ``Content-Location`` (§4.4); ``invalidate(url)`` does it by
  hand.

Request directives
------------------
A client's ``Cache-Control: no-cache`` / ``max-age=0`` / ``Pragma: no-cache``
is ignored by default, as Varnish, nginx and CDNs do (a shift-reload by every
visitor must not reach the origin; RFC 9111 §5.2.1.4 calls it a preference).
With ``honour_request_no_cache=True`` such a request revalidates the stored
response with the origin first.  ``max-stale``, ``min-fresh`` and
``only-if-cached`` are ignored.

Coalescing, stale content, revalidation
---------------------------------------
* Concurrent misses for one key make one origin request; the others wait
  (at most ``coalesce_timeout``) and get the stored entry (``COALESCED``).  If
  the leader's response is not storable (private, ``Set-Cookie``, too big, an
  error status), fails, or its client goes away, every waiter makes its own
  origin request: a private response is never shared.  A key whose response
  was not storable is remembered for ``hit_for_pass`` seconds so later
  requests go straight to the origin instead of queueing behind each other
  (Varnish's hit-for-miss); a storable response clears the mark.
* A client conditional or ``Range`` request that misses goes to the origin as
  the client sent it (a 304 or 206 is passed on, never stored); it does not
  lead a coalesced fetch, but may join one.
* ``stale-while-revalidate=N``: for N seconds after expiry the stale copy is
  served (``STALE``) and one background request refreshes it.
  ``stale-if-error=N``: for N seconds after expiry, when the origin cannot be
  reached, times out or answers 500/502/503/504, the stale copy is served
  (``STALE``).  RFC 5861 via RFC 9111 §4.2.4: ``must-revalidate`` and
  ``proxy-revalidate`` forbid both.  The proxy-revalidate implied by
  ``s-maxage`` does not: an origin that sends ``s-maxage=60,
  stale-while-revalidate=30`` asks a shared cache for exactly that.
* A stale entry with an ``ETag`` or ``Last-Modified`` is revalidated with
  ``If-None-Match`` / ``If-Modified-Since`` (the client's own conditional and
  ``Range`` fields are replaced); a 304 refreshes the stored headers and
  freshness (§4.3.4) and the entry is served (``REVALIDATED``).

``Upstream.cache_status`` on what ``fetch`` returns
---------------------------------------------------
=========== ===============================================================
HIT         fresh stored response, served from memory
MISS        the origin answered (stored or not); its copy is handed on
STALE       stored response served past its freshness (SWR or SIE)
REVALIDATED stale stored response confirmed by a 304 from the origin
COALESCED   served from the response another request fetched concurrently
BYPASS      the cache was not consulted (method, no-store, Authorization,
            cache disabled, or an internal error: the cache fails open)
=========== ===============================================================

Use (the pipeline's stage 3)::

    cache = UpstreamCache(settings.cache_bytes, vary_ignored_cookies=(…the proxy's cookie names…))

    def send(headers):
        return fetch.fetch(session, settings, method=method, url=url, headers=headers, body=body)

    upstream = await cache.fetch(lambda: send(headers), method=method, url=url,
                                 request_headers=headers, fetch_with_headers=send)
    # upstream.cache_status → Record.cache; read the body with upstream.body()
    # (or response.content); release() / close() as for fetch.fetch.
    ...
    await cache.close()  # at shutdown, before the session closes

Errors: the fetcher's exceptions (``UpstreamError``, cancellation) pass
through unchanged; a bug inside the cache is logged and the request is
fetched plainly (``BYPASS``) — the cache never fails a request on its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import aiohttp
from cachetools import Cache, LRUCache
from yarl import URL

from .errors import UpstreamBodyError, UpstreamError
from .fetch import Upstream
from .headers import KEYED
from .cache_rules import (  # noqa: F401 - re-exported: the cache's rules, importable from here as before
    CONDITIONAL_FIELDS,
    ERROR_STATUSES,
    MAX_DELTA,
    NOT_UPDATED_BY_304,
    SAFE_METHODS,
    STORABLE_STATUSES,
    Policy,
    _Request,
    normalise_accept_encoding,
    normalise_cookie,
    normalise_forwarded,
    parse_cache_control,
    response_policy,
)
from .cache_store import ENTRY_OVERHEAD, _Entry, _entry_size, _Store, _VaryIndex  # noqa: F401
from .cache_flight import _FAILED, _UNSHAREABLE, _Call, _Flight, _prefixed

log = logging.getLogger("edgeproxy.cache")

Headers = list[tuple[str, str]]
Fetcher = Callable[[], Awaitable[Upstream]]
HeadersFetcher = Callable[[Headers], Awaitable[Upstream]]

# A body above this many bytes streams through uncached (clamped to max_bytes).
DEFAULT_MAX_ENTRY_BYTES = 4 * 1024 * 1024
# Longest a request waits for another's fetch of the same key, seconds.
DEFAULT_COALESCE_TIMEOUT = 10.0
# How long a key whose response was not storable skips coalescing, seconds
# (Varnish's built-in hit-for-miss lasts 120 s).
DEFAULT_HIT_FOR_PASS = 120.0
# How many such keys are remembered.
DEFAULT_HIT_FOR_PASS_KEYS = 10_000

CACHE_STATUSES = ("HIT", "MISS", "STALE", "REVALIDATED", "COALESCED", "BYPASS")


# ---------------------------------------------------------------------------
# The cache


class UpstreamCache:
    """A shared, in-memory, byte-bounded cache of origin responses.

    One per process, made at start.  ``fetch`` is the only request-path
    method; ``close`` cancels background refreshes at shutdown.
    ``max_bytes=0`` disables caching (every request ``BYPASS``).
    """

    def __init__(
        self,
        max_bytes: int,
        *,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        coalesce_timeout: float = DEFAULT_COALESCE_TIMEOUT,
        hit_for_pass: float = DEFAULT_HIT_FOR_PASS,
        honour_request_no_cache: bool = False,
        vary_ignored_cookies: Iterable[str] = (),
        keyed_fields: Iterable[str] = KEYED,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes={max_bytes!r}: expected 0 (disabled) or more")
        self.max_bytes = max_bytes
        self.max_entry_bytes = max(0, min(max_entry_bytes, max_bytes - ENTRY_OVERHEAD))
        self.coalesce_timeout = coalesce_timeout
        self.hit_for_pass = hit_for_pass
        self.honour_request_no_cache = honour_request_no_cache
        self.vary_ignored_cookies = frozenset(vary_ignored_cookies)
        self.keyed_fields = frozenset(name.lower() for name in keyed_fields)
        self._clock = clock
        self._wall = wall
        self._store: _Store | None = _Store(max_bytes) if max_bytes > 0 else None
        self._flights: dict[Any, _Flight] = {}
        self._pass: LRUCache = LRUCache(DEFAULT_HIT_FOR_PASS_KEYS)
        self._refreshing: dict[Any, asyncio.Task[None]] = {}
        self._counts: Counter[str] = Counter()
        self._stores = 0

    # -- metrics ------------------------------------------------------------

    def __len__(self) -> int:
        """Stored responses."""
        return self._store.responses if self._store is not None else 0

    @property
    def bytes(self) -> int:
        """Bytes held (bodies, headers, per-entry overhead)."""
        return int(self._store.currsize) if self._store is not None else 0

    @property
    def stats(self) -> dict[str, int]:
        """Lookups by cache status, plus ``entries``, ``bytes``, ``stores``,
        ``evictions``, ``in_flight``, ``refreshing``."""
        out = {status: self._counts[status] for status in CACHE_STATUSES}
        out.update(
            entries=len(self),
            bytes=self.bytes,
            stores=self._stores,
            evictions=self._store.evictions if self._store is not None else 0,
            in_flight=len(self._flights),
            refreshing=len(self._refreshing),
        )
        return out

    async def close(self) -> None:
        """Cancel background refreshes (call at shutdown, before the
        session closes)."""
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Wait for the background refreshes under way (tests, graceful stop)."""
        while self._refreshing:
            await asyncio.gather(*list(self._refreshing.values()), return_exceptions=True)

    def clear(self) -> None:
        if self._store is not None:
            self._store.clear()
            self._store.responses = 0
        self._pass.clear()

    # -- the request path ---------------------------------------------------

    async def fetch(
        self,
        fetcher: Fetcher,
        *,
        method: str,
        url: Any,
        request_headers: Sequence[tuple[str, str]],
        fetch_with_headers: HeadersFetcher | None = None,
    ) -> Upstream:
        """The origin's response for one request, from memory when allowed.

        ``fetcher()`` sends this request to the origin with
        ``request_headers`` (the headers the origin would get without a
        cache) and returns ``fetch.fetch``'s ``Upstream``; ``url`` is the
        full upstream URL (str or yarl.URL).  ``fetch_with_headers(headers)``,
        if given, sends the same request with other headers: with it the
        cache revalidates stale entries (``If-None-Match`` /
        ``If-Modified-Since``, ``REVALIDATED``) and leads a coalesced fetch
        for a client's conditional request; without it a stale entry is
        refetched in full.  On return ``cache_status`` is set; a body from
        memory is in ``body_bytes`` (for ``HEAD`` from memory, neither
        ``body_bytes`` nor ``response`` is set: there is no body).
        """
        call = _Call(fetcher, fetch_with_headers)
        try:
            upstream = await self._fetch(call, method.upper(), str(url), request_headers)
        except (UpstreamError, asyncio.CancelledError):
            raise
        except Exception:
            if call.called:
                raise  # the fetcher's own failure (or the pipeline's), not ours
            log.exception("upstream cache failed; fetching %s uncached", url)
            upstream = await fetcher()
            upstream.cache_status = "BYPASS"
        self._counts[upstream.cache_status] += 1
        return upstream

    async def _fetch(self, call: _Call, method: str, url: str, request_headers: Sequence[tuple[str, str]]) -> Upstream:
        if self._store is None or method not in ("GET", "HEAD"):
            upstream = _mark(await call(), "BYPASS")
            if self._store is not None and method not in SAFE_METHODS and 200 <= upstream.status < 400:
                self._invalidate_after_unsafe(url, upstream)
            return upstream
        req = _Request.parse(request_headers, self.honour_request_no_cache, self.vary_ignored_cookies)
        if req.no_store:
            return _mark(await call(), "BYPASS")
        if req.authorization:
            # Never answered from the cache; stored only if the response
            # allows it (§3.5), under the URL's ordinary key.
            if method != "GET":
                return _mark(await call(), "BYPASS")
            upstream = await self._from_origin(call, url, req, key=None, entry=None, flight=None)
            return _mark(upstream, "BYPASS")

        if method == "HEAD":
            # Answered from a stored GET; otherwise the origin's HEAD response
            # passes through (it has no body to store, and waits for nobody).
            entry, key = self._lookup(url, req)
            now = self._clock()
            if entry is not None and not req.no_cache:
                age = entry.age(now)
                if entry.fresh(age):
                    return self._serve(entry, "HIT", method, now)
                if entry.within_swr(age):
                    return self._serve(entry, "STALE", method, now)
            return _mark(await call(), "MISS")

        for _attempt in range(3):
            entry, key = self._lookup(url, req)
            now = self._clock()
            if entry is not None:
                age = entry.age(now)
                if entry.fresh(age) and not req.no_cache:
                    return self._serve(entry, "HIT", method, now)
                if entry.within_swr(age) and not req.no_cache:
                    if call.rewrites or not req.conditional:
                        self._refresh_in_background(call, url, req, key, entry)
                    return self._serve(entry, "STALE", method, now)

            passing = self._passing(key, now)
            flight = None if passing else self._flights.get(key)
            if flight is not None:
                outcome = await self._wait(flight)
                if isinstance(outcome, _Entry):
                    if outcome.vary_values == req.vary_values(outcome.vary):
                        return self._serve(outcome, "COALESCED", method, self._clock())
                    continue  # stored under another Vary key: look up again
                if outcome == _FAILED and entry is not None:
                    if entry.within_sie(entry.age(self._clock())):
                        return self._serve(entry, "STALE", method, self._clock())
                # Not shareable, or the leader failed: our own origin request.
                return await self._from_origin(call, url, req, key=key, entry=None, flight=None)

            if passing or (req.conditional and (entry is None or not call.rewrites)):
                # A conditional or Range miss goes as sent; it leads nothing.
                return await self._from_origin(call, url, req, key=key, entry=entry, flight=None, as_sent=True)
            return await self._lead(call, url, req, key, entry)
        return await self._from_origin(call, url, req, key=None, entry=None, flight=None)

    def invalidate(self, url: Any) -> bool:
        """Forget what is stored for ``url`` (every Vary variant of it).
        True if something was stored."""
        if self._store is None:
            return False
        key = str(url)
        if Cache.__contains__(self._store, key):
            del self._store[key]  # an entry, or the Vary index (its variants become unreachable)
            return True
        return False

    def _invalidate_after_unsafe(self, url: str, upstream: Upstream) -> None:
        """RFC 9111 §4.4: a non-error response to an unsafe method invalidates
        the target URI, and the same-origin ``Location`` / ``Content-Location``."""
        try:
            self.invalidate(url)
            base = URL(url, encoded=True)
            for name in ("location", "content-location"):
                value = upstream.header(name)
                if not value:
                    continue
                target = base.join(URL(value.strip(), encoded=True))
                if target.origin() == base.origin():
                    self.invalidate(str(target))
        except Exception:  # a malformed Location must not fail the request
            log.exception("cannot invalidate after %s", url)

    def _lookup(self, url: str, req: _Request) -> tuple[_Entry | None, Any]:
        assert self._store is not None
        record = self._store.get(url)
        if record is None or isinstance(record, _Entry):
            return record, url
        key = (url, record.names, req.vary_values(record.names))
        return self._store.get(key), key

    def _passing(self, key: Any, now: float) -> bool:
        until = self._pass.get(key)
        if until is None:
            return False
        if now < until:
            return True
        self._pass.pop(key, None)
        return False

    async def _wait(self, flight: _Flight) -> Any:
        """The leader's outcome; a waiter that gives up or is cancelled never
        cancels the leader (``shield``)."""
        try:
            async with asyncio.timeout(self.coalesce_timeout):
                return await asyncio.shield(flight.future)
        except TimeoutError:
            return _FAILED

    async def _lead(self, call: _Call, url: str, req: _Request, key: Any, entry: _Entry | None) -> Upstream:
        flight = self._flights[key] = _Flight()
        try:
            return await self._from_origin(call, url, req, key=key, entry=entry, flight=flight)
        finally:
            # Whatever happened (error, cancellation), nobody waits forever.
            flight.resolve(_FAILED)
            if self._flights.get(key) is flight:
                del self._flights[key]

    def _serve(self, entry: _Entry, status: str, method: str, now: float) -> Upstream:
        """A copy of ``entry`` with its current ``Age``.  For ``HEAD`` neither
        ``body_bytes`` nor ``response`` is set (a head without a body), so
        ``content_length`` is the stored ``Content-Length``, as the GET's."""
        headers = list(entry.headers)
        age = str(int(entry.age(now)))
        headers.append(("Age", age))
        index = entry.index
        if "age" not in index:
            index = {**index, "age": age}
        return Upstream(
            status=entry.status,
            reason=entry.reason,
            headers=headers,
            body_bytes=entry.body if method == "GET" else None,
            cache_status=status,
            stored_headers=entry.headers,
            _index=index,
            _indexed=headers,
        )

    async def _from_origin(
        self,
        call: _Call,
        url: str,
        req: _Request,
        *,
        key: Any,
        entry: _Entry | None,
        flight: _Flight | None,
        as_sent: bool = False,
    ) -> Upstream:
        """Ask the origin; serve stale on error, merge a 304, store what may
        be stored.  ``entry`` is the stale entry being refreshed, if any."""
        headers: Headers | None = None  # None: as the client sent them
        conditional = False
        if call.rewrites and not as_sent:
            if entry is not None and entry.has_validators:
                conditional = True
                headers = req.without_conditionals()
                if entry.etag is not None:
                    headers.append(("If-None-Match", entry.etag))
                if entry.last_modified is not None:
                    headers.append(("If-Modified-Since", entry.last_modified))
            elif flight is not None and req.conditional:
                headers = req.without_conditionals()  # populate: ask for the full response
        started = self._clock()
        try:
            upstream = await call(headers)
        except UpstreamBodyError:
            raise
        except UpstreamError:
            if entry is not None and entry.within_sie(entry.age(self._clock())):
                if flight is not None:
                    flight.resolve(_FAILED)
                return self._serve(entry, "STALE", "GET", self._clock())
            raise
        received = self._clock()
        upstream.cache_status = "MISS"

        if entry is not None and upstream.status in ERROR_STATUSES and entry.within_sie(entry.age(received)):
            upstream.close()
            if flight is not None:
                flight.resolve(_FAILED)
            return self._serve(entry, "STALE", "GET", received)

        if conditional and upstream.status == 304:
            assert entry is not None
            return self._revalidated(url, req, key, entry, upstream, flight, received - started, received)

        try:
            policy = response_policy(
                upstream.status, upstream.headers, authorization=req.authorization, now_wall=self._wall(),
                keyed=self.keyed_fields,
            )
        except Exception:
            log.exception("cannot read the cache policy of %s; not storing it", url)
            policy = None
        if policy is None or policy.storable is not None:
            if flight is not None:
                flight.resolve(_UNSHAREABLE)
            if policy is not None and policy.storable not in ("status", "authorization"):
                if key is not None:
                    self._pass[key] = received + self.hit_for_pass
                if entry is not None:
                    self._drop(url, key)  # the origin changed its mind: stop serving the old copy
            return upstream

        body, upstream, broke = await self._buffer(upstream)
        if body is None:  # too big, or the body broke off
            if flight is not None:
                flight.resolve(_UNSHAREABLE)
            if key is not None and not broke:
                self._pass[key] = received + self.hit_for_pass
            return upstream
        try:
            stored = self._make_entry(upstream, body, policy, req, started, received)
            self._put(url, stored)
            if key is not None:
                self._pass.pop(key, None)
        except Exception:
            log.exception("cannot store the response of %s", url)
            stored = None
        if flight is not None:
            flight.resolve(stored if stored is not None else _UNSHAREABLE)
        return upstream

    def _revalidated(
        self,
        url: str,
        req: _Request,
        key: Any,
        entry: _Entry,
        upstream: Upstream,
        flight: _Flight | None,
        delay: float,
        received: float,
    ) -> Upstream:
        """A 304 for our validators: update the stored headers (§4.3.4)."""
        not_modified = upstream.headers
        upstream.release()
        try:
            return self._merge_304(url, req, key, entry, not_modified, flight, delay, received)
        except Exception:
            log.exception("cannot merge the 304 for %s; serving the stored copy", url)
            if flight is not None:
                flight.resolve(_UNSHAREABLE)
            return self._serve(entry, "REVALIDATED", "GET", received)

    def _merge_304(
        self,
        url: str,
        req: _Request,
        key: Any,
        entry: _Entry,
        not_modified: Headers,
        flight: _Flight | None,
        delay: float,
        received: float,
    ) -> Upstream:
        etag = next((v.strip() for n, v in not_modified if n.lower() == "etag"), None)
        if etag is not None and entry.etag is not None and etag != entry.etag:
            # A 304 for another representation: it does not refresh ours.
            log.info("304 with a different ETag for %s; serving the stored copy unrefreshed", url)
            if flight is not None:
                flight.resolve(_UNSHAREABLE)
            return self._serve(entry, "STALE", "GET", received)
        replaced = {n.lower() for n, _ in not_modified} - NOT_UPDATED_BY_304
        headers = [(n, v) for n, v in entry.headers if n.lower() not in replaced]
        headers += [(n, v) for n, v in not_modified if n.lower() in replaced]
        policy = response_policy(
            entry.status, headers, authorization=req.authorization, now_wall=self._wall(), keyed=self.keyed_fields
        )
        age = next((v.strip() for n, v in not_modified if n.lower() == "age"), "")
        refreshed = dataclasses.replace(
            entry,
            headers=tuple(headers),
            stored_at=received,
            initial_age=(float(min(int(age), MAX_DELTA)) if age.isdigit() else 0.0) + max(0.0, delay),
            lifetime=policy.lifetime,
            swr=policy.swr,
            sie=policy.sie,
            etag=policy.etag,
            last_modified=policy.last_modified,
        )
        refreshed.size = _entry_size(url, refreshed)
        if policy.storable is None and policy.vary == entry.vary:
            self._put(url, refreshed)
            if flight is not None:
                flight.resolve(refreshed)
        else:
            # The 304 made it unstorable (e.g. Set-Cookie): this client alone
            # gets the merged response; the stored one is dropped.
            self._drop(url, key)
            if flight is not None:
                flight.resolve(_UNSHAREABLE)
        return self._serve(refreshed, "REVALIDATED", "GET", received)

    async def _buffer(self, upstream: Upstream) -> tuple[bytes | None, Upstream, bool]:
        """Read the body into memory up to ``max_entry_bytes``.

        Returns ``(body, in-memory Upstream, False)``; or, for a body too long
        to store, ``(None, Upstream, False)`` whose reader yields the bytes
        already read and then the rest of the stream; or, when the body broke
        off, ``(None, Upstream, True)`` yielding what arrived, then the error.
        """
        if upstream.body_bytes is not None:
            if len(upstream.body_bytes) > self.max_entry_bytes:
                return None, upstream, False
            return upstream.body_bytes, upstream, False
        response = upstream.response
        if response is None:  # a head without a body
            return b"", dataclasses.replace(upstream, body_bytes=b""), False
        length = upstream.content_length
        if length is not None and length > self.max_entry_bytes:
            return None, upstream, False  # nothing read: it streams as it is
        content = response.content
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                try:
                    chunk = await content.readany()
                except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError, UpstreamBodyError) as exc:
                    error = exc if isinstance(exc, UpstreamBodyError) else UpstreamBodyError(f"origin body broke off: {exc!r}")
                    error.__cause__ = exc if error is not exc else None
                    return None, _prefixed(upstream, chunks, error), True
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > self.max_entry_bytes:
                    return None, _prefixed(upstream, chunks, None), False
        except BaseException:
            upstream.close()  # cancelled (client gone): drop the half-read connection
            raise
        upstream.release()
        body = b"".join(chunks)
        return body, Upstream(
            status=upstream.status,
            reason=upstream.reason,
            headers=upstream.headers,
            body_bytes=body,
            cache_status=upstream.cache_status,
        ), False

    def _make_entry(
        self, upstream: Upstream, body: bytes, policy: Policy, req: _Request, started: float, received: float
    ) -> _Entry:
        entry = _Entry(
            status=upstream.status,
            reason=upstream.reason,
            headers=tuple((n, v) for n, v in upstream.headers if n.lower() != "age"),
            body=body,
            stored_at=received,
            initial_age=policy.age + max(0.0, received - started),
            lifetime=policy.lifetime,
            swr=policy.swr,
            sie=policy.sie,
            etag=policy.etag,
            last_modified=policy.last_modified,
            vary=policy.vary,
            vary_values=req.vary_values(policy.vary),
        )
        entry.size = _entry_size("", entry)
        return entry

    def _put(self, url: str, entry: _Entry) -> None:
        store = self._store
        assert store is not None
        entry.size = _entry_size(url, entry)
        if entry.size > store.maxsize:
            return
        if entry.vary:
            index = store.get(url)
            if not (isinstance(index, _VaryIndex) and index.names == entry.vary):
                store[url] = _VaryIndex(entry.vary, len(url) + ENTRY_OVERHEAD)
            store[(url, entry.vary, entry.vary_values)] = entry
        else:
            store[url] = entry
        self._stores += 1

    def _drop(self, url: str, key: Any) -> None:
        assert self._store is not None
        for k in {url, key}:
            if k is not None and Cache.__contains__(self._store, k) and isinstance(Cache.__getitem__(self._store, k), _Entry):
                del self._store[k]

    def _refresh_in_background(self, call: _Call, url: str, req: _Request, key: Any, entry: _Entry) -> None:
        """stale-while-revalidate: one background refresh per key."""
        if key in self._refreshing or key in self._flights:
            return
        call = _Call(call.fetcher, call.with_headers)
        task = asyncio.get_running_loop().create_task(self._refresh(call, url, req, key, entry))
        self._refreshing[key] = task
        task.add_done_callback(lambda _t, key=key: self._refreshing.pop(key, None))

    async def _refresh(self, call: _Call, url: str, req: _Request, key: Any, entry: _Entry) -> None:
        flight = self._flights[key] = _Flight()
        try:
            upstream = await self._from_origin(call, url, req, key=key, entry=entry, flight=flight)
            if upstream.body_bytes is None:
                upstream.close()  # not stored: nobody reads this body
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a background refresh never fails a request
            log.info("background refresh of %s failed: %r", url, exc)
        finally:
            flight.resolve(_FAILED)
            if self._flights.get(key) is flight:
                del self._flights[key]


def _mark(upstream: Upstream, status: str) -> Upstream:
    upstream.cache_status = status
    return upstream


