"""Cache hits answer conditional and Range requests as the origin would
(RFC 9111 §4.3.2, RFC 9110 §13-14): the pure rules, then end to end with a
stored response."""

from __future__ import annotations

import pytest
from aiohttp import web

from edgeproxy.conditional import answer, not_modified
from proxyharness import raw_request, request_bytes, run_origin, run_proxy, write_variant

ETAG = '"v1"'
LAST_MODIFIED = "Mon, 02 Nov 2026 10:00:00 GMT"
STORED = [("Content-Type", "text/plain"), ("ETag", ETAG), ("Last-Modified", LAST_MODIFIED), ("Cache-Control", "public, max-age=60"), ("Content-Length", "26")]
BODY = b"abcdefghijklmnopqrstuvwxyz"


# ---------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "request_headers, expected",
    [
        ([("If-None-Match", ETAG)], True),
        ([("If-None-Match", 'W/"v1"')], True),  # weak comparison (RFC 9110 §13.1.2)
        ([("If-None-Match", '"v0", "v1"')], True),
        ([("If-None-Match", "*")], True),
        ([("If-None-Match", '"v2"')], False),
        ([("If-None-Match", '"v2"'), ("If-Modified-Since", LAST_MODIFIED)], False),  # If-None-Match decides
        ([("If-Modified-Since", LAST_MODIFIED)], True),
        ([("If-Modified-Since", "Tue, 03 Nov 2026 10:00:00 GMT")], True),
        ([("If-Modified-Since", "Sun, 01 Nov 2026 10:00:00 GMT")], False),
        ([("If-Modified-Since", "not a date")], False),
        ([], False),
    ],
)
def test_not_modified_follows_rfc_9110_13_2_2(request_headers, expected):
    assert not_modified("GET", request_headers, STORED) is expected


def test_a_304_keeps_the_validators_and_drops_the_representation_headers():
    status, headers, body = answer("GET", [("If-None-Match", ETAG)], 200, STORED, BODY)
    names = {k.lower() for k, _ in headers}
    assert status == 304 and body == b""
    assert {"etag", "last-modified", "cache-control"} <= names
    assert not names & {"content-length", "content-type"}


@pytest.mark.parametrize(
    "spec, status, content_range, part",
    [
        ("bytes=0-9", 206, "bytes 0-9/26", BODY[:10]),
        ("bytes=20-", 206, "bytes 20-25/26", BODY[20:]),
        ("bytes=-3", 206, "bytes 23-25/26", BODY[-3:]),
        ("bytes=10-999", 206, "bytes 10-25/26", BODY[10:]),
        ("bytes=26-30", 416, "bytes */26", b""),
    ],
)
def test_a_single_byte_range_is_served_from_the_stored_body(spec, status, content_range, part):
    got_status, headers, body = answer("GET", [("Range", spec)], 200, STORED, BODY)
    assert got_status == status
    assert dict(headers)["Content-Range"] == content_range
    assert body == part
    assert "Content-Length" not in dict(headers)  # the responder frames the part


@pytest.mark.parametrize("spec", ["bytes=0-1,5-6", "items=0-1", "bytes=5-2", "bytes=x-"])
def test_ranges_the_proxy_does_not_serve_get_the_full_response(spec):
    assert answer("GET", [("Range", spec)], 200, STORED, BODY) is None


@pytest.mark.parametrize(
    "if_range, partial",
    [(ETAG, True), ('"v0"', False), ('W/"v1"', False), (LAST_MODIFIED, True), ("Tue, 03 Nov 2026 10:00:00 GMT", False)],
)
def test_if_range_needs_a_strong_etag_or_the_exact_date(if_range, partial):
    got = answer("GET", [("Range", "bytes=0-1"), ("If-Range", if_range)], 200, STORED, BODY)
    assert (got is not None and got[0] == 206) is partial


def test_only_a_stored_200_is_answered_and_head_gets_no_range():
    assert answer("GET", [("If-None-Match", ETAG)], 404, STORED, BODY) is None
    assert answer("HEAD", [("Range", "bytes=0-1")], 200, STORED, BODY) is None
    assert answer("HEAD", [("If-None-Match", ETAG)], 200, STORED, BODY)[0] == 304


# ---------------------------------------------------------------------------
# End to end: the second request is a cache hit
# ---------------------------------------------------------------------------
@pytest.fixture
async def cached(tmp_path):
    hits = []

    async def text(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=BODY, headers={"Content-Type": "text/plain", "ETag": ETAG, "Last-Modified": LAST_MODIFIED, "Cache-Control": "public, max-age=60"})

    async def page(request: web.Request) -> web.Response:
        hits.append(request.path)
        html = '<html><body><div data-edge-slot="hero">default</div></body></html>'
        return web.Response(text=html, content_type="text/html", headers={"ETag": ETAG, "Cache-Control": "public, max-age=60"})

    app = web.Application()
    app.router.add_get("/file.txt", text)
    app.router.add_get("/page", page)
    slots = tmp_path / "slots"
    write_variant(slots, "hero", "sale", "<b>sale</b>")
    async with run_origin(app) as url, run_proxy(url, slots, cache_bytes=1 << 20) as proxy:
        first = await raw_request(proxy.port, request_bytes("GET", "/file.txt"))
        assert first.status == 200 and first.body == BODY
        yield proxy, hits


async def test_a_revalidation_of_a_stored_file_gets_a_304_from_the_cache(cached):
    proxy, hits = cached
    resp = await raw_request(proxy.port, request_bytes("GET", "/file.txt", {"If-None-Match": ETAG}))
    assert resp.status == 304 and resp.body == b""
    assert resp.get("etag") == ETAG
    assert resp.get("content-length") is None and resp.get("transfer-encoding") is None
    assert hits == ["/file.txt"]  # the origin was asked once


async def test_if_modified_since_on_a_stored_file_gets_a_304(cached):
    proxy, _hits = cached
    resp = await raw_request(proxy.port, request_bytes("GET", "/file.txt", {"If-Modified-Since": LAST_MODIFIED}))
    assert resp.status == 304


async def test_a_range_of_a_stored_file_gets_a_206_from_the_cache(cached):
    proxy, hits = cached
    resp = await raw_request(proxy.port, request_bytes("GET", "/file.txt", {"Range": "bytes=2-5"}))
    assert resp.status == 206
    assert resp.get("content-range") == "bytes 2-5/26"
    assert resp.body == b"cdef" and resp.get("content-length") == "4"
    assert hits == ["/file.txt"]


async def test_a_range_past_the_end_of_a_stored_file_gets_a_416(cached):
    proxy, _hits = cached
    resp = await raw_request(proxy.port, request_bytes("GET", "/file.txt", {"Range": "bytes=100-"}))
    assert resp.status == 416 and resp.get("content-range") == "bytes */26"


async def test_a_stale_validator_gets_the_full_stored_file(cached):
    proxy, _hits = cached
    resp = await raw_request(proxy.port, request_bytes("GET", "/file.txt", {"If-None-Match": '"v0"'}))
    assert resp.status == 200 and resp.body == BODY


async def test_a_personalised_page_is_never_a_304_or_partial(cached):
    proxy, _hits = cached
    browser = {"Accept": "text/html", "Accept-Encoding": "identity"}
    await raw_request(proxy.port, request_bytes("GET", "/page", browser))  # stored
    for extra in ({"If-None-Match": ETAG}, {"Range": "bytes=0-5"}):
        resp = await raw_request(proxy.port, request_bytes("GET", "/page", {**browser, **extra}))
        assert resp.status == 200
        assert b"<b>sale</b>" in resp.body
