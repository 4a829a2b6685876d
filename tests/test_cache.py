"""The shared upstream cache (edgeproxy/cache.py) against a real origin.

A real aiohttp origin runs on a spare port and counts hits per path; every
request goes through ``UpstreamCache.fetch`` with a real pooled session from
``fetch.open_session``.  Time is an injected clock: no test sleeps for
timing.  Concurrency tests hold the origin on an ``asyncio.Event`` so the
order of events is fixed, not raced.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from email.utils import formatdate

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from edgeproxy import cache as cache_mod
from edgeproxy import fetch
from edgeproxy.cache import (
    UpstreamCache,
    normalise_accept_encoding,
    normalise_cookie,
    parse_cache_control,
    response_policy,
)
from edgeproxy.errors import UpstreamBodyError, UpstreamConnectError
from edgeproxy.settings import build_settings

Handler = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Origin:
    """The storefront origin: per-path handlers, hit counts, request headers."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.hits: Counter[str] = Counter()
        self.seen: dict[str, list[dict[str, str]]] = {}
        self.arrived = asyncio.Event()
        self.server: TestServer | None = None

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def static(self, path: str, body: bytes = b"page", **headers: str) -> None:
        """A response whose body names the hit that produced it: ``page#1``."""

        async def handler(request: web.Request, hit: int) -> web.StreamResponse:
            return web.Response(body=body + b"#%d" % hit, headers=_headers(headers))

        self.routes[path] = handler

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        self.seen.setdefault(request.path, []).append(dict(request.headers))
        self.arrived.set()
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="no route")
        return await handler(request, self.hits[request.path])

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")


def _headers(kwargs: dict[str, str]) -> dict[str, str]:
    """Keyword arguments as header names: cache_control → Cache-Control."""
    return {"-".join(part.capitalize() for part in name.split("_")): value for name, value in kwargs.items()}


@pytest.fixture
async def origin():
    org = Origin()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", org.handle)
    org.server = TestServer(app, port=0)
    await org.server.start_server()
    yield org
    await org.server.close()


@pytest.fixture
async def upstream(origin):
    settings = build_settings({"upstream": origin.url}, env={})
    session = fetch.open_session(settings)
    yield settings, session
    await session.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make_cache(clock):
    made: list[UpstreamCache] = []

    def make(max_bytes: int = 1 << 20, **kwargs) -> UpstreamCache:
        c = UpstreamCache(max_bytes, clock=clock, **kwargs)
        made.append(c)
        return c

    yield make


@pytest.fixture
def get(upstream):
    """``await get(cache, path, headers, method)`` → (Upstream, body bytes).

    Calls the cache as the pipeline does: ``fetcher()`` for the request as
    the client sent it and, unless ``with_headers=False``,
    ``fetch_with_headers(headers)`` for revalidation."""
    settings, session = upstream

    async def get(c: UpstreamCache, path: str, headers=(), method: str = "GET", with_headers: bool = True):
        url = fetch.upstream_url(settings, path)
        headers = list(headers)

        async def fetch_with_headers(hdrs):
            return await fetch.fetch(session, settings, method=method, url=url, headers=hdrs)

        up = await c.fetch(
            lambda: fetch_with_headers(headers),
            method=method,
            url=url,
            request_headers=headers,
            fetch_with_headers=fetch_with_headers if with_headers else None,
        )
        if up.response is None and up.body_bytes is None:  # a head without a body
            body = b""
        else:
            body = b"".join([chunk async for chunk in up.body()])
        up.release()
        return up, body

    return get


# ---------------------------------------------------------------------------
# Storing and serving


async def test_cacheable_200_is_fetched_once_and_then_served_from_memory(origin, make_cache, get):
    origin.static("/p", cache_control="max-age=60")
    c = make_cache()
    first, body1 = await get(c, "/p")
    second, body2 = await get(c, "/p")
    assert (first.cache_status, second.cache_status) == ("MISS", "HIT")
    assert body1 == body2 == b"page#1"
    assert second.body_bytes == b"page#1"
    assert origin.hits["/p"] == 1
    assert len(c) == 1 and c.bytes > 0
    assert c.stats["HIT"] == 1 and c.stats["MISS"] == 1


async def test_head_is_answered_from_the_stored_get_without_a_body(origin, make_cache, get):
    origin.static("/p", cache_control="max-age=60")
    c = make_cache()
    await get(c, "/p")
    head, body = await get(c, "/p", method="HEAD")
    assert head.cache_status == "HIT" and body == b""
    assert head.header("Content-Length") == str(len(b"page#1"))
    assert head.content_length == len(b"page#1")  # what the client's HEAD response says
    assert origin.hits["/p"] == 1


async def test_head_miss_goes_to_the_origin_and_stores_nothing(origin, make_cache, get):
    origin.static("/p", cache_control="max-age=60")
    c = make_cache()
    head, _ = await get(c, "/p", method="HEAD")
    assert head.cache_status == "MISS" and len(c) == 0


async def test_post_bypasses_the_cache(origin, make_cache, get):
    origin.static("/p", cache_control="max-age=60")
    c = make_cache()
    for _ in range(2):
        up, _ = await get(c, "/p", method="POST")
        assert up.cache_status == "BYPASS"
    assert origin.hits["/p"] == 2 and len(c) == 0


async def test_zero_max_bytes_disables_the_cache(origin, make_cache, get):
    origin.static("/p", cache_control="max-age=60")
    c = make_cache(0)
    for _ in range(2):
        up, body = await get(c, "/p")
        assert up.cache_status == "BYPASS"
    assert origin.hits["/p"] == 2


@pytest.mark.parametrize(
    "headers",
    [
        # Never stored by a shared cache (RFC 9111 §3, §5.2.2):
        {"cache_control": "private, max-age=60"},
        {"cache_control": 'max-age=60, private="Set-Cookie"'},
        {"cache_control": "no-store, max-age=60"},
        {"cache_control": "no-cache, max-age=60"},
        {"cache_control": "max-age=60", "set_cookie": "sid=abc; Path=/"},
        {"cache_control": "max-age=60", "vary": "*"},
        {"cache_control": "max-age=60", "vary": "Accept-Encoding, *"},
        # No explicit freshness: no heuristic freshness.
        {},
        {"last_modified": "Mon, 02 Nov 2026 10:00:00 GMT", "etag": '"v1"'},
        {"cache_control": "max-age=0"},
        {"cache_control": "public"},
    ],
    ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items()) or "no-cache-headers",
)
async def test_responses_a_shared_cache_must_not_store_are_fetched_every_time(origin, make_cache, get, headers):
    origin.static("/p", **headers)
    c = make_cache()
    statuses = [(await get(c, "/p"))[0].cache_status for _ in range(3)]
    assert statuses == ["MISS"] * 3
    assert origin.hits["/p"] == 3 and len(c) == 0


@pytest.mark.parametrize("status", [206, 304, 500, 502, 503])
async def test_statuses_that_are_not_complete_or_are_errors_are_not_stored(origin, make_cache, get, status):
    async def handler(request, hit):
        return web.Response(status=status, body=b"" if status == 304 else b"x", headers={"Cache-Control": "max-age=60"})

    origin.route("/p", handler)
    c = make_cache()
    await get(c, "/p")
    up, _ = await get(c, "/p")
    assert up.cache_status == "MISS" and up.status == status
    assert origin.hits["/p"] == 2


async def test_cacheable_404_with_explicit_freshness_is_stored(origin, make_cache, get):
    async def handler(request, hit):
        return web.Response(status=404, text=f"gone#{hit}", headers={"Cache-Control": "max-age=30"})

    origin.route("/missing", handler)
    c = make_cache()
    await get(c, "/missing")
    up, body = await get(c, "/missing")
    assert (up.status, up.cache_status, body) == (404, "HIT", b"gone#1")


async def test_request_cookie_does_not_prevent_sharing_a_response_without_vary_cookie(origin, make_cache, get):
    origin.static("/p", cache_control="max-age=60")
    c = make_cache()
    await get(c, "/p", [("Cookie", "edge_vid=alice")])
    up, body = await get(c, "/p", [("Cookie", "edge_vid=bob")])
    assert up.cache_status == "HIT" and body == b"page#1"


async def test_vary_cookie_keys_the_entry_on_the_cookie_header(origin, make_cache, get):
    origin.static("/p", cache_control="max-age=60", vary="Cookie")
    c = make_cache()
    _, alice = await get(c, "/p", [("Cookie", "sid=alice")])
    up_bob, bob = await get(c, "/p", [("Cookie", "sid=bob")])
    up_alice, alice_again = await get(c, "/p", [("Cookie", "sid=alice")])
    assert up_bob.cache_status == "MISS" and bob == b"page#2"
    assert up_alice.cache_status == "HIT" and alice_again == alice == b"page#1"


async def test_vary_cookie_key_leaves_out_the_proxys_own_cookies(origin, make_cache, get):
    origin.static("/p", cache_control="max-age=60", vary="Cookie")
    c = make_cache(vary_ignored_cookies=("edge_vid", "edge_ses"))
    await get(c, "/p", [("Cookie", "edge_vid=alice; theme=dark")])
    bob, body = await get(c, "/p", [("Cookie", "theme=dark; edge_vid=bob"), ("Cookie", "edge_ses=x")])
    other, _ = await get(c, "/p", [("Cookie", "theme=light; edge_vid=bob")])
    assert (bob.cache_status, body) == ("HIT", b"page#1")
    assert other.cache_status == "MISS"


@pytest.mark.parametrize(
    "value, ignored, expected",
    [
        ("b=2; a=1", (), "a=1; b=2"),
        ("edge_vid=x; sid=1", ("edge_vid",), "sid=1"),
        ("edge_vid=x", ("edge_vid",), ""),
        (" a=1 ;; b=2 ", (), "a=1; b=2"),
    ],
)
def test_cookie_normalises_to_sorted_pairs_without_ignored_names(value, ignored, expected):
    assert normalise_cookie(value, frozenset(ignored)) == expected


# ---------------------------------------------------------------------------
# Authorization (RFC 9111 §3.5) and request directives


async def test_response_to_an_authorized_request_is_not_stored(origin, make_cache, get):
    origin.static("/account", cache_control="max-age=60")
    c = make_cache()
    authed, _ = await get(c, "/account", [("Authorization", "Bearer alice")])
    anonymous, _ = await get(c, "/account")
    assert authed.cache_status == "BYPASS" and anonymous.cache_status == "MISS"
    assert origin.hits["/account"] == 2


@pytest.mark.parametrize("cache_control", ["public, max-age=60", "s-maxage=60", "max-age=60, must-revalidate"])
async def test_response_to_an_authorized_request_is_stored_when_it_says_so(origin, make_cache, get, cache_control):
    origin.static("/doc", cache_control=cache_control)
    c = make_cache()
    await get(c, "/doc", [("Authorization", "Bearer alice")])
    anonymous, body = await get(c, "/doc")
    assert anonymous.cache_status == "HIT" and body == b"page#1"


async def test_authorized_request_is_never_answered_from_the_cache(origin, make_cache, get):
    origin.static("/doc", cache_control="max-age=60")
    c = make_cache()
    await get(c, "/doc")
    authed, body = await get(c, "/doc", [("Authorization", "Bearer mallory")])
    assert authed.cache_status == "BYPASS" and body == b"page#2"


async def test_client_no_store_bypasses_lookup_and_storage(origin, make_cache, get):
    origin.static("/p", cache_control="max-age=60")
    c = make_cache()
    up, _ = await get(c, "/p", [("Cache-Control", "no-store")])
    assert up.cache_status == "BYPASS" and len(c) == 0


@pytest.mark.parametrize("header", [("Cache-Control", "no-cache"), ("Cache-Control", "max-age=0"), ("Pragma", "no-cache")])
async def test_client_no_cache_is_ignored_by_default(origin, make_cache, get, header):
    origin.static("/p", cache_control="max-age=60")
    c = make_cache()
    await get(c, "/p")
    up, _ = await get(c, "/p", [header])
    assert up.cache_status == "HIT" and origin.hits["/p"] == 1


@pytest.mark.parametrize("header", [("Cache-Control", "no-cache"), ("Cache-Control", "max-age=0"), ("Pragma", "no-cache")])
async def test_client_no_cache_revalidates_when_honoured(origin, make_cache, get, header):
    async def handler(request, hit):
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"', "Cache-Control": "max-age=60"})
        return web.Response(body=b"page", headers={"ETag": '"v1"', "Cache-Control": "max-age=60"})

    origin.route("/p", handler)
    c = make_cache(honour_request_no_cache=True)
    await get(c, "/p")
    up, body = await get(c, "/p", [header])
    assert (up.cache_status, up.status, body) == ("REVALIDATED", 200, b"page")
    assert origin.hits["/p"] == 2


async def test_pragma_is_ignored_when_cache_control_is_present(origin, make_cache, get):
    origin.static("/p", cache_control="max-age=60")
    c = make_cache(honour_request_no_cache=True)
    await get(c, "/p")
    up, _ = await get(c, "/p", [("Cache-Control", "max-stale=5"), ("Pragma", "no-cache")])
    assert up.cache_status == "HIT"


# ---------------------------------------------------------------------------
# Vary


async def test_vary_keys_entries_on_the_named_request_headers(origin, make_cache, get):
    async def handler(request, hit):
        lang = request.headers.get("Accept-Language", "none")
        return web.Response(text=f"{lang}#{hit}", headers={"Cache-Control": "max-age=60", "Vary": "Accept-Language"})

    origin.route("/p", handler)
    c = make_cache()
    _, en = await get(c, "/p", [("Accept-Language", "en")])
    _, de = await get(c, "/p", [("Accept-Language", "de")])
    up_en, en_again = await get(c, "/p", [("accept-language", "  en ")])
    up_none, none = await get(c, "/p")
    assert (en, de) == (b"en#1", b"de#2")
    assert up_en.cache_status == "HIT" and en_again == b"en#1"
    assert up_none.cache_status == "MISS" and none == b"none#3"
    assert len(c) == 3


async def test_accept_encoding_variants_share_an_entry_when_the_coding_sets_match(origin, make_cache, get):
    origin.static("/p", cache_control="max-age=60", vary="Accept-Encoding")
    c = make_cache()
    await get(c, "/p", [("Accept-Encoding", "gzip, br")])
    same, _ = await get(c, "/p", [("Accept-Encoding", "br;q=1.0,GZIP")])
    other, _ = await get(c, "/p", [("Accept-Encoding", "gzip, br;q=0")])
    assert (same.cache_status, other.cache_status) == ("HIT", "MISS")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("gzip, deflate, br", "br,deflate,gzip"),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", "*,br,gzip"),
        ("gzip;q=0, identity", "identity"),
        ("", ""),
        ("GZIP ;q=0.5", "gzip"),
    ],
)
def test_accept_encoding_normalises_to_the_sorted_accepted_codings(value, expected):
    assert normalise_accept_encoding(value) == expected


# ---------------------------------------------------------------------------
# Freshness and Age (RFC 9111 §4.2)


async def test_entry_is_fresh_until_max_age_then_fetched_again(origin, make_cache, get, clock):
    origin.static("/p", cache_control="max-age=10")
    c = make_cache()
    await get(c, "/p")
    clock.advance(9.9)
    fresh, body = await get(c, "/p")
    clock.advance(0.1)
    expired, new_body = await get(c, "/p")
    assert (fresh.cache_status, body) == ("HIT", b"page#1")
    assert (expired.cache_status, new_body) == ("MISS", b"page#2")
    after, _ = await get(c, "/p")
    assert after.cache_status == "HIT" and origin.hits["/p"] == 2


async def test_s_maxage_takes_precedence_over_max_age(origin, make_cache, get, clock):
    origin.static("/short", cache_control="max-age=100, s-maxage=10")
    origin.static("/long", cache_control="s-maxage=100, max-age=10")
    c = make_cache()
    await get(c, "/short")
    await get(c, "/long")
    clock.advance(11)
    short, _ = await get(c, "/short")
    long, _ = await get(c, "/long")
    assert (short.cache_status, long.cache_status) == ("MISS", "HIT")


async def test_expires_is_read_relative_to_the_origins_date(origin, make_cache, get, clock):
    # The origin's clock is an hour behind ours: only Expires - Date counts.
    date = time.time() - 3600
    origin.static("/p", date=formatdate(date, usegmt=True), expires=formatdate(date + 30, usegmt=True))
    c = make_cache()
    await get(c, "/p")
    clock.advance(29)
    fresh, _ = await get(c, "/p")
    clock.advance(2)
    stale, _ = await get(c, "/p")
    assert (fresh.cache_status, stale.cache_status) == ("HIT", "MISS")


async def test_max_age_takes_precedence_over_expires(origin, make_cache, get, clock):
    origin.static("/p", cache_control="max-age=60", expires="Thu, 01 Jan 1970 00:00:00 GMT")
    c = make_cache()
    await get(c, "/p")
    clock.advance(30)
    up, _ = await get(c, "/p")
    assert up.cache_status == "HIT"


async def test_served_copy_carries_age_from_the_origins_age_plus_time_stored(origin, make_cache, get, clock):
    origin.static("/p", cache_control="max-age=60", age="5")
    c = make_cache()
    miss, _ = await get(c, "/p")
    clock.advance(7.6)
    hit, _ = await get(c, "/p")
    assert miss.header("Age") == "5"  # the origin's own, passed on
    assert hit.header("Age") == "12"
    assert [n for n, _ in hit.headers].count("Age") == 1


async def test_origin_age_counts_against_freshness(origin, make_cache, get, clock):
    origin.static("/p", cache_control="max-age=60", age="55")
    c = make_cache()
    await get(c, "/p")
    clock.advance(5)
    up, _ = await get(c, "/p")
    assert up.cache_status == "MISS"


# ---------------------------------------------------------------------------
# Memory bounds


async def test_byte_bound_evicts_the_least_recently_used_entry(origin, make_cache, get):
    for path in ("/a", "/b", "/c", "/d"):
        origin.static(path, body=b"x" * 1000, cache_control="max-age=60")
    # Unkeyed: with the default keyed forwarding fields every URL also holds
    # a Vary index, and the eviction count would include those.
    c = make_cache(5000, keyed_fields=())
    await get(c, "/a")
    await get(c, "/b")
    await get(c, "/c")
    assert len(c) == 3
    await get(c, "/a")  # /a is now the most recently used
    await get(c, "/d")
    assert c.bytes <= 5000 and c.stats["evictions"] == 1
    statuses = {path: (await get(c, path))[0].cache_status for path in ("/a", "/c", "/d")}
    assert statuses == {"/a": "HIT", "/c": "HIT", "/d": "HIT"}
    b, _ = await get(c, "/b")
    assert b.cache_status == "MISS"


async def _chunked(request: web.Request, parts: list[bytes], headers: dict[str, str]) -> web.StreamResponse:
    resp = web.StreamResponse(headers=headers)
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for part in parts:
        await resp.write(part)
    await resp.write_eof()
    return resp


async def test_oversize_chunked_body_streams_through_complete_and_uncached(origin, make_cache, get):
    parts = [bytes([65 + i]) * 700 for i in range(10)]

    async def handler(request, hit):
        return await _chunked(request, parts, {"Cache-Control": "max-age=60"})

    origin.route("/big", handler)
    c = make_cache(max_entry_bytes=1000)
    up, body = await get(c, "/big")
    assert up.cache_status == "MISS" and body == b"".join(parts)
    again, body2 = await get(c, "/big")
    assert again.cache_status == "MISS" and body2 == body
    assert origin.hits["/big"] == 2 and len(c) == 0


async def _read_content_directly(up) -> bytes:
    """Read as respond.py's rewriter does: ``response.content`` chunks via
    ``readany`` and ``read_nowait`` until ``at_eof``."""
    content = up.response.content
    out = []
    while not content.at_eof():
        first = await content.readany()
        if not first:
            break
        out.append(first)
        while more := content.read_nowait():
            out.append(more)
    return b"".join(out)


async def test_oversize_chunked_body_is_complete_for_readers_of_response_content(origin, make_cache, upstream):
    settings, session = upstream
    parts = [bytes([65 + i]) * 700 for i in range(10)]

    async def handler(request, hit):
        return await _chunked(request, parts, {"Cache-Control": "max-age=60"})

    origin.route("/big", handler)
    c = make_cache(max_entry_bytes=1000)
    url = fetch.upstream_url(settings, "/big")
    up = await c.fetch(
        lambda: fetch.fetch(session, settings, method="GET", url=url, headers=[]),
        method="GET", url=url, request_headers=[],
    )
    try:
        assert up.body_bytes is None
        assert await _read_content_directly(up) == b"".join(parts)
    finally:
        up.release()


async def test_body_that_breaks_off_while_buffered_yields_what_arrived_then_the_error(origin, make_cache, upstream):
    settings, session = upstream

    async def handler(request, hit):
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=60"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"first bytes")
        request.transport.close()  # the origin dies mid-body
        return resp

    origin.route("/broken", handler)
    c = make_cache()
    url = fetch.upstream_url(settings, "/broken")
    up = await c.fetch(
        lambda: fetch.fetch(session, settings, method="GET", url=url, headers=[]),
        method="GET", url=url, request_headers=[],
    )
    got = []
    with pytest.raises(UpstreamBodyError):
        async for chunk in up.body():
            got.append(chunk)
    up.close()
    assert b"".join(got) == b"first bytes"
    assert len(c) == 0


async def test_oversize_body_with_content_length_is_not_buffered(origin, make_cache, get):
    origin.static("/big", body=b"y" * 5000, cache_control="max-age=60")
    c = make_cache(max_entry_bytes=1000)
    up, body = await get(c, "/big")
    assert up.cache_status == "MISS" and body == b"y" * 5000 + b"#1"
    assert up.body_bytes is None and len(c) == 0


async def test_body_up_to_the_entry_limit_is_stored(origin, make_cache, get):
    origin.static("/p", body=b"z" * 998, cache_control="max-age=60")  # 1000 bytes with "#1"
    c = make_cache(max_entry_bytes=1000)
    await get(c, "/p")
    up, body = await get(c, "/p")
    assert up.cache_status == "HIT" and len(body) == 1000


# ---------------------------------------------------------------------------
# Coalescing


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for an event the test cannot await directly; a watchdog, not a timing."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), 30)


async def _held(origin: Origin, path: str, gate: asyncio.Event, headers: dict[str, str]) -> None:
    async def handler(request, hit):
        await gate.wait()
        return web.Response(body=b"page#%d" % hit, headers=headers)

    origin.route(path, handler)


@pytest.mark.parametrize("with_headers", [True, False], ids=["fetch_with_headers", "fetcher-only"])
async def test_one_hundred_concurrent_misses_make_one_origin_request(origin, make_cache, get, with_headers):
    gate = asyncio.Event()
    await _held(origin, "/p", gate, {"Cache-Control": "max-age=60"})
    c = make_cache()
    tasks = [asyncio.create_task(get(c, "/p", with_headers=with_headers)) for _ in range(100)]
    await origin.arrived.wait()  # the leader reached the origin; the rest are queued behind it
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert origin.hits["/p"] == 1
    assert {body for _, body in results} == {b"page#1"}
    assert Counter(up.cache_status for up, _ in results) == {"MISS": 1, "COALESCED": 99}
    assert all(up.header("Age") is not None for up, _ in results if up.cache_status == "COALESCED")


@pytest.mark.parametrize(
    "headers",
    [{"Cache-Control": "private, max-age=60"}, {"Cache-Control": "max-age=60", "Set-Cookie": "sid=1"}],
    ids=["private", "set-cookie"],
)
async def test_private_response_is_never_shared_with_concurrent_waiters(origin, make_cache, get, headers):
    gate = asyncio.Event()
    await _held(origin, "/me", gate, headers)
    c = make_cache()
    tasks = [asyncio.create_task(get(c, "/me")) for _ in range(10)]
    await origin.arrived.wait()
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert origin.hits["/me"] == 10
    assert sorted(body for _, body in results) == sorted(b"page#%d" % i for i in range(1, 11))
    assert {up.cache_status for up, _ in results} == {"MISS"}


async def test_uncacheable_key_is_not_coalesced_afterwards(origin, make_cache, get):
    origin.static("/me", cache_control="private")
    c = make_cache()
    await get(c, "/me")
    gate = asyncio.Event()
    await _held(origin, "/me", gate, {"Cache-Control": "private"})
    tasks = [asyncio.create_task(get(c, "/me")) for _ in range(5)]
    await _until(lambda: origin.hits["/me"] == 6)  # all five arrive while the origin holds them: nobody queued
    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert c.stats["in_flight"] == 0


async def test_waiters_fetch_for_themselves_when_the_leaders_client_goes_away(origin, make_cache, get):
    gate = asyncio.Event()
    await _held(origin, "/p", gate, {"Cache-Control": "max-age=60"})
    c = make_cache()
    leader = asyncio.create_task(get(c, "/p"))
    await origin.arrived.wait()
    waiters = [asyncio.create_task(get(c, "/p")) for _ in range(5)]
    await asyncio.sleep(0)  # let the waiters queue behind the leader
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(*waiters), 30)
    assert all(up.status == 200 and body.startswith(b"page#") for up, body in results)
    assert c.stats["in_flight"] == 0


async def test_waiters_fetch_for_themselves_when_the_leader_gets_an_error(origin, make_cache, get):
    gate = asyncio.Event()

    async def handler(request, hit):
        await gate.wait()
        if hit == 1:
            return web.Response(status=503, text="busy")
        return web.Response(text=f"page#{hit}", headers={"Cache-Control": "max-age=60"})

    origin.route("/p", handler)
    c = make_cache()
    tasks = [asyncio.create_task(get(c, "/p")) for _ in range(5)]
    await origin.arrived.wait()
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert sorted(up.status for up, _ in results) == [200, 200, 200, 200, 503]
    assert origin.hits["/p"] == 5


async def test_waiters_fetch_for_themselves_when_the_origin_is_unreachable(origin, upstream, make_cache):
    settings, session = upstream
    c = make_cache()
    attempts = 0
    gate = asyncio.Event()

    async def failing():
        nonlocal attempts
        attempts += 1
        await gate.wait()
        raise UpstreamConnectError("cannot connect to the origin: refused")

    url = fetch.upstream_url(settings, "/p")
    tasks = [
        asyncio.create_task(c.fetch(failing, method="GET", url=url, request_headers=[])) for _ in range(3)
    ]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    assert all(isinstance(r, UpstreamConnectError) for r in results)
    assert attempts == 3 and c.stats["in_flight"] == 0


async def test_waiters_fetch_for_themselves_when_the_leader_is_cancelled_mid_body(origin, make_cache, get):
    gate = asyncio.Event()
    sent_head = asyncio.Event()

    async def handler(request, hit):
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=60"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"half ")
        if hit == 1:
            sent_head.set()
            await gate.wait()
        await resp.write(b"page#%d" % hit)
        await resp.write_eof()
        return resp

    origin.route("/p", handler)
    c = make_cache()
    leader = asyncio.create_task(get(c, "/p"))
    await sent_head.wait()
    waiters = [asyncio.create_task(get(c, "/p")) for _ in range(3)]
    await asyncio.sleep(0)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    results = await asyncio.wait_for(asyncio.gather(*waiters), 30)
    gate.set()
    assert all(body.startswith(b"half page#") for _, body in results)
    assert c.stats["in_flight"] == 0


async def test_waiters_stop_waiting_after_the_coalesce_timeout(origin, make_cache, get):
    gate = asyncio.Event()
    await _held(origin, "/p", gate, {"Cache-Control": "max-age=60"})
    c = make_cache(coalesce_timeout=0)
    tasks = [asyncio.create_task(get(c, "/p")) for _ in range(3)]
    await _until(lambda: origin.hits["/p"] == 3)  # the waiters gave up and went to the origin
    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def test_a_private_response_never_reaches_another_visitor_under_concurrency(origin, make_cache, get):
    # Mixed traffic: /shared/* pages are public, /me/* pages are private and
    # name the visitor; every private body must name the visitor who asked.
    async def handler(request, hit):
        who = request.headers.get("Cookie", "")
        private = request.path.startswith("/me/")
        cc = "private, max-age=60" if private else "max-age=60"
        return web.Response(text=f"{request.path} {who}", headers={"Cache-Control": cc})

    paths = [f"/{kind}/{i}" for kind in ("me", "shared") for i in range(3)]
    for path in paths:
        origin.route(path, handler)
    c = make_cache()
    jobs = [(paths[(i * 7) % len(paths)], f"v={i % 11}") for i in range(300)]
    results = await asyncio.wait_for(
        asyncio.gather(*(get(c, path, [("Cookie", who)]) for path, who in jobs)), 60
    )
    for (path, who), (up, body) in zip(jobs, results):
        if path.startswith("/me/"):
            assert body == f"{path} {who}".encode(), (path, who, body)
            assert up.cache_status == "MISS"
        else:
            assert body.startswith(path.encode())
    assert origin.hits["/shared/0"] == 1


async def test_close_cancels_background_refreshes(origin, make_cache, get, clock):
    gate = asyncio.Event()
    origin.static("/p", cache_control="max-age=10, stale-while-revalidate=60")
    c = make_cache()
    await get(c, "/p")
    await _held(origin, "/p", gate, {"Cache-Control": "max-age=10"})
    clock.advance(15)
    up, _ = await get(c, "/p")
    assert up.cache_status == "STALE" and c.stats["refreshing"] == 1
    await _until(lambda: origin.hits["/p"] == 2)
    await asyncio.wait_for(c.close(), 30)
    assert c.stats["refreshing"] == 0 and c.stats["in_flight"] == 0


async def test_a_cancelled_waiter_does_not_cancel_the_leader(origin, make_cache, get):
    gate = asyncio.Event()
    await _held(origin, "/p", gate, {"Cache-Control": "max-age=60"})
    c = make_cache()
    leader = asyncio.create_task(get(c, "/p"))
    await origin.arrived.wait()
    waiter = asyncio.create_task(get(c, "/p"))
    await asyncio.sleep(0)
    waiter.cancel()
    gate.set()
    up, body = await asyncio.wait_for(leader, 30)
    assert up.cache_status == "MISS" and body == b"page#1" and len(c) == 1


async def test_head_does_not_wait_for_a_get_in_flight_and_is_never_stored(origin, make_cache, get):
    gate = asyncio.Event()
    await _held(origin, "/p", gate, {"Cache-Control": "max-age=60"})
    c = make_cache()
    leader = asyncio.create_task(get(c, "/p"))
    await origin.arrived.wait()
    head = asyncio.create_task(get(c, "/p", method="HEAD"))
    await _until(lambda: origin.hits["/p"] == 2)  # the HEAD reaches the origin while the GET is held
    gate.set()
    head_up, head_body = await asyncio.wait_for(head, 30)
    assert head_up.cache_status == "MISS" and head_body == b""
    await leader
    up, body = await get(c, "/p")
    assert up.cache_status == "HIT" and body.startswith(b"page#")


# ---------------------------------------------------------------------------
# Stale content and revalidation (RFC 5861, RFC 9111 §4.3)


async def test_stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background(origin, make_cache, get, clock):
    origin.static("/p", cache_control="max-age=10, stale-while-revalidate=60")
    c = make_cache()
    await get(c, "/p")
    clock.advance(15)
    stale1, body1 = await get(c, "/p")
    stale2, body2 = await get(c, "/p")
    assert (stale1.cache_status, stale2.cache_status) == ("STALE", "STALE")
    assert body1 == body2 == b"page#1"
    assert stale1.header("Age") == "15"
    await c.drain()
    assert origin.hits["/p"] == 2  # one refresh for both stale hits
    fresh, body = await get(c, "/p")
    assert (fresh.cache_status, body) == ("HIT", b"page#2")


async def test_past_the_stale_while_revalidate_window_the_request_waits_for_the_origin(origin, make_cache, get, clock):
    origin.static("/p", cache_control="max-age=10, stale-while-revalidate=5")
    c = make_cache()
    await get(c, "/p")
    clock.advance(16)
    up, body = await get(c, "/p")
    assert (up.cache_status, body) == ("MISS", b"page#2")


async def test_must_revalidate_forbids_serving_stale(origin, make_cache, get, clock):
    origin.static("/p", cache_control="max-age=10, must-revalidate, stale-while-revalidate=60")
    c = make_cache()
    await get(c, "/p")
    clock.advance(15)
    up, _ = await get(c, "/p")
    assert up.cache_status == "MISS"


async def test_stale_if_error_serves_stale_when_the_origin_is_down(origin, make_cache, get, clock):
    origin.static("/p", cache_control="max-age=10, stale-if-error=300")
    c = make_cache()
    await get(c, "/p")
    await origin.server.close()  # connection refused from now on
    clock.advance(100)
    up, body = await get(c, "/p")
    assert (up.cache_status, body) == ("STALE", b"page#1")
    assert up.header("Age") == "100"
    clock.advance(250)
    with pytest.raises(UpstreamConnectError):
        await get(c, "/p")


async def test_stale_if_error_serves_every_waiter_stale_when_the_leader_fails(origin, upstream, make_cache, get, clock):
    settings, session = upstream
    origin.static("/p", cache_control="max-age=10, stale-if-error=300")
    c = make_cache()
    await get(c, "/p")
    clock.advance(20)
    gate = asyncio.Event()
    attempts = 0

    async def failing():
        nonlocal attempts
        attempts += 1
        await gate.wait()
        raise UpstreamConnectError("cannot connect to the origin: refused")

    url = fetch.upstream_url(settings, "/p")
    tasks = [asyncio.create_task(c.fetch(failing, method="GET", url=url, request_headers=[])) for _ in range(10)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert attempts == 1
    assert {(up.cache_status, up.body_bytes) for up in results} == {("STALE", b"page#1")}


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_stale_if_error_serves_stale_when_the_origin_answers_5xx(origin, make_cache, get, clock, status):
    async def handler(request, hit):
        if hit == 1:
            return web.Response(text="good", headers={"Cache-Control": "max-age=10, stale-if-error=300"})
        return web.Response(status=status, text="bad")

    origin.route("/p", handler)
    c = make_cache()
    await get(c, "/p")
    clock.advance(20)
    up, body = await get(c, "/p")
    assert (up.status, up.cache_status, body) == (200, "STALE", b"good")


async def test_without_stale_if_error_the_origins_error_is_passed_on(origin, make_cache, get, clock):
    origin.static("/p", cache_control="max-age=10")
    c = make_cache()
    await get(c, "/p")
    await origin.server.close()
    clock.advance(20)
    with pytest.raises(UpstreamConnectError):
        await get(c, "/p")


async def test_stale_entry_with_etag_is_revalidated_and_a_304_refreshes_it(origin, make_cache, get, clock):
    async def handler(request, hit):
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"', "Cache-Control": "max-age=20", "X-Seen": str(hit)})
        return web.Response(body=b"page", headers={"ETag": '"v1"', "Cache-Control": "max-age=10", "X-Seen": str(hit)})

    origin.route("/p", handler)
    c = make_cache()
    await get(c, "/p")
    clock.advance(11)
    up, body = await get(c, "/p")
    assert (up.status, up.cache_status, body) == (200, "REVALIDATED", b"page")
    assert up.header("X-Seen") == "2" and up.header("Content-Length") == "4"
    assert origin.seen["/p"][1]["If-None-Match"] == '"v1"'
    clock.advance(15)  # fresh for the 304's max-age=20
    hit, _ = await get(c, "/p")
    assert hit.cache_status == "HIT" and origin.hits["/p"] == 2


async def test_without_fetch_with_headers_a_stale_entry_is_refetched_in_full(origin, make_cache, get, clock):
    async def handler(request, hit):
        assert "If-None-Match" not in request.headers
        return web.Response(text=f"page#{hit}", headers={"ETag": '"v1"', "Cache-Control": "max-age=10"})

    origin.route("/p", handler)
    c = make_cache()
    await get(c, "/p", with_headers=False)
    clock.advance(11)
    up, body = await get(c, "/p", with_headers=False)
    assert (up.cache_status, body) == ("MISS", b"page#2")
    hit, _ = await get(c, "/p", with_headers=False)
    assert hit.cache_status == "HIT"


async def test_client_conditional_on_a_stale_entry_revalidates_with_the_caches_own_validators(
    origin, make_cache, get, clock
):
    async def handler(request, hit):
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"', "Cache-Control": "max-age=10"})
        return web.Response(body=b"page", headers={"ETag": '"v1"', "Cache-Control": "max-age=10"})

    origin.route("/p", handler)
    c = make_cache()
    await get(c, "/p")
    clock.advance(11)
    up, body = await get(c, "/p", [("If-None-Match", '"old"'), ("Range", "bytes=0-1")])
    assert (up.status, up.cache_status, body) == (200, "REVALIDATED", b"page")
    sent = origin.seen["/p"][1]
    assert sent["If-None-Match"] == '"v1"' and "Range" not in sent


async def test_304_that_sets_a_cookie_is_served_to_its_client_and_drops_the_entry(origin, make_cache, get, clock):
    async def handler(request, hit):
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"', "Set-Cookie": "sid=9"})
        return web.Response(body=b"page", headers={"ETag": '"v1"', "Cache-Control": "max-age=10"})

    origin.route("/p", handler)
    c = make_cache()
    await get(c, "/p")
    clock.advance(11)
    up, body = await get(c, "/p")
    assert (up.cache_status, body, up.header("Set-Cookie")) == ("REVALIDATED", b"page", "sid=9")
    assert len(c) == 0


async def test_stale_entry_with_last_modified_is_revalidated_with_if_modified_since(origin, make_cache, get, clock):
    lm = "Mon, 02 Nov 2026 10:00:00 GMT"

    async def handler(request, hit):
        if request.headers.get("If-Modified-Since") == lm:
            return web.Response(status=304)
        return web.Response(body=b"page", headers={"Last-Modified": lm, "Cache-Control": "max-age=10"})

    origin.route("/p", handler)
    c = make_cache()
    await get(c, "/p")
    clock.advance(11)
    up, body = await get(c, "/p")
    assert (up.cache_status, body) == ("REVALIDATED", b"page")


async def test_client_conditional_miss_is_passed_to_the_origin_and_its_304_not_stored(origin, make_cache, get):
    async def handler(request, hit):
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.Response(body=b"page", headers={"ETag": '"v1"', "Cache-Control": "max-age=60"})

    origin.route("/p", handler)
    c = make_cache()
    up, _ = await get(c, "/p", [("If-None-Match", '"v1"')])
    assert (up.status, up.cache_status, len(c)) == (304, "MISS", 0)
    full, body = await get(c, "/p")
    cond_hit, body2 = await get(c, "/p", [("If-None-Match", '"v1"')])
    assert (full.status, body) == (200, b"page")
    assert (cond_hit.status, cond_hit.cache_status, body2) == (200, "HIT", b"page")


async def test_response_turning_private_drops_the_stored_copy(origin, make_cache, get, clock):
    async def handler(request, hit):
        cc = "max-age=10, stale-while-revalidate=0" if hit == 1 else "private, max-age=10"
        return web.Response(text=f"page#{hit}", headers={"Cache-Control": cc})

    origin.route("/p", handler)
    c = make_cache()
    await get(c, "/p")
    clock.advance(11)
    up, body = await get(c, "/p")
    assert (up.cache_status, body) == ("MISS", b"page#2") and len(c) == 0


# ---------------------------------------------------------------------------
# Invariants over a long mixed sequence


async def test_mixed_sequence_keeps_the_shared_cache_invariants(origin, make_cache, get, clock):
    # A seeded sequence of requests over paths with different policies, the
    # clock moving between them.  Whatever the order: a body served from
    # memory is one the origin produced for that key with a storable policy,
    # a HIT is younger than its max-age, private bodies are never served
    # from memory, and the byte bound holds.
    import random

    rng = random.Random(9111)
    policies = {
        "/fresh": "max-age=10",
        "/private": "private, max-age=10",
        "/swr": "max-age=5, stale-while-revalidate=5",
        "/none": None,
        "/vary": "max-age=8",
    }
    produced: dict[bytes, tuple[str, str | None, float]] = {}  # body -> (path, variant, produced at)

    async def handler(request, hit):
        variant = request.headers.get("X-V") if request.path == "/vary" else None
        body = f"{request.path}|{variant}|{hit}|".encode() + b"x" * rng.randrange(0, 3000)
        produced[body] = (request.path, variant, clock.now)
        headers = {"Vary": "X-V"} if request.path == "/vary" else {}
        if policies[request.path]:
            headers["Cache-Control"] = policies[request.path]
        return web.Response(body=body, headers=headers)

    for path in policies:
        origin.route(path, handler)
    c = make_cache(12_000)
    for _ in range(150):
        batch = []  # 1-6 concurrent requests per step
        for _ in range(rng.randint(1, 6)):
            path = rng.choice(list(policies))
            variant = rng.choice(["a", "b", "c"])
            batch.append((path, variant, [("X-V", variant)] if path == "/vary" else []))
        results = await asyncio.wait_for(asyncio.gather(*(get(c, p, h) for p, _, h in batch)), 30)
        for (path, variant, _), (up, body) in zip(batch, results):
            source_path, source_variant, at = produced[body]
            assert source_path == path
            if path == "/vary":
                assert source_variant == variant
            if up.cache_status != "MISS":
                assert path not in ("/private", "/none"), up.cache_status
                # At least the time since the origin produced it (a background
                # refresh also counts the time it waited for the origin).
                assert int(up.header("Age")) >= int(clock.now - at)
            if up.cache_status == "HIT":
                lifetime = {"/fresh": 10, "/swr": 5, "/vary": 8}[path]
                assert clock.now - at < lifetime and int(up.header("Age")) < lifetime
        assert c.bytes <= 12_000
        if rng.random() < 0.3:
            await c.drain()
        clock.advance(rng.choice([0, 0, 0.5, 1, 2, 4]))
    await c.drain()
    assert c.stats["evictions"] > 0 and c.stats["HIT"] > 0 and c.stats["STALE"] > 0
    assert c.stats["COALESCED"] > 0 and c.stats["in_flight"] == 0


# ---------------------------------------------------------------------------
# Invalidation (RFC 9111 §4.4)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_unsafe_method_with_a_success_invalidates_the_url(origin, make_cache, get, method):
    async def handler(request, hit):
        if request.method == "GET":
            return web.Response(text=f"cart#{hit}", headers={"Cache-Control": "max-age=60", "Vary": "Accept-Encoding"})
        return web.Response(status=303, headers={"Location": "/cart/summary"})

    origin.route("/cart", handler)
    origin.static("/cart/summary", cache_control="max-age=60")
    c = make_cache()
    await get(c, "/cart")
    await get(c, "/cart/summary")
    up, _ = await get(c, "/cart", method=method)
    assert up.cache_status == "BYPASS"
    after, body = await get(c, "/cart")
    summary, _ = await get(c, "/cart/summary")
    assert (after.cache_status, body) == ("MISS", b"cart#3")
    assert summary.cache_status == "MISS"  # the same-origin Location too


async def test_unsafe_method_with_an_error_invalidates_nothing(origin, make_cache, get):
    async def handler(request, hit):
        if request.method == "GET":
            return web.Response(text="page", headers={"Cache-Control": "max-age=60"})
        return web.Response(status=500)

    origin.route("/p", handler)
    c = make_cache()
    await get(c, "/p")
    await get(c, "/p", method="POST")
    up, _ = await get(c, "/p")
    assert up.cache_status == "HIT"


def test_invalidate_forgets_a_url_and_reports_whether_it_was_stored(make_cache):
    c = make_cache()
    assert c.invalidate("http://origin/nothing") is False


# ---------------------------------------------------------------------------
# Failing open


async def test_an_internal_error_fails_open_to_a_plain_fetch(origin, make_cache, get, monkeypatch):
    origin.static("/p", cache_control="max-age=60")
    c = make_cache()

    def broken(*args, **kwargs):
        raise RuntimeError("bug in the cache")

    monkeypatch.setattr(cache_mod._Request, "parse", broken)
    up, body = await get(c, "/p")
    assert (up.status, up.cache_status, body) == (200, "BYPASS", b"page#1")


async def test_an_unreadable_policy_passes_the_response_on_uncached(origin, make_cache, get, monkeypatch):
    origin.static("/p", cache_control="max-age=60")
    c = make_cache()

    def broken(*args, **kwargs):
        raise RuntimeError("bug in the policy")

    monkeypatch.setattr(cache_mod, "response_policy", broken)
    up, body = await get(c, "/p")
    assert (up.cache_status, body) == ("MISS", b"page#1") and origin.hits["/p"] == 1


# ---------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize(
    "values, expected",
    [
        (["max-age=60, public"], {"max-age": "60", "public": None}),
        (['private="Set-Cookie, X-Id", max-age=5'], {"private": "Set-Cookie, X-Id", "max-age": "5"}),
        (["MAX-AGE=1", "max-age=99"], {"max-age": "1"}),  # the first occurrence wins
        (["", " , "], {}),
    ],
)
def test_cache_control_parsing(values, expected):
    assert parse_cache_control(values) == expected


@pytest.mark.parametrize(
    "headers, lifetime",
    [
        ([("Cache-Control", "max-age=abc")], 0.0),  # invalid delta-seconds: stale
        ([("Cache-Control", "max-age=99999999999")], float(2**31)),
        ([("Expires", "not a date")], 0.0),  # invalid Expires: already expired
    ],
)
def test_freshness_edge_cases(headers, lifetime):
    assert response_policy(200, headers).lifetime == lifetime


# ---------------------------------------------------------------------------
# cache_rules._Request: the fields and Vary key read in C-level passes
# agree with the field-by-field rules (repeated lines joined, Cookie with
# "; ", absent names None).
from hypothesis import given, settings as hsettings, strategies as st  # noqa: E402

from edgeproxy.cache_rules import _normalise_field, _Request  # noqa: E402
from edgeproxy.headers import KEYED  # noqa: E402

_FIELD_NAMES = st.sampled_from(["Accept-Encoding", "accept-encoding", "Cookie", "cookie", "X-Forwarded-Host", "Forwarded", "Accept", "X-A"])
_VARY = tuple(sorted({"accept-encoding", "cookie", "accept", "x-a", "forwarded", *KEYED}))


@given(st.lists(st.tuples(_FIELD_NAMES, st.text("ab; ,=gzipbr", max_size=8)), max_size=6))
@hsettings(max_examples=400, deadline=None)
def test_request_fields_and_vary_key_match_the_field_by_field_rules(headers):
    fields: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        fields[lower] = f"{fields[lower]}{'; ' if lower == 'cookie' else ', '}{value}" if lower in fields else value
    req = _Request.parse(headers, honour_no_cache=True, ignored_cookies=frozenset({"edge_vid"}))
    assert req.fields == fields
    assert req.vary_values(_VARY) == tuple(_normalise_field(n, fields.get(n), frozenset({"edge_vid"})) for n in _VARY)
