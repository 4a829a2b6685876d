"""Stage 3 (part) — cache: the in-memory shared upstream cache (RFC 9111).

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
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

import aiohttp
from cachetools import Cache, LRUCache
from yarl import URL

from .errors import UpstreamBodyError, UpstreamError
from .fetch import Upstream
from .rewrite.codec import parse_accept

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
# Bytes charged per stored entry on top of its body and headers.
ENTRY_OVERHEAD = 256
# RFC 9111 §1.2.2: delta-seconds too large to represent become 2^31.
MAX_DELTA = 2**31

# RFC 9110 §9.2.1: everything else is unsafe and invalidates (RFC 9111 §4.4).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

CACHE_STATUSES = ("HIT", "MISS", "STALE", "REVALIDATED", "COALESCED", "BYPASS")

# Final, complete statuses a shared cache may store with explicit freshness
# (RFC 9110 §15.1's heuristically cacheable set plus 302/307; never 206/304).
STORABLE_STATUSES = frozenset({200, 203, 204, 300, 301, 302, 307, 308, 404, 405, 410, 414, 501})
# Origin answers that make a stale-if-error copy preferable (RFC 5861 §4).
ERROR_STATUSES = frozenset({500, 502, 503, 504})
# Request fields that make the origin answer something other than the full
# response; replaced by the cache's own validators when it revalidates.
CONDITIONAL_FIELDS = frozenset({"if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range", "range"})
# Fields a 304 must not change in the stored response (RFC 9111 §3.2).
NOT_UPDATED_BY_304 = frozenset({"content-length", "age"})


# ---------------------------------------------------------------------------
# Parsing (pure)


def parse_cache_control(values: Iterable[str]) -> dict[str, str | None]:
    """Directives of ``Cache-Control`` field lines, names lower-cased, values
    unquoted.  Commas inside quoted strings do not split.  The first
    occurrence of a directive wins (RFC 9111 §4.2.1)."""
    directives: dict[str, str | None] = {}
    for value in values:
        for part in _split_list(value):
            name, sep, arg = part.partition("=")
            name = name.strip().lower()
            if not name or name in directives:
                continue
            arg = arg.strip()
            if len(arg) >= 2 and arg[0] == arg[-1] == '"':
                arg = arg[1:-1]
            directives[name] = arg if sep else None
    return directives


def _split_list(value: str) -> list[str]:
    if '"' not in value:
        return [part for part in (p.strip() for p in value.split(",")) if part]
    parts, current, quoted = [], [], False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [part for part in parts if part]


def _delta_seconds(value: str | None) -> int:
    """A delta-seconds argument; an invalid one counts as 0 (stale), never
    as absent (RFC 9111 §1.2.2, §4.2.1)."""
    if value is None:
        return 0
    value = value.strip()
    if not value.isdigit():
        return 0
    return min(int(value), MAX_DELTA)


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value.strip()).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


@lru_cache(maxsize=1024)  # browsers send a handful of distinct values
def normalise_accept_encoding(value: str) -> str:
    """The sorted set of codings with q > 0: ``"br, gzip;q=0.8"`` → ``"br,gzip"``
    (parsed as the proxy negotiates, ``rewrite.codec.parse_accept``)."""
    return ",".join(sorted(coding for coding, q in parse_accept(value).items() if q > 0))


def normalise_cookie(value: str, ignored: frozenset[str] = frozenset()) -> str:
    """``Cookie`` for a ``Vary: Cookie`` key: pairs sorted, the ``ignored``
    names (the proxy's own cookies, which the origin never reads) left out."""
    pairs = sorted(
        pair for pair in (p.strip() for p in value.split(";")) if pair and pair.partition("=")[0].strip() not in ignored
    )
    return "; ".join(pairs)


def _normalise_field(name: str, value: str | None, ignored_cookies: frozenset[str]) -> str | None:
    if value is None:
        return None
    if name == "accept-encoding":
        return normalise_accept_encoding(value)
    if name == "cookie":
        return normalise_cookie(value, ignored_cookies)
    return " ".join(value.split())


@dataclasses.dataclass(frozen=True, slots=True)
class _Request:
    """What the cache needs from one request's headers (parsed once)."""

    headers: Headers
    fields: dict[str, str]  # lower-cased name -> value, repeated lines joined with ", "
    no_store: bool
    no_cache: bool
    authorization: bool
    conditional: bool
    ignored_cookies: frozenset[str]

    @classmethod
    def parse(
        cls, headers: Sequence[tuple[str, str]], honour_no_cache: bool, ignored_cookies: frozenset[str] = frozenset()
    ) -> _Request:
        fields: dict[str, str] = {}
        for name, value in headers:
            lower = name.lower()
            if lower in fields:  # repeated field lines: one list (RFC 9110 §5.3); Cookie lines join with "; "
                fields[lower] = f"{fields[lower]}{'; ' if lower == 'cookie' else ', '}{value}"
            else:
                fields[lower] = value
        cc = parse_cache_control([fields["cache-control"]]) if "cache-control" in fields else {}
        no_cache = False
        if honour_no_cache:
            if "cache-control" in fields:
                no_cache = "no-cache" in cc or ("max-age" in cc and _delta_seconds(cc["max-age"]) == 0)
            else:  # RFC 9111 §5.4: Pragma only without Cache-Control
                no_cache = "no-cache" in fields.get("pragma", "").lower()
        return cls(
            headers=list(headers),
            fields=fields,
            no_store="no-store" in cc,
            no_cache=no_cache,
            authorization="authorization" in fields,
            conditional=not CONDITIONAL_FIELDS.isdisjoint(fields),
            ignored_cookies=ignored_cookies,
        )

    def vary_values(self, names: tuple[str, ...]) -> tuple[str | None, ...]:
        return tuple(_normalise_field(name, self.fields.get(name), self.ignored_cookies) for name in names)

    def without_conditionals(self) -> Headers:
        return [(n, v) for n, v in self.headers if n.lower() not in CONDITIONAL_FIELDS]


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """RFC 9111 facts about one response for a shared cache.

    ``storable`` is None when the response may be stored, else the reason it
    may not (a short word for logs and tests)."""

    storable: str | None
    lifetime: float
    swr: float
    sie: float
    age: float
    vary: tuple[str, ...]
    etag: str | None
    last_modified: str | None


def response_policy(
    status: int,
    headers: Sequence[tuple[str, str]],
    *,
    authorization: bool = False,
    now_wall: float | None = None,
) -> Policy:
    """Decide whether a shared cache may store a ``GET`` response, and for
    how long it is fresh (RFC 9111 §3, §4.2.1)."""
    cc_values: list[str] = []
    vary_values: list[str] = []
    set_cookie = False
    date = expires = age = etag = last_modified = None
    expires_seen = False
    for name, value in headers:
        lower = name.lower()
        if lower == "cache-control":
            cc_values.append(value)
        elif lower == "vary":
            vary_values.append(value)
        elif lower == "set-cookie":
            set_cookie = True
        elif lower == "date" and date is None:
            date = _http_date(value)
        elif lower == "expires" and not expires_seen:
            expires_seen = True
            expires = _http_date(value)
        elif lower == "age" and age is None:
            age = value.strip()
        elif lower == "etag" and etag is None:
            etag = value.strip()
        elif lower == "last-modified" and last_modified is None:
            last_modified = value.strip()
    cc = parse_cache_control(cc_values)
    vary = tuple(sorted({v.lower() for value in vary_values for v in _split_list(value)}))

    # Freshness lifetime, shared-cache order (§4.2.1).
    explicit = True
    if "s-maxage" in cc:
        lifetime = float(_delta_seconds(cc["s-maxage"]))
    elif "max-age" in cc:
        lifetime = float(_delta_seconds(cc["max-age"]))
    elif expires_seen:
        # An invalid Expires means "already expired" (RFC 9111 §5.3).
        base = date if date is not None else (time.time() if now_wall is None else now_wall)
        lifetime = max(0.0, expires - base) if expires is not None else 0.0
    else:
        lifetime, explicit = 0.0, False
    revalidate = "must-revalidate" in cc or "proxy-revalidate" in cc
    swr = 0.0 if revalidate or "stale-while-revalidate" not in cc else float(_delta_seconds(cc["stale-while-revalidate"]))
    sie = 0.0 if revalidate or "stale-if-error" not in cc else float(_delta_seconds(cc["stale-if-error"]))
    age_value = float(min(int(age), MAX_DELTA)) if age is not None and age.isdigit() else 0.0

    reason = None
    if status not in STORABLE_STATUSES:
        reason = "status"
    elif "no-store" in cc:
        reason = "no-store"
    elif "private" in cc:
        reason = "private"
    elif "no-cache" in cc:
        reason = "no-cache"
    elif set_cookie:
        reason = "set-cookie"
    elif "*" in vary:
        reason = "vary-star"
    elif authorization and not ("public" in cc or "s-maxage" in cc or "must-revalidate" in cc):
        reason = "authorization"  # §3.5
    elif not explicit:
        reason = "no-freshness"
    elif lifetime <= 0 and swr <= 0 and sie <= 0:
        reason = "no-freshness"
    return Policy(reason, lifetime, swr, sie, age_value, vary, etag, last_modified)


# ---------------------------------------------------------------------------
# Stored records


@dataclasses.dataclass(slots=True, eq=False)
class _Entry:
    """One stored response.  ``headers`` exclude ``Age`` (computed on serve)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float  # clock() when the response head arrived
    initial_age: float  # its Age + the time we waited for it
    lifetime: float
    swr: float
    sie: float
    etag: str | None
    last_modified: str | None
    vary: tuple[str, ...]
    vary_values: tuple[str | None, ...]
    size: int = 0

    def age(self, now: float) -> float:
        return self.initial_age + max(0.0, now - self.stored_at)

    def fresh(self, age: float) -> bool:
        return age < self.lifetime

    def within_swr(self, age: float) -> bool:
        return age < self.lifetime + self.swr

    def within_sie(self, age: float) -> bool:
        return age < self.lifetime + self.sie

    @property
    def has_validators(self) -> bool:
        return self.etag is not None or self.last_modified is not None


@dataclasses.dataclass(frozen=True, slots=True)
class _VaryIndex:
    """Stored at the URL when its responses vary: which fields key them."""

    names: tuple[str, ...]
    size: int


def _sizeof(record: _Entry | _VaryIndex) -> int:
    return record.size


class _Store(LRUCache):
    """The byte-bounded LRU map: URL → entry or vary index, (URL, names,
    values) → entry.  Counts responses and evictions for metrics."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize, getsizeof=_sizeof)
        self.responses = 0
        self.evictions = 0

    def __setitem__(self, key: Any, value: Any) -> None:
        if Cache.__contains__(self, key):
            del self[key]
        super().__setitem__(key, value)
        if isinstance(value, _Entry):
            self.responses += 1

    def __delitem__(self, key: Any) -> None:
        value = Cache.__getitem__(self, key)
        super().__delitem__(key)
        if isinstance(value, _Entry):
            self.responses -= 1

    def popitem(self) -> tuple[Any, Any]:
        item = super().popitem()
        self.evictions += 1
        return item


class _PrefixedContent:
    """The origin body's reader with the bytes the cache already read put
    back in front.  Whoever reads ``response.content`` (``readany``,
    ``read_nowait``, ``at_eof``) or ``Upstream.body()`` sees the whole body,
    or the error that broke it off after the bytes read before it."""

    def __init__(self, content: Any, prefix: list[bytes], error: BaseException | None) -> None:
        self._content = content
        self._prefix = deque(chunk for chunk in prefix if chunk)
        self._error = error

    async def readany(self) -> bytes:
        if self._prefix:
            return self._prefix.popleft()
        if self._error is not None:
            raise self._error
        return await self._content.readany()

    def read_nowait(self, n: int = -1) -> bytes:
        if self._prefix:
            chunk = self._prefix.popleft()
            if 0 <= n < len(chunk):
                chunk, rest = chunk[:n], chunk[n:]
                self._prefix.appendleft(rest)
            return chunk
        if self._error is not None:
            return b""
        return self._content.read_nowait(n)

    def at_eof(self) -> bool:
        return not self._prefix and self._error is None and self._content.at_eof()

    def is_eof(self) -> bool:
        return not self._prefix and self._error is None and self._content.is_eof()

    async def iter_any(self) -> AsyncIterator[bytes]:  # pragma: no cover - aiohttp's API, for completeness
        while chunk := await self.readany():
            yield chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._content, name)


class _PrefixedResponse:
    """The origin's ``ClientResponse`` with a ``_PrefixedContent``; every
    other attribute (``release``, ``close``, ``status`` …) is the real one."""

    def __init__(self, response: Any, content: _PrefixedContent) -> None:
        self._response = response
        self.content = content

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)


# Outcomes a coalesced fetch hands its waiters besides an entry.
_UNSHAREABLE = "unshareable"  # the response must not be shared: fetch your own
_FAILED = "failed"  # the leader failed or was cancelled: fetch your own (or stale-if-error)


class _Flight:
    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def resolve(self, outcome: Any) -> None:
        if not self.future.done():
            self.future.set_result(outcome)


class _Call:
    """One ``fetch`` call's way to the origin: ``call()`` sends the request
    as the client's headers are, ``call(headers)`` with other headers (only
    when ``rewrites``).  Notes whether the origin was asked: after that,
    failing open by fetching again would ask twice."""

    __slots__ = ("fetcher", "with_headers", "called")

    def __init__(self, fetcher: Fetcher, with_headers: HeadersFetcher | None) -> None:
        self.fetcher = fetcher
        self.with_headers = with_headers
        self.called = False

    @property
    def rewrites(self) -> bool:
        return self.with_headers is not None

    def __call__(self, headers: Headers | None = None) -> Awaitable[Upstream]:
        self.called = True
        if headers is None or self.with_headers is None:
            return self.fetcher()
        return self.with_headers(headers)


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
        headers.append(("Age", str(int(entry.age(now)))))
        return Upstream(
            status=entry.status,
            reason=entry.reason,
            headers=headers,
            body_bytes=entry.body if method == "GET" else None,
            cache_status=status,
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
                upstream.status, upstream.headers, authorization=req.authorization, now_wall=self._wall()
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
        policy = response_policy(entry.status, headers, authorization=req.authorization, now_wall=self._wall())
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


def _prefixed(upstream: Upstream, chunks: list[bytes], error: BaseException | None) -> Upstream:
    assert upstream.response is not None
    content = _PrefixedContent(upstream.response.content, chunks, error)
    return dataclasses.replace(upstream, response=_PrefixedResponse(upstream.response, content))


def _entry_size(url: str, entry: _Entry) -> int:
    return (
        len(entry.body)
        + sum(len(n) + len(v) for n, v in entry.headers)
        + len(url)
        + sum(len(v or "") for v in entry.vary_values)
        + ENTRY_OVERHEAD
    )
