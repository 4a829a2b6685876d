"""The proxy end to end: a real origin, the real proxy, HTTP between them.

Every behaviour of the proxy core (issue 2, CONTRACT §1 and §4) is checked on
the wire: personalisation applied, methods and bodies proxied, status codes
passed through, caching headers, Server-Timing, content codings, charsets,
preview, origin failures and fail-open.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import socket
import zlib

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxyharness import (
    BROWSER,
    BROWSER_UA,
    decode,
    encode,
    raw_get,
    raw_request,
    read_response,
    request_bytes,
    run_origin,
    run_proxy,
    write_variant,
)

PAGE = (
    b'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Shop</title></head>\n'
    b"<body>\n<!-- data-edge-slot=\"hero\" in a comment is not a slot -->\n"
    b'<section  data-edge-slot="hero" class=\'hero\'>Default hero</section>\n'
    b"<p>Middle   stays\tas-is</p>\n"
    b'<div data-edge-slot="banner"></div>\n'
    b"</body></html>\n"
)
HERO = "<h1>Variant hero</h1>"
BANNER = "<b>Free delivery</b>"


def personalised(page: bytes = PAGE) -> bytes:
    """What the proxy should make of ``page`` with the hero and banner variants."""
    out = page.replace(b"Default hero</section>", HERO.encode() + b"</section>", 1)
    return out.replace(b'<div data-edge-slot="banner"></div>', b'<div data-edge-slot="banner">' + BANNER.encode() + b"</div>", 1)


# ---------------------------------------------------------------------------
# The origin
# ---------------------------------------------------------------------------
class Origin:
    """A test origin recording what it was sent."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.pages: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.first_body_chunk = asyncio.Event()
        self.release_slow = asyncio.Event()

    def page(self, path: str, body: bytes, **headers: str) -> None:
        headers = {k.replace("_", "-"): v for k, v in headers.items()}
        headers.setdefault("Content-Type", "text/html; charset=utf-8")
        self.pages[path] = (body, headers)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/echo", self.echo)
        app.router.add_route("*", "/stream-echo", self.stream_echo)
        app.router.add_get("/redirect", self.redirect)
        app.router.add_route("*", "/status/{code}", self.status)
        app.router.add_get("/big.bin", self.big)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/chunked", self.chunked)
        app.router.add_route("*", "/{tail:.*}", self.serve_page)
        return app

    def _note(self, request: web.Request, **extra) -> None:
        self.seen.append({"method": request.method, "path": request.path_qs, "headers": list(request.headers.items()), **extra})

    async def serve_page(self, request: web.Request) -> web.StreamResponse:
        self._note(request)
        if request.path not in self.pages:
            return web.Response(status=404, text="no such page")
        body, headers = self.pages[request.path]
        etag = headers.get("ETag")
        if etag and request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        resp = web.Response(body=body, headers=headers)
        return resp

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        self._note(request, body=body)
        data = {
            "method": request.method,
            "path": request.path_qs,
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "headers": list(request.headers.items()),
        }
        return web.json_response(data)

    async def stream_echo(self, request: web.Request) -> web.Response:
        """Reads the body in chunks; flags the first so a test can prove the
        proxy forwarded it before the client finished sending."""
        digest = hashlib.sha256()
        total = 0
        async for chunk in request.content.iter_any():
            if not self.first_body_chunk.is_set():
                self.first_body_chunk.set()
            digest.update(chunk)
            total += len(chunk)
        return web.json_response({"length": total, "sha256": digest.hexdigest()})

    async def redirect(self, request: web.Request) -> web.Response:
        self._note(request)
        return web.Response(status=302, headers={"Location": "/elsewhere"}, text="moved")

    async def status(self, request: web.Request) -> web.Response:
        self._note(request)
        code = int(request.match_info["code"])
        if code in (204, 304):
            return web.Response(status=code)
        return web.Response(status=code, body=PAGE, content_type="text/html")

    async def big(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = BIG_SIZE
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        block = bytes(range(256)) * 1024  # 256 KiB
        for _ in range(BIG_SIZE // len(block)):
            await resp.write(block)
        await resp.write_eof()
        return resp

    async def slow(self, request: web.Request) -> web.Response:
        await self.release_slow.wait()
        return web.Response(body=PAGE, content_type="text/html")

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        """PAGE cut at the offsets in ``?cuts=`` (comma-separated)."""
        cuts = [int(x) for x in request.query.get("cuts", "").split(",") if x]
        coding = request.query.get("coding", "identity")
        body = encode(coding, PAGE)
        headers = {"Content-Type": "text/html; charset=utf-8"}
        if coding != "identity":
            headers["Content-Encoding"] = coding
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        last = 0
        for cut in [c for c in cuts if c < len(body)] + [len(body)]:
            await resp.write(body[last:cut])
            await asyncio.sleep(0)
            last = cut
        await resp.write_eof()
        return resp


BIG_SIZE = 24 * 1024 * 1024


@pytest.fixture
def slots(tmp_path):
    d = tmp_path / "slots"
    write_variant(d, "hero", "everyone", HERO)
    write_variant(d, "banner", "free-delivery", BANNER)
    return d


@pytest.fixture
async def origin():
    o = Origin()
    o.page("/", PAGE, Cache_Control="public, max-age=60, s-maxage=600", ETag='"v1"', Last_Modified="Mon, 02 Nov 2026 10:00:00 GMT")
    async with run_origin(o.app()) as url:
        o.url = url
        yield o
        o.release_slow.set()


@pytest.fixture
async def proxy(origin, slots):
    async with run_proxy(origin.url, slots, preview_token="s3cret", first_byte_timeout=2) as server:
        yield server


@pytest.fixture
async def client():
    # identity: bodies compare as bytes (the coding tests use raw sockets)
    headers = {**BROWSER, "Accept-Encoding": "identity"}
    async with aiohttp.ClientSession(auto_decompress=False, headers=headers) as session:
        yield session


def url(proxy, path: str = "/") -> str:
    return f"http://127.0.0.1:{proxy.port}{path}"


# ---------------------------------------------------------------------------
# Personalisation
# ---------------------------------------------------------------------------
async def test_variants_replace_slot_inner_html_and_nothing_else(proxy, client):
    async with client.get(url(proxy)) as resp:
        assert resp.status == 200
        body = await resp.read()
    assert body == personalised()


async def test_bot_user_agent_gets_the_origins_page(proxy):
    async with aiohttp.ClientSession(auto_decompress=False) as session:  # aiohttp's own UA: a bot
        async with session.get(url(proxy)) as resp:
            assert await resp.read() == PAGE
            assert "Set-Cookie" not in resp.headers


async def test_page_without_any_of_the_catalogs_slots_is_byte_identical(proxy, origin, client):
    other = b"<!DOCTYPE html><html><body><div data-edge-slot='sidebar'>side</div>\n</body></html>"
    origin.page("/other", other, ETag='"o1"')
    async with client.get(url(proxy, "/other")) as resp:
        assert await resp.read() == other
        assert resp.headers["Content-Length"] == str(len(other))


async def test_empty_catalog_passes_the_page_through_with_its_headers(origin, tmp_path, client):
    async with run_proxy(origin.url, tmp_path / "empty") as proxy:
        async with client.get(url(proxy)) as resp:
            assert await resp.read() == PAGE
            assert resp.headers["ETag"] == '"v1"'
            assert resp.headers["Last-Modified"] == "Mon, 02 Nov 2026 10:00:00 GMT"


async def test_personalised_response_is_private_and_keeps_max_age(proxy, client):
    async with client.get(url(proxy)) as resp:
        await resp.read()
        cc = [d.strip() for d in resp.headers["Cache-Control"].split(",")]
    assert "private" in cc
    assert "max-age=60" in cc
    assert "public" not in cc
    assert not any(d.startswith("s-maxage") for d in cc)


async def test_personalised_response_drops_etag_and_last_modified(proxy, client):
    async with client.get(url(proxy)) as resp:
        await resp.read()
        assert "ETag" not in resp.headers
        assert "Last-Modified" not in resp.headers


async def test_conditional_request_for_a_personalised_page_gets_the_full_page(proxy, client):
    # The visitor's copy may hold another variant: the origin's 304 must not
    # reach them; the proxy asks for the whole page.
    async with client.get(url(proxy), headers={"If-None-Match": '"v1"'}) as resp:
        assert resp.status == 200
        assert await resp.read() == personalised()


@pytest.mark.parametrize("path", ["/", "/other"])
async def test_server_timing_names_every_stage_on_html(proxy, origin, client, path):
    origin.page("/other", b"<html><body>no slots</body></html>")
    async with client.get(url(proxy, path)) as resp:
        await resp.read()
        timing = resp.headers["Server-Timing"]
    names = {part.split(";")[0].strip() for part in timing.split(",")}
    assert {"classify", "choose", "origin", "rewrite", "total"} <= names, timing


@pytest.mark.parametrize("ua", [BROWSER_UA, "curl/8.5.0"])
async def test_server_timing_on_html_that_is_not_personalised(origin, tmp_path, ua):
    # No variants at all (and a bot): still every stage, so dashboards that
    # split Server-Timing see the same names on every HTML response.
    async with run_proxy(origin.url, tmp_path / "empty") as proxy:
        resp = await raw_get(proxy.port, "/", {"User-Agent": ua})
    names = {part.split(";")[0].strip() for part in resp.get("server-timing").split(",")}
    assert {"classify", "choose", "origin", "rewrite", "total"} <= names, resp.get("server-timing")


async def test_response_streamed_in_many_chunks_is_rewritten_the_same(proxy, client):
    cuts = ",".join(str(i) for i in range(7, len(PAGE), 13))
    async with client.get(url(proxy, f"/chunked?cuts={cuts}")) as resp:
        assert await resp.read() == personalised()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=1, max_value=len(PAGE) - 1), max_size=12, unique=True).map(sorted))
async def test_any_chunking_of_the_origin_body_gives_the_same_page(proxy, client, cuts):
    path = "/chunked?cuts=" + ",".join(map(str, cuts))
    async with client.get(url(proxy, path)) as resp:
        assert await resp.read() == personalised()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    coding=st.sampled_from(["identity", "gzip", "deflate", "br", "zstd"]),
    accept=st.sampled_from(["identity", "gzip", "deflate", "br", "zstd", "gzip, br", "*"]),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=10, unique=True).map(sorted),
)
async def test_any_chunking_and_coding_of_the_origin_body_gives_the_same_page(proxy, coding, accept, cuts):
    path = f"/chunked?coding={coding}&cuts=" + ",".join(map(str, cuts))
    resp = await raw_get(proxy.port, path, {**BROWSER, "Accept-Encoding": accept})
    assert resp.status == 200 and resp.complete
    assert decode(resp.get("content-encoding"), resp.body) == personalised()


# ---------------------------------------------------------------------------
# Methods, bodies, status codes
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "PURGE"])
async def test_every_method_reaches_the_origin(proxy, method):
    body = b"payload" if method not in ("GET", "OPTIONS") else b""
    resp = await raw_request(proxy.port, request_bytes(method, "/echo?x=1", {"Content-Type": "text/plain"}, body))
    assert resp.status == 200
    data = json.loads(resp.body)
    assert data["method"] == method
    assert data["path"] == "/echo?x=1"
    assert data["length"] == len(body)


async def test_request_body_reaches_the_origin_intact(proxy, client):
    payload = os.urandom(3 * 1024 * 1024 + 17)
    async with client.post(url(proxy, "/echo"), data=payload, headers={"Content-Type": "application/octet-stream"}) as resp:
        data = await resp.json()
    assert data["length"] == len(payload)
    assert data["sha256"] == hashlib.sha256(payload).hexdigest()


async def test_request_body_is_streamed_to_the_origin_before_the_client_finishes(proxy, origin, client):
    # The client holds back the end of its body until the origin has seen the
    # start: a proxy that buffered the body would never get there.
    part = b"x" * 65536

    async def body():
        yield part
        await asyncio.wait_for(origin.first_body_chunk.wait(), 10)
        yield part

    async with client.post(url(proxy, "/stream-echo"), data=body()) as resp:
        data = await resp.json()
    assert data["length"] == 2 * len(part)


async def test_redirect_is_passed_through_not_followed(proxy, client):
    async with client.get(url(proxy, "/redirect"), allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/elsewhere"
        assert await resp.read() == b"moved"


@pytest.mark.parametrize("code", [201, 400, 403, 404, 410, 418, 500, 503])
async def test_status_codes_are_passed_through_with_the_origins_body(proxy, client, code):
    async with client.get(url(proxy, f"/status/{code}")) as resp:
        assert resp.status == code
        assert await resp.read() == PAGE  # only 200 pages are personalised


@pytest.mark.parametrize(
    "first",
    [
        ("HEAD", "/"),
        ("GET", "/status/204"),
        ("GET", "/status/304"),
        ("HEAD", "/big.bin"),
    ],
)
async def test_head_204_304_carry_no_body(proxy, first):
    # The next response on the same connection must parse: any stray body
    # byte would corrupt it.
    method, target = first
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(request_bytes(method, target, {"Connection": "keep-alive"}))
        writer.write(request_bytes("GET", "/echo", {"Connection": "close"}))
        await writer.drain()
        first_resp = await asyncio.wait_for(read_response(reader, head_only=(method == "HEAD")), 10)
        assert first_resp.status in (200, 204, 304)
        assert (first_resp.get("transfer-encoding") or "") == ""
        second = await asyncio.wait_for(read_response(reader), 10)
        assert second.status == 200
        assert json.loads(second.body)["path"] == "/echo"
    finally:
        writer.close()


async def test_head_of_a_personalised_page_has_the_same_cache_headers_as_get(proxy):
    head = await raw_get(proxy.port, "/", method="HEAD")
    assert head.status == 200
    assert head.get("cache-control").startswith("private")
    assert head.get("etag") is None


# ---------------------------------------------------------------------------
# Non-HTML
# ---------------------------------------------------------------------------
async def test_non_html_is_streamed_unchanged(proxy, origin, client):
    data = b'{"hero": "<section data-edge-slot=\\"hero\\">x</section>"}'
    origin.page("/api.json", data, Content_Type="application/json", ETag='"j"')
    async with client.get(url(proxy, "/api.json")) as resp:
        assert await resp.read() == data
        assert resp.headers["ETag"] == '"j"'


async def test_html_with_a_slot_served_as_text_plain_is_not_rewritten(proxy, origin, client):
    origin.page("/page.txt", PAGE, Content_Type="text/plain")
    async with client.get(url(proxy, "/page.txt")) as resp:
        assert await resp.read() == PAGE


async def test_a_big_binary_body_passes_through_intact(proxy, client):
    digest = hashlib.sha256()
    total = 0
    async with client.get(url(proxy, "/big.bin")) as resp:
        assert resp.headers["Content-Length"] == str(BIG_SIZE)
        async for chunk in resp.content.iter_any():
            digest.update(chunk)
            total += len(chunk)
    block = bytes(range(256)) * 1024
    expected = hashlib.sha256(block * (BIG_SIZE // len(block))).hexdigest()
    assert total == BIG_SIZE
    assert digest.hexdigest() == expected


# ---------------------------------------------------------------------------
# Content codings
# ---------------------------------------------------------------------------
CODINGS = ["gzip", "deflate", "br", "zstd"]


@pytest.mark.parametrize("origin_coding", CODINGS)
@pytest.mark.parametrize("accept", ["gzip", "deflate", "br", "zstd", "br, gzip", "identity", None])
async def test_encoded_page_is_decoded_rewritten_and_reencoded_for_the_client(proxy, origin, origin_coding, accept):
    origin.page(f"/{origin_coding}", encode(origin_coding, PAGE), Content_Encoding=origin_coding, Vary="Accept-Encoding")
    headers = dict(BROWSER)
    if accept is not None:
        headers["Accept-Encoding"] = accept
    resp = await raw_get(proxy.port, f"/{origin_coding}", headers)
    assert resp.status == 200 and resp.complete
    coding = resp.get("content-encoding")
    expected = {"gzip": "gzip", "deflate": "deflate", "br": "br", "zstd": "zstd", "br, gzip": "br"}.get(accept or "")
    assert coding == expected
    assert decode(coding, resp.body) == personalised()
    if resp.get("content-length") is not None:
        assert int(resp.get("content-length")) == len(resp.body)
    assert "accept-encoding" in (resp.get("vary") or "").lower()


async def test_the_origin_is_only_asked_for_codings_the_proxy_can_decode(proxy, origin):
    origin.seen.clear()
    await raw_get(proxy.port, "/", {**BROWSER, "Accept-Encoding": "gzip, compress, exi, br;q=0.5, x-foo"})
    sent = dict((k.lower(), v) for k, v in origin.seen[-1]["headers"]).get("accept-encoding", "")
    codings = {c.split(";")[0].strip() for c in sent.split(",") if c.strip()}
    assert codings and codings <= {"gzip", "deflate", "br", "zstd", "identity"}
    assert "gzip" in codings and "br" in codings


async def test_assets_too_ask_the_origin_only_for_codings_the_proxy_can_decode(proxy, origin):
    # Not a page load (an asset), so nothing is rewritten; still CONTRACT §4.
    origin.seen.clear()
    await raw_get(proxy.port, "/static/app.js", {**BROWSER, "Accept-Encoding": "compress, x-foo, gzip"})
    sent = dict((k.lower(), v) for k, v in origin.seen[-1]["headers"]).get("accept-encoding", "")
    assert {c.strip() for c in sent.split(",")} == {"gzip"}


@pytest.mark.parametrize(
    "content_encoding, body",
    [
        ("gzip, br", encode("br", encode("gzip", PAGE))),  # stacked
        ("compress", b"\x1f\x9d not really LZW " + PAGE),  # unknown
        ("x-custom", PAGE),
    ],
)
async def test_stacked_or_unknown_encodings_pass_through_untouched(proxy, origin, content_encoding, body):
    origin.page("/odd", body, Content_Encoding=content_encoding)
    resp = await raw_get(proxy.port, "/odd", {**BROWSER, "Accept-Encoding": "gzip, br, compress, x-custom"})
    assert resp.status == 200
    assert resp.get("content-encoding") == content_encoding
    assert resp.body == body


async def test_no_transform_page_passes_through_untouched(proxy, origin):
    body = gzip.compress(PAGE)
    origin.page("/nt", body, Content_Encoding="gzip", Cache_Control="no-transform, max-age=5", ETag='"nt"')
    resp = await raw_get(proxy.port, "/nt", {**BROWSER, "Accept-Encoding": "gzip"})
    assert resp.body == body
    assert resp.get("content-encoding") == "gzip"
    assert resp.get("etag") == '"nt"'


async def test_corrupt_gzip_body_is_served_as_the_origin_sent_it(proxy, origin):
    body = gzip.compress(PAGE)[:20] + b"garbage" * 10
    origin.page("/corrupt", body, Content_Encoding="gzip")
    resp = await raw_get(proxy.port, "/corrupt", {**BROWSER, "Accept-Encoding": "gzip"})
    assert resp.status in (200, 502)
    if resp.status == 200 and resp.complete:
        assert resp.body == body
        assert resp.get("content-encoding") == "gzip"


# ---------------------------------------------------------------------------
# Size cap, charsets
# ---------------------------------------------------------------------------
async def test_page_over_the_rewrite_cap_passes_through_unchanged(origin, slots, client):
    big = PAGE.replace(b"</body>", b"<p>" + b"filler " * 2000 + b"</p></body>")
    origin.page("/big", big, ETag='"big"')
    async with run_proxy(origin.url, slots, max_rewrite_bytes=4096) as proxy:
        async with client.get(url(proxy, "/big")) as resp:
            assert await resp.read() == big


async def test_streamed_page_over_the_cap_keeps_its_tail_unchanged(origin, slots, client):
    # Chunked (no Content-Length): the cap is found while streaming; a slot
    # past it goes out as the origin sent it, and the page is never cut.
    filler = b"<p>" + b"filler " * 2000 + b"</p>\n"
    big = PAGE.replace(b"<section", filler + b"<section", 1)

    async def handler(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        for i in range(0, len(big), 1000):
            await resp.write(big[i : i + 1000])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/", handler)
    async with run_origin(app) as origin_url, run_proxy(origin_url, slots, max_rewrite_bytes=4096) as proxy:
        async with client.get(url(proxy)) as resp:
            assert await resp.read() == big


@pytest.mark.parametrize("label", ["windows-1252", "iso-8859-1"])
async def test_non_utf8_page_gets_the_fragment_in_its_charset(origin, tmp_path, client, label):
    slots = tmp_path / "slots"
    write_variant(slots, "hero", "everyone", "Café – 10 € ✓")
    page = '<html><head><title>Caf\u00e9</title></head><body><section data-edge-slot="hero">Déjà</section></body></html>'.encode("cp1252")
    origin.page("/latin", page, Content_Type=f"text/html; charset={label}")
    async with run_proxy(origin.url, slots) as proxy:
        async with client.get(url(proxy, "/latin")) as resp:
            body = await resp.read()
    fragment = "Café – 10 € ✓".encode("cp1252", "xmlcharrefreplace")
    assert fragment == b"Caf\xe9 \x96 10 \x80 &#10003;"
    assert body == page.replace("Déjà".encode("cp1252"), fragment)


async def test_utf16_page_passes_through(origin, slots, client):
    page = '<html><body><section data-edge-slot="hero">x</section></body></html>'.encode("utf-16")
    origin.page("/u16", page, Content_Type="text/html; charset=utf-16")
    async with run_proxy(origin.url, slots) as proxy:
        async with client.get(url(proxy, "/u16")) as resp:
            assert await resp.read() == page


# ---------------------------------------------------------------------------
# Preview
# ---------------------------------------------------------------------------
async def test_preview_token_header_adds_the_explain_trace(proxy, client):
    async with client.get(url(proxy), headers={"X-Edge-Preview-Token": "s3cret"}) as resp:
        await resp.read()
        trace = json.loads(resp.headers["X-Edge-Explain"])
    assert "slots" in json.dumps(trace)
    assert "hero" in json.dumps(trace)


async def test_preview_token_with_edge_preview_forces_the_default(proxy, client):
    async with client.get(url(proxy, "/?edge_preview=hero:none"), headers={"X-Edge-Preview-Token": "s3cret"}) as resp:
        body = await resp.read()
    assert b"Default hero" in body
    assert HERO.encode() not in body


async def test_without_the_token_preview_does_nothing_and_reveals_nothing(proxy, client):
    for headers in ({}, {"X-Edge-Preview-Token": "wrong"}):
        async with client.get(url(proxy, "/?edge_preview=hero:none"), headers=headers) as resp:
            body = await resp.read()
            assert "X-Edge-Explain" not in resp.headers
            assert not any(k.lower().startswith("x-edge") for k in resp.headers)
        assert body == personalised()


async def test_the_preview_token_is_never_sent_to_the_origin(proxy, origin, client):
    origin.seen.clear()
    async with client.get(url(proxy, "/?edge_preview_token=s3cret&a=1"), headers={"X-Edge-Preview-Token": "s3cret"}) as resp:
        await resp.read()
    seen = origin.seen[-1]
    assert "s3cret" not in seen["path"]
    assert seen["path"] == "/?a=1"
    assert not any("s3cret" in v for _, v in seen["headers"])


# ---------------------------------------------------------------------------
# Origin failures
# ---------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_origin_down_is_a_502(tmp_path, client):
    async with run_proxy(f"http://127.0.0.1:{_closed_port()}", tmp_path / "slots", connect_timeout=1) as proxy:
        async with client.get(url(proxy)) as resp:
            assert resp.status == 502
            assert resp.headers["Cache-Control"] == "no-store"


async def test_origin_slow_to_answer_is_a_504(origin, slots, client):
    async with run_proxy(origin.url, slots, first_byte_timeout=0.2) as proxy:
        async with client.get(url(proxy, "/slow")) as resp:
            assert resp.status == 504
        origin.release_slow.set()
        async with client.get(url(proxy)) as resp:  # and it keeps serving
            assert resp.status == 200


async def _dying_origin(head: bytes, parts: list[bytes], sent: asyncio.Event):
    """A raw origin that sends ``head`` and ``parts`` then drops the connection."""

    async def serve(reader, writer):
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(head)
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.05)
        sent.set()
        writer.transport.abort()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


@pytest.mark.parametrize(
    "kind",
    ["binary-content-length", "html-chunked-rewritten", "html-content-length-rewritten"],
)
async def test_origin_dying_mid_body_aborts_the_client_response(slots, kind):
    if kind == "binary-content-length":
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
        parts = [b"a" * 5000, b"b" * 5000]
    elif kind == "html-chunked-rewritten":
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n"
        parts = [b"%x\r\n%s\r\n" % (len(PAGE[:60]), PAGE[:60]), b"%x\r\n%s\r\n" % (len(PAGE[60:150]), PAGE[60:150])]
    else:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(PAGE)
        parts = [PAGE[:60], PAGE[60:150]]
    sent = asyncio.Event()
    server = await _dying_origin(head, parts, sent)
    port = server.sockets[0].getsockname()[1]
    try:
        async with run_proxy(f"http://127.0.0.1:{port}", slots) as proxy:
            resp = await raw_get(proxy.port, "/", BROWSER)
            # Either a clean 502 before any byte of the page, or an aborted
            # body: never a "complete" 200 with half a page.
            assert resp.status == 502 or not resp.complete, (resp.status, resp.headers, resp.body)
            # ...and the proxy keeps serving.
            again = await raw_get(proxy.port, "/", BROWSER)
            assert again.status in (200, 502)
    finally:
        server.close()
        await server.wait_closed()


# ---------------------------------------------------------------------------
# Fail open
# ---------------------------------------------------------------------------
async def test_slot_without_an_end_tag_is_left_alone_while_others_are_rewritten(proxy, origin, client):
    page = (
        b"<html><body>\n<div data-edge-slot=\"banner\"></div>\n"
        b'<section data-edge-slot="hero">Default hero <p>never closed</p>\n</body></html>\n'
    )
    origin.page("/broken", page)
    async with client.get(url(proxy, "/broken")) as resp:
        body = await resp.read()
        assert resp.status == 200
    assert body == page.replace(b'banner"></div>', b'banner">' + BANNER.encode() + b"</div>")


async def test_tiny_budget_serves_the_origins_page_never_a_5xx(origin, slots, client):
    async with run_proxy(origin.url, slots, budget_ms=0.0001) as proxy:
        for _ in range(3):
            async with client.get(url(proxy)) as resp:
                assert resp.status == 200
                assert await resp.read() == PAGE


async def test_a_fragment_that_fails_to_render_leaves_the_origins_slot(origin, tmp_path, client):
    # A sort variant on a slot whose children are not elements to sort: the
    # rewriter gives up on that slot only.
    slots = tmp_path / "slots"
    write_variant(slots, "banner", "free-delivery", BANNER)
    (slots / "hero").mkdir()
    (slots / "hero" / "by-price.toml").write_text('priority = 1\nsort = ["data-price"]\n')
    async with run_proxy(origin.url, slots) as proxy:
        async with client.get(url(proxy)) as resp:
            body = await resp.read()
            assert resp.status == 200
    assert b"Default hero" in body
    assert BANNER.encode() in body


# ---------------------------------------------------------------------------
# Odd but valid bodies
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content_encoding, body",
    [
        ("gzip", gzip.compress(PAGE[:100]) + gzip.compress(PAGE[100:])),  # two gzip members
        ("x-gzip", gzip.compress(PAGE)),
        ("deflate", zlib.compress(PAGE)[2:-4]),  # raw deflate, as some servers send it
        ("identity", PAGE),
        ("GZIP", gzip.compress(PAGE)),
    ],
    ids=["gzip-members", "x-gzip", "raw-deflate", "identity", "upper-case"],
)
async def test_odd_but_valid_encodings_are_personalised_whole(proxy, origin, content_encoding, body):
    origin.page("/odd-valid", body, Content_Encoding=content_encoding)
    resp = await raw_get(proxy.port, "/odd-valid", {**BROWSER, "Accept-Encoding": "identity"})
    assert resp.status == 200 and resp.complete
    assert decode(resp.get("content-encoding"), resp.body) == personalised()


@pytest.mark.parametrize("coding", ["gzip", "identity"])
async def test_empty_html_body_is_fine(proxy, origin, coding):
    origin.page("/empty", encode(coding, b""), Content_Encoding=coding)
    resp = await raw_get(proxy.port, "/empty", {**BROWSER, "Accept-Encoding": "identity"})
    assert resp.status == 200 and resp.complete
    assert decode(resp.get("content-encoding"), resp.body) == b""


async def test_expect_100_continue_is_answered_before_the_body(proxy):
    # curl sends Expect: 100-continue for large bodies and waits for the 100.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        body = b"x" * 5000
        writer.write(request_bytes("POST", "/echo", {"Expect": "100-continue", "Content-Length": str(len(body))}))
        await writer.drain()
        interim = await asyncio.wait_for(reader.readline(), 5)
        assert interim.startswith(b"HTTP/1.1 100")
        await reader.readline()
        writer.write(body)
        await writer.drain()
        resp = await asyncio.wait_for(read_response(reader), 10)
        assert resp.status == 200
        assert json.loads(resp.body)["length"] == len(body)
    finally:
        writer.close()


async def test_a_client_that_goes_away_mid_body_does_not_hurt_the_proxy(proxy, client):
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(request_bytes("GET", "/big.bin"))
        await writer.drain()
        await reader.readexactly(100_000)
        writer.transport.abort()
    async with client.get(url(proxy, "/big.bin")) as resp:
        total = 0
        async for chunk in resp.content.iter_any():
            total += len(chunk)
    assert total == BIG_SIZE


@pytest.mark.parametrize("kind", ["binary", "html-rewritten-chunked", "html-rewritten-length", "html-gzip-rewritten"])
async def test_origin_dying_after_the_head_was_sent_aborts_the_body(slots, kind):
    # The client reads the head, then the origin dies: the client must see a
    # broken body (no terminating chunk / short of Content-Length), never a
    # clean end, and the proxy keeps serving.
    go = asyncio.Event()
    page = PAGE + b"<p>" + b"tail " * 2000 + b"</p>"
    if kind == "binary":
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
        first = b"a" * 5000
    elif kind == "html-rewritten-chunked":
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n"
        first = b"%x\r\n%s\r\n" % (200, page[:200])
    elif kind == "html-rewritten-length":
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(page)
        first = page[:200]
    else:
        body = gzip.compress(page)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
        first = body[: len(body) // 2]

    async def serve(reader, writer):
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(head + first)
        await writer.drain()
        await go.wait()
        writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with run_proxy(f"http://127.0.0.1:{port}", slots) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(request_bytes("GET", "/", {**BROWSER, "Accept-Encoding": "gzip"}))
            await writer.drain()
            resp = await asyncio.wait_for(read_response(reader, head_only=True), 10)
            assert resp.status == 200
            go.set()
            rest = await asyncio.wait_for(read_response_body(reader, resp), 10)
            writer.close()
            assert not rest.complete
            again = await raw_get(proxy.port, "/", BROWSER)  # the proxy still answers
            assert again.status in (200, 502)
    finally:
        go.set()
        server.close()
        await server.wait_closed()


async def read_response_body(reader, head):
    """The body of a response whose head ``read_response(head_only=True)`` read."""
    import proxyharness

    lines = [f"HTTP/1.1 {head.status} {head.reason}\r\n"] + [f"{k}: {v}\r\n" for k, v in head.headers] + ["\r\n"]
    replay = asyncio.StreamReader()
    replay.feed_data("".join(lines).encode("latin-1"))

    async def pump():
        while True:
            data = await reader.read(65536)
            if not data:
                replay.feed_eof()
                return
            replay.feed_data(data)

    task = asyncio.ensure_future(pump())
    try:
        return await proxyharness.read_response(replay)
    finally:
        task.cancel()


# ---------------------------------------------------------------------------
# Streaming: bytes go out as they arrive
# ---------------------------------------------------------------------------
async def _stalling_origin(parts: list[bytes], gates: list[asyncio.Event], content_type: str = "text/html"):
    """Sends ``parts[i]`` then waits for ``gates[i]`` (one gate per part but the last)."""

    async def handler(request):
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        for i, part in enumerate(parts):
            await resp.write(part)
            if i < len(gates):
                await gates[i].wait()
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/", handler)
    return app


async def _read_until(reader: asyncio.StreamReader, needle: bytes, timeout: float = 10) -> bytes:
    """Raw bytes from the socket until ``needle`` shows up in the de-chunked text
    (chunk-size lines are left in: we only look for the needle)."""
    seen = b""
    while needle not in seen:
        data = await asyncio.wait_for(reader.read(65536), timeout)
        if not data:
            break
        seen += data
    return seen


@pytest.mark.parametrize("variants", [True, False], ids=["with-variants", "without"])
async def test_bytes_before_the_first_slot_reach_the_client_before_the_origin_finishes(tmp_path, slots, variants):
    head_part = PAGE[: PAGE.index(b"<section")]
    gate = asyncio.Event()
    app = await _stalling_origin([head_part, PAGE[len(head_part) :]], [gate])
    try:
        async with run_origin(app) as origin_url, run_proxy(origin_url, slots if variants else tmp_path / "none") as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(request_bytes("GET", "/", {**BROWSER, "Accept-Encoding": "identity"}))
            await writer.drain()
            # The origin is stalled after the page head: a proxy that buffered
            # the page would never send this.
            seen = await _read_until(reader, b"<title>Shop</title>")
            assert b"<title>Shop</title>" in seen
            gate.set()
            rest = await asyncio.wait_for(reader.read(), 10)
            writer.close()
    finally:
        gate.set()
    assert (HERO.encode() in seen + rest) is variants


async def test_a_slot_is_held_only_until_its_end_tag(slots):
    # Stalled inside the banner slot: the hero (rewritten) and everything up
    # to the banner's start tag are already with the client.
    cut = PAGE.index(b'<div data-edge-slot="banner">')
    gate = asyncio.Event()
    app = await _stalling_origin([PAGE[:cut], PAGE[cut:]], [gate])
    try:
        async with run_origin(app) as origin_url, run_proxy(origin_url, slots) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(request_bytes("GET", "/", {**BROWSER, "Accept-Encoding": "identity"}))
            await writer.drain()
            seen = await _read_until(reader, b"Middle   stays")
            assert HERO.encode() in seen
            gate.set()
            await asyncio.wait_for(reader.read(), 10)
            writer.close()
    finally:
        gate.set()


async def test_http_1_0_client_gets_a_close_delimited_personalised_page(proxy):
    resp = await raw_request(proxy.port, b"GET / HTTP/1.0\r\nHost: shop.example\r\nUser-Agent: " + BROWSER_UA.encode() + b"\r\nAccept-Encoding: identity\r\n\r\n")
    assert resp.status == 200
    assert "chunked" not in (resp.get("transfer-encoding") or "")
    assert resp.body == personalised()


async def test_many_concurrent_visitors_each_get_the_whole_page(proxy, client):
    async def one(i):
        async with client.get(url(proxy, f"/?i={i}")) as resp:
            return resp.status, await resp.read()

    results = await asyncio.gather(*(one(i) for i in range(60)))
    assert all(status == 200 and body == personalised() for status, body in results)


async def test_a_large_streamed_page_with_slots_near_the_end_is_rewritten(slots):
    filler = b"<p>" + b"lorem ipsum " * 200_000 + b"</p>\n"  # ~2.4 MB before the slots
    page = PAGE.replace(b"<body>\n", b"<body>\n" + filler, 1)

    async def handler(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
        await resp.prepare(request)
        for i in range(0, len(page), 65_000):
            await resp.write(page[i : i + 65_000])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/", handler)
    async with run_origin(app) as origin_url, run_proxy(origin_url, slots) as proxy:
        resp = await raw_get(proxy.port, "/", {**BROWSER, "Accept-Encoding": "gzip"})
    assert resp.complete
    assert decode(resp.get("content-encoding"), resp.body) == personalised(page)


# ---------------------------------------------------------------------------
# Cookies on the wire (CONTRACT §5)
# ---------------------------------------------------------------------------
async def test_visitor_cookie_is_http_only_lax_and_only_on_html(proxy):
    page = await raw_get(proxy.port, "/", BROWSER)
    cookies = page.get_all("set-cookie")
    assert any(c.startswith("edge_vid=") for c in cookies), cookies
    for c in cookies:
        assert "HttpOnly" in c and "SameSite=Lax" in c and "Secure" not in c
    binary = await raw_get(proxy.port, "/big.bin", method="HEAD")
    assert binary.get_all("set-cookie") == []


async def test_cookies_are_secure_behind_a_trusted_https_proxy(origin, slots):
    async with run_proxy(origin.url, slots, trust_proxy="127.0.0.0/8") as proxy:
        page = await raw_get(proxy.port, "/", {**BROWSER, "X-Forwarded-Proto": "https"})
    cookies = page.get_all("set-cookie")
    assert cookies and all("Secure" in c for c in cookies)


async def test_an_untrusted_clients_forwarded_proto_does_not_make_cookies_secure(proxy):
    page = await raw_get(proxy.port, "/", {**BROWSER, "X-Forwarded-Proto": "https"})
    assert page.get_all("set-cookie") and not any("Secure" in c for c in page.get_all("set-cookie"))


async def test_a_preview_link_sets_a_cookie_that_keeps_preview_on(proxy, origin):
    first = await raw_get(proxy.port, "/?edge_preview_token=s3cret&edge_preview=hero:none", BROWSER)
    assert first.get("x-edge-explain") is not None
    preview = [c for c in first.get_all("set-cookie") if c.startswith("edge_preview_token=")]
    assert preview and "s3cret" not in preview[0]
    cookie = preview[0].split(";")[0]
    origin.seen.clear()
    again = await raw_get(proxy.port, "/?edge_preview=hero:none&n=2", {**BROWSER, "Cookie": cookie + "; shop=1"})
    assert again.get("x-edge-explain") is not None
    assert b"Default hero" in again.body
    sent = dict((k.lower(), v) for k, v in origin.seen[-1]["headers"])
    assert sent.get("cookie") == "shop=1"  # the proxy's own cookie stays with the proxy


async def test_a_slow_origin_does_not_use_up_the_personalisation_budget(slots):
    # The budget (here 40 ms) counts classify + choose + rewrite, never the
    # time spent waiting for the origin's head (150 ms) or its next chunk.
    cut = PAGE.index(b"<p>Middle")

    async def handler(request):
        await asyncio.sleep(0.15)
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        await resp.write(PAGE[:cut])
        await asyncio.sleep(0.15)
        await resp.write(PAGE[cut:])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/", handler)
    async with run_origin(app) as origin_url, run_proxy(origin_url, slots, budget_ms=40) as proxy:
        resp = await raw_get(proxy.port, "/", {**BROWSER, "Accept-Encoding": "identity"})
    assert resp.body == personalised()


# ---------------------------------------------------------------------------
# Conditional and range requests
# ---------------------------------------------------------------------------
async def test_a_page_with_nothing_to_personalise_keeps_its_304(origin, tmp_path):
    async with run_proxy(origin.url, tmp_path / "none") as proxy:
        resp = await raw_get(proxy.port, "/", {**BROWSER, "If-None-Match": '"v1"'})
    assert resp.status == 304
    assert resp.body == b""


async def test_a_range_request_for_a_personalised_page_gets_the_whole_page(proxy, origin):
    resp = await raw_get(proxy.port, "/", {**BROWSER, "Range": "bytes=0-9", "Accept-Encoding": "identity"})
    assert resp.status == 200
    assert resp.body == personalised()
    assert resp.get("content-range") is None


async def test_a_range_request_that_is_not_a_page_load_reaches_the_origin(proxy, client):
    # A fetch()/XHR (Sec-Fetch-Dest: empty) is never personalised, so its
    # Range and validators go to the origin as sent.
    headers = {"Range": "bytes=10-19", "If-None-Match": '"x"', "Sec-Fetch-Dest": "empty"}
    async with client.get(url(proxy, "/echo"), headers=headers) as resp:
        sent = dict((await resp.json())["headers"])
    assert sent["Range"] == "bytes=10-19"
    assert sent["If-None-Match"] == '"x"'


async def test_an_encoded_preview_token_parameter_is_not_sent_to_the_origin(proxy, origin):
    origin.seen.clear()
    await raw_get(proxy.port, "/?edge%5Fpreview%5Ftoken=s3cret&a=1", BROWSER)
    assert "s3cret" not in origin.seen[-1]["path"]


async def test_an_upstream_with_a_base_path_is_prefixed(origin, tmp_path):
    origin.page("/base/page", PAGE)
    async with run_proxy(origin.url + "/base", tmp_path / "none") as proxy:
        resp = await raw_get(proxy.port, "/page?x=1", BROWSER)
    assert resp.status == 200 and resp.body == PAGE
    assert origin.seen[-1]["path"] == "/base/page?x=1"


@pytest.mark.parametrize("content_type", ["application/octet-stream", "text/html"])
async def test_an_origin_that_stalls_mid_body_is_cut_off_after_the_idle_timeout(slots, content_type):
    stalled = asyncio.Event()
    never = asyncio.Event()

    async def handler(request):
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        await resp.write(PAGE[:100])
        stalled.set()
        await never.wait()
        return resp

    app = web.Application()
    app.router.add_get("/", handler)
    try:
        async with run_origin(app) as origin_url, run_proxy(origin_url, slots, idle_timeout=0.3) as proxy:
            resp = await raw_get(proxy.port, "/", BROWSER)
            # a clean 502/504 before any byte, or a broken body: never a hang
            # and never a clean end
            assert resp.status in (502, 504) or not resp.complete
            assert (await raw_get(proxy.port, "/echo", BROWSER)).status in (200, 404, 502, 504)
    finally:
        never.set()


# ---------------------------------------------------------------------------
# Sort variants through the proxy
# ---------------------------------------------------------------------------
GRID_ITEMS = [
    b'<li data-sku="A1" data-category="trail-running" data-price="89.00" data-stock="12">A1 <b>trail</b></li>',
    b"<li data-sku='B7' data-category=formal data-price=\"120.00\"   data-stock=\"0\">B7</li>",
    b'<li data-sku="C3" data-category="road" data-price="12.5" data-stock="3"><!-- c3 --></li>',
]


def grid_page(items) -> bytes:
    return (
        b'<html><body>\n<ul data-edge-slot="product-grid" class="grid">\n  '
        + b"\n  ".join(items)
        + b"\n</ul>\n<footer>end</footer></body></html>"
    )


@pytest.mark.parametrize(
    "keys, order",
    [
        (["data-price"], [2, 0, 1]),
        (["-data-stock"], [0, 2, 1]),
        (["pin:B7,C3"], [1, 2, 0]),
    ],
)
async def test_a_sort_variant_reorders_the_children_byte_for_byte(origin, tmp_path, keys, order):
    from proxyharness import write_sort

    slots = tmp_path / "slots"
    write_sort(slots, "product-grid", "sorted", keys)
    origin.page("/grid", grid_page(GRID_ITEMS))
    async with run_proxy(origin.url, slots) as proxy:
        resp = await raw_get(proxy.port, "/grid", {**BROWSER, "Accept-Encoding": "identity"})
    assert resp.body == grid_page([GRID_ITEMS[i] for i in order])


# ---------------------------------------------------------------------------
# With the upstream cache on (as in production)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("origin_coding", ["identity", "gzip", "br"])
@pytest.mark.parametrize("accept", ["gzip", "br", None])
async def test_a_cached_page_is_personalised_on_every_hit(origin, slots, origin_coding, accept):
    origin.page(f"/cached-{origin_coding}", encode(origin_coding, PAGE), Content_Encoding=origin_coding, Cache_Control="public, max-age=60")
    headers = {**BROWSER, **({"Accept-Encoding": accept} if accept else {})}
    async with run_proxy(origin.url, slots, cache_bytes=16 * 1024 * 1024) as proxy:
        origin.seen.clear()
        for _ in range(3):
            resp = await raw_get(proxy.port, f"/cached-{origin_coding}", headers)
            assert resp.status == 200 and resp.complete
            assert resp.get("content-encoding") == accept
            assert decode(resp.get("content-encoding"), resp.body) == personalised()
            assert resp.get("cache-control") == "private, max-age=60"
    assert len(origin.seen) == 1  # two hits from memory


async def test_a_cached_page_without_variants_is_byte_identical(origin, tmp_path):
    async with run_proxy(origin.url, tmp_path / "none", cache_bytes=16 * 1024 * 1024) as proxy:
        for _ in range(2):
            resp = await raw_get(proxy.port, "/", {**BROWSER, "Accept-Encoding": "identity"})
            assert resp.body == PAGE


@pytest.mark.parametrize("origin_coding", ["identity", "gzip"])
async def test_head_of_a_personalised_page_has_the_same_representation_headers_as_get(proxy, origin, origin_coding):
    # RFC 9110 §9.3.2: HEAD's header fields are those GET would send.
    origin.page("/hg", encode(origin_coding, PAGE), Content_Encoding=origin_coding)
    headers = {**BROWSER, "Accept-Encoding": "br, gzip"}
    get = await raw_get(proxy.port, "/hg", headers)
    head = await raw_get(proxy.port, "/hg", headers, method="HEAD")
    for name in ("content-encoding", "cache-control", "etag", "last-modified"):
        assert head.get(name) == get.get(name), name
    assert "accept-encoding" in (head.get("vary") or "").lower()
    if head.get("content-length") is not None:  # optional on HEAD, but never the origin's other length
        assert int(head.get("content-length")) == len(get.body)


@pytest.mark.parametrize("content_type", ["text/html", "application/octet-stream"])
@pytest.mark.parametrize("version", [b"HTTP/1.0", b"HTTP/1.1"])
async def test_a_close_delimited_origin_body_is_a_complete_body(slots, content_type, version):
    # No Content-Length, no chunking: the body ends when the origin closes.
    async def serve(reader, writer):
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(version + b" 200 OK\r\nContent-Type: " + content_type.encode() + b"\r\nConnection: close\r\n\r\n")
        for i in range(0, len(PAGE), 50):
            writer.write(PAGE[i : i + 50])
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with run_proxy(f"http://127.0.0.1:{port}", slots) as proxy:
            resp = await raw_get(proxy.port, "/", {**BROWSER, "Accept-Encoding": "identity"})
    finally:
        server.close()
        await server.wait_closed()
    assert resp.status == 200 and resp.complete
    assert resp.body == (personalised() if content_type == "text/html" else PAGE)


async def test_an_early_hints_103_before_the_page_does_not_replace_it(slots):
    # Storefront platforms send 103 Early Hints before the page.
    async def serve(reader, writer):
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload; as=style\r\n\r\n")
        await writer.drain()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(PAGE) + PAGE)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with run_proxy(f"http://127.0.0.1:{port}", slots) as proxy:
            resp = await raw_get(proxy.port, "/", {**BROWSER, "Accept-Encoding": "identity"})
    finally:
        server.close()
        await server.wait_closed()
    assert resp.status == 200
    assert resp.body == personalised()


async def test_preview_shows_a_variant_before_it_goes_live_only_with_the_token(origin, tmp_path):
    slots = tmp_path / "slots"
    write_variant(slots, "hero", "black-friday", "<h1>Black Friday</h1>", header="priority = 5\nstart = 2099-11-27T00:00:00Z")
    async with run_proxy(origin.url, slots, preview_token="s3cret") as proxy:
        live = await raw_get(proxy.port, "/", {**BROWSER, "Accept-Encoding": "identity"})
        assert b"Black Friday" not in live.body  # not live yet
        forced = await raw_get(
            proxy.port, "/?edge_preview=hero:black-friday", {**BROWSER, "Accept-Encoding": "identity", "X-Edge-Preview-Token": "s3cret"}
        )
        assert b"<h1>Black Friday</h1>" in forced.body
        assert json.loads(forced.get("x-edge-explain"))["slots"]["hero"]["variant"] == "black-friday"
        assert forced.get("cache-control").startswith("private")  # never stored by a shared cache
        sneaky = await raw_get(proxy.port, "/?edge_preview=hero:black-friday", {**BROWSER, "Accept-Encoding": "identity"})
        assert b"Black Friday" not in sneaky.body
        assert sneaky.get("x-edge-explain") is None
