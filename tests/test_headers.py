"""Header hygiene (RFC 9110 §7.6.1), forwarding headers and the one upstream.

On the wire through the real proxy (raw sockets, so nothing in between adds
or hides a header), then the pure functions of ``edgeproxy.headers`` as
tables.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from aiohttp import web

from edgeproxy.headers import client_ip, forward_request_headers, request_facts, strip_hop_by_hop
from proxyharness import raw_request, request_bytes, run_origin, run_proxy


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"body": body.decode("latin-1"), "path": request.path_qs, "raw_path": request.raw_path, "headers": list(request.headers.items())})


@pytest.fixture
async def origin():
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    async with run_origin(app) as url:
        yield url


@pytest.fixture
async def proxy(origin, tmp_path):
    async with run_proxy(origin, tmp_path / "slots") as server:
        yield server


@pytest.fixture
async def trusting_proxy(origin, tmp_path):
    async with run_proxy(origin, tmp_path / "slots", trust_proxy="127.0.0.0/8") as server:
        yield server


def seen_by_origin(resp) -> dict:
    assert resp.status == 200, (resp.status, resp.body[:200])
    data = json.loads(resp.body)
    data["names"] = {k.lower() for k, _ in data["headers"]}
    data["h"] = {}
    for k, v in data["headers"]:
        data["h"].setdefault(k.lower(), v)
    return data


# ---------------------------------------------------------------------------
# Client -> origin
# ---------------------------------------------------------------------------
async def test_hop_by_hop_request_headers_are_not_forwarded(proxy):
    resp = await raw_request(
        proxy.port,
        request_bytes(
            "GET",
            "/echo",
            [
                ("Host", "shop.example"),
                ("Connection", "close, X-Listed, x-also-listed"),
                ("X-Listed", "secret"),
                ("X-Also-Listed", "secret"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Trailer", "Expires"),
                ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
                ("Proxy-Connection", "keep-alive"),
                ("X-Kept", "yes"),
            ],
        ),
    )
    seen = seen_by_origin(resp)
    for name in ("x-listed", "x-also-listed", "keep-alive", "te", "trailer", "proxy-authorization", "proxy-connection"):
        assert name not in seen["names"], name
    assert seen["h"]["x-kept"] == "yes"
    # the origin's connection header is the proxy's own business, not the client's list
    assert "x-listed" not in seen["h"].get("connection", "").lower()


async def test_request_transfer_encoding_is_not_forwarded_verbatim(proxy):
    body = b"5\r\nhello\r\n0\r\n\r\n"
    resp = await raw_request(
        proxy.port,
        request_bytes("POST", "/echo", [("Transfer-Encoding", "chunked"), ("Content-Type", "text/plain")], body),
    )
    seen = seen_by_origin(resp)
    # The proxy re-frames the body itself; the client's framing is hop-by-hop.
    assert seen["body"] == "hello"
    assert seen["h"].get("transfer-encoding", "chunked").lower() == "chunked"


async def test_forwarding_headers_are_set_for_the_origin(proxy):
    resp = await raw_request(proxy.port, request_bytes("GET", "/echo", {"Host": "www.shop.example"}))
    seen = seen_by_origin(resp)
    assert seen["h"]["x-forwarded-for"] == "127.0.0.1"
    assert seen["h"]["x-forwarded-proto"] == "http"
    assert seen["h"]["x-forwarded-host"] == "www.shop.example"


async def test_forged_forwarding_headers_from_an_untrusted_client_are_dropped(proxy):
    resp = await raw_request(
        proxy.port,
        request_bytes(
            "GET",
            "/echo",
            {
                "X-Forwarded-For": "6.6.6.6",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "evil.example",
                "Forwarded": "for=6.6.6.6",
                "X-Real-IP": "6.6.6.6",
            },
        ),
    )
    seen = seen_by_origin(resp)
    assert seen["h"]["x-forwarded-for"] == "127.0.0.1"
    assert seen["h"]["x-forwarded-proto"] == "http"
    assert seen["h"]["x-forwarded-host"] == "shop.example"
    assert "forwarded" not in seen["names"]
    assert "x-real-ip" not in seen["names"]
    assert not any("6.6.6.6" in v for _, v in seen["headers"])


async def test_a_trusted_proxys_forwarding_chain_is_extended(trusting_proxy):
    resp = await raw_request(
        trusting_proxy.port,
        request_bytes(
            "GET",
            "/echo",
            {"X-Forwarded-For": "81.2.69.7, 10.0.0.2", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "www.shop.example"},
        ),
    )
    seen = seen_by_origin(resp)
    assert seen["h"]["x-forwarded-for"] == "81.2.69.7, 10.0.0.2, 127.0.0.1"
    assert seen["h"]["x-forwarded-proto"] == "https"
    assert seen["h"]["x-forwarded-host"] == "www.shop.example"


async def test_the_origin_gets_its_own_host_header(proxy, origin):
    resp = await raw_request(proxy.port, request_bytes("GET", "/echo", {"Host": "www.shop.example"}))
    seen = seen_by_origin(resp)
    assert seen["h"]["host"] == origin.removeprefix("http://")


async def test_the_proxys_preview_header_never_reaches_the_origin(proxy):
    resp = await raw_request(proxy.port, request_bytes("GET", "/echo", {"X-Edge-Preview-Token": "abc"}))
    assert "x-edge-preview-token" not in seen_by_origin(resp)["names"]


# ---------------------------------------------------------------------------
# Origin -> client
# ---------------------------------------------------------------------------
async def _raw_origin(head: bytes, body: bytes):
    async def serve(reader, writer):
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(head + body)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


@pytest.mark.parametrize("content_type", ["application/json", "text/html"])
async def test_hop_by_hop_response_headers_are_not_passed_to_the_client(tmp_path, content_type):
    body = b'{"ok": true}' if content_type == "application/json" else b"<p>hi</p>"
    head = (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: " + content_type.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: keep-alive, X-Origin-Hop\r\n"
        b"X-Origin-Hop: internal\r\n"
        b"Keep-Alive: timeout=5, max=100\r\n"
        b"Proxy-Authenticate: Basic realm=x\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"Trailer: Expires\r\n"
        b"Upgrade: h2c\r\n"
        b"X-Kept: yes\r\n\r\n"
    )
    server = await _raw_origin(head, body)
    port = server.sockets[0].getsockname()[1]
    try:
        async with run_proxy(f"http://127.0.0.1:{port}", tmp_path / "slots") as proxy:
            resp = await raw_request(proxy.port, request_bytes("GET", "/", {"Accept": "text/html"}))
    finally:
        server.close()
        await server.wait_closed()
    assert resp.status == 200
    assert resp.body == body
    names = resp.names()
    for name in ("x-origin-hop", "keep-alive", "proxy-authenticate", "proxy-connection", "trailer", "upgrade"):
        assert name not in names, name
    assert resp.get("x-kept") == "yes"
    assert "x-origin-hop" not in (resp.get("connection") or "").lower()


# ---------------------------------------------------------------------------
# The upstream is only ever --upstream
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "target, expected_path",
    [
        ("http://evil.example/echo?a=1", "/echo?a=1"),
        ("https://evil.example:8443/echo", "/echo"),
        # a path starting "//" is a path here, never an authority
        ("//evil.example/echo", "/evil.example/echo"),
        ("/echo/../secret", "/echo/../secret"),
        ("/a%2Fb?x=%20", "/a%2Fb?x=%20"),  # the target's bytes are kept
    ],
)
async def test_absolute_form_targets_never_pick_another_upstream(proxy, origin, target, expected_path):
    resp = await raw_request(proxy.port, request_bytes("GET", target, {"Host": "evil.example"}))
    seen = seen_by_origin(resp)  # answered by our origin, not evil.example
    assert seen["raw_path"] == expected_path
    assert seen["h"]["host"] == origin.removeprefix("http://")


@pytest.mark.parametrize(
    "host",
    ["evil.example", "127.0.0.1:1", "user@evil.example", "evil.example:80@127.0.0.1", "[::1]:9", "localhost", ""],
)
async def test_odd_host_headers_never_pick_another_upstream(proxy, origin, host):
    resp = await raw_request(proxy.port, request_bytes("GET", "/echo", [("Host", host)]))
    if resp.status == 400:  # refusing a malformed Host is fine too
        return
    seen = seen_by_origin(resp)
    assert seen["h"]["host"] == origin.removeprefix("http://")


async def test_duplicate_host_headers_never_pick_another_upstream(proxy, origin):
    resp = await raw_request(proxy.port, request_bytes("GET", "/echo", [("Host", "a.example"), ("Host", "b.example")]))
    if resp.status == 400:
        return
    assert seen_by_origin(resp)["h"]["host"] == origin.removeprefix("http://")


# ---------------------------------------------------------------------------
# Pure functions, as tables
# ---------------------------------------------------------------------------
NETS = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))


@pytest.mark.parametrize(
    "peer, xff, expected",
    [
        # untrusted peer: its X-Forwarded-For is ignored entirely
        ("198.51.100.1", ["1.2.3.4"], "198.51.100.1"),
        ("198.51.100.1", [], "198.51.100.1"),
        # trusted peer: walk from the right while hops are trusted
        ("10.0.0.1", ["1.2.3.4"], "1.2.3.4"),
        ("10.0.0.1", ["1.2.3.4, 10.0.0.9"], "1.2.3.4"),
        ("10.0.0.1", ["6.6.6.6, 1.2.3.4"], "1.2.3.4"),  # the spoofed left hop is not believed
        ("10.0.0.1", ["6.6.6.6", "1.2.3.4"], "1.2.3.4"),  # several header lines
        ("10.0.0.1", ["1.2.3.4:5678"], "1.2.3.4"),
        ("10.0.0.1", ["[2001:db9::1]:443"], "2001:db9::1"),
        ("10.0.0.1", ["garbage"], "10.0.0.1"),
        ("10.0.0.1", ["1.2.3.4, garbage"], "10.0.0.1"),
        ("10.0.0.1", [], "10.0.0.1"),
        ("::ffff:10.0.0.1", ["1.2.3.4"], "1.2.3.4"),  # v4-mapped peer
        ("2001:db8::5", ["1.2.3.4"], "1.2.3.4"),
        # every hop trusted: the leftmost
        ("10.0.0.1", ["10.1.1.1, 10.2.2.2"], "10.1.1.1"),
    ],
)
def test_client_ip_comes_from_x_forwarded_for_only_through_trusted_proxies(peer, xff, expected):
    assert client_ip(peer, xff, NETS) == expected


def test_client_ip_with_no_trusted_networks_is_the_peer():
    assert client_ip("10.0.0.1", ["1.2.3.4"], ()) == "10.0.0.1"


def test_request_facts_trust_and_client_ip():
    facts = request_facts(
        method="GET", path="/", query=(), headers=[("X-Forwarded-For", "1.2.3.4"), ("Cookie", "a=1; b=2")],
        peer="10.0.0.1", networks=NETS, scheme="http", host="shop.example",
    )
    assert facts.peer_trusted and facts.client_ip == "1.2.3.4"
    assert dict(facts.cookies) == {"a": "1", "b": "2"}


@pytest.mark.parametrize(
    "headers, kept",
    [
        ([("Connection", "close"), ("X-A", "1")], [("X-A", "1")]),
        ([("Connection", "X-A"), ("X-A", "1"), ("X-B", "2")], [("X-B", "2")]),
        ([("connection", " x-a , ,X-B"), ("X-A", "1"), ("x-b", "2"), ("X-C", "3")], [("X-C", "3")]),
        ([("Connection", "a"), ("Connection", "b"), ("A", "1"), ("B", "2"), ("C", "3")], [("C", "3")]),
        ([("Transfer-Encoding", "chunked"), ("TE", "trailers"), ("Upgrade", "h2c"), ("Keep-Alive", "1")], []),
        ([("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")], [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]),
    ],
)
def test_strip_hop_by_hop(headers, kept):
    assert strip_hop_by_hop(headers) == kept


def test_forward_request_headers_sets_forwarding_and_host():
    out = forward_request_headers(
        [("Host", "www.shop.example"), ("Accept", "text/html"), ("Expect", "100-continue"), ("X-Forwarded-For", "6.6.6.6")],
        peer="198.51.100.1", peer_trusted=False, scheme="https", host="www.shop.example", upstream_host="origin:8080",
    )
    assert out == [
        ("Accept", "text/html"),
        ("X-Forwarded-For", "198.51.100.1"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "www.shop.example"),
        ("Host", "origin:8080"),
    ]



async def test_utf8_bytes_in_origin_headers_reach_the_client_unchanged(tmp_path):
    # Raw UTF-8 in Location / Content-Disposition is common; aiohttp writes
    # UTF-8, so decoding it as latin-1 double-encoded it.
    location = "/café/naïve?q=€".encode()
    head = (
        b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\n"
        b'Content-Disposition: attachment; filename="r\xc3\xa9sum\xc3\xa9.pdf"\r\n'
        b"Content-Length: 0\r\n\r\n"
    )
    server = await _raw_origin(head, b"")
    port = server.sockets[0].getsockname()[1]
    try:
        async with run_proxy(f"http://127.0.0.1:{port}", tmp_path / "slots") as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(request_bytes("GET", "/", {}))
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), 10)
            writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert b"\r\nLocation: " + location + b"\r\n" in raw
    assert b'filename="r\xc3\xa9sum\xc3\xa9.pdf"' in raw


async def test_the_origins_server_and_date_headers_pass_once(tmp_path):
    head = (
        b"HTTP/1.1 200 OK\r\nServer: shopd/1.0\r\nDate: Mon, 02 Nov 2026 10:00:00 GMT\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n"
    )
    server = await _raw_origin(head, b"ok")
    port = server.sockets[0].getsockname()[1]
    try:
        async with run_proxy(f"http://127.0.0.1:{port}", tmp_path / "slots") as proxy:
            resp = await raw_request(proxy.port, request_bytes("GET", "/", {}))
    finally:
        server.close()
        await server.wait_closed()
    assert resp.get_all("server") == ["shopd/1.0"]
    assert resp.get_all("date") == ["Mon, 02 Nov 2026 10:00:00 GMT"]


# ---------------------------------------------------------------------------
# The client IP, end to end: which address the geo lookup sees
# ---------------------------------------------------------------------------
@pytest.fixture
def geo_db(tmp_path):
    pytest.importorskip("mmdb_writer")
    from edgeproxy.classify.geo_build import parse_rows, write_mmdb

    path = tmp_path / "geo.mmdb"
    write_mmdb(parse_rows("81.2.69.0/24,GB,,,,\n2.16.0.0/16,FR,,,,\n"), path, description="test")
    return path


@pytest.mark.parametrize(
    "trust, xff, sees_uk",
    [
        (None, "81.2.69.7", False),  # an untrusted client cannot claim an address
        ("127.0.0.0/8", "81.2.69.7", True),
        ("127.0.0.0/8", "81.2.69.7, 2.16.1.9", False),  # the hop our proxy saw is FR
        ("127.0.0.0/8", "2.16.1.9, 81.2.69.7", True),  # a forged left hop is not believed
        ("10.0.0.0/8", "81.2.69.7", False),  # the peer is not in the trusted network
    ],
)
async def test_client_ip_for_geo_comes_from_x_forwarded_for_only_through_trusted_proxies(origin, tmp_path, geo_db, trust, xff, sees_uk):
    page = b'<html><body><section data-edge-slot="hero">default</section></body></html>'

    async def handler(request):
        return web.Response(body=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", handler)
    slots = tmp_path / "slots"
    from proxyharness import BROWSER, write_variant

    write_variant(slots, "hero", "uk", "<b>UK</b>", header='when = { country = "GB" }')
    overrides = {"geo_db": str(geo_db)}
    if trust:
        overrides["trust_proxy"] = trust
    async with run_origin(app) as url, run_proxy(url, slots, **overrides) as proxy:
        resp = await raw_request(proxy.port, request_bytes("GET", "/", {**BROWSER, "Accept-Encoding": "identity", "X-Forwarded-For": xff}))
    assert (b"<b>UK</b>" in resp.body) is sees_uk


async def test_an_h2c_upgrade_offer_is_ignored_and_not_forwarded(proxy):
    # curl --http2 on an http:// URL offers h2c; the proxy answers in HTTP/1.1.
    resp = await raw_request(
        proxy.port,
        request_bytes(
            "GET", "/echo",
            [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA")],
        ),
    )
    seen = seen_by_origin(resp)
    assert "upgrade" not in seen["names"] and "http2-settings" not in seen["names"]


async def test_an_h2c_upgrade_offer_with_a_body_still_delivers_the_body(proxy):
    resp = await raw_request(
        proxy.port,
        request_bytes(
            "POST", "/echo",
            [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA")],
            b"hello",
        ),
    )
    assert seen_by_origin(resp)["body"] == "hello"


# ---------------------------------------------------------------------------
# The origin's response head (found by load_tests.fuzz; tests/data/fuzz/crashes)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "status, reason, headers, error",
    [
        (200, "OK", [("Content-Type", "text/html")], None),
        (599, "", [], None),
        (4, "No Content", [], "status 4 is not a final HTTP status"),
        (101, "Switching Protocols", [], "status 101 is not a final HTTP status"),
        (600, "", [], "status 600"),
        (200, "OK", [("Content-Type", "application/json\x7f")], "control character in the Content-Type header"),
        (200, "OK", [("ETag", '\x00"v1"')], "control character in the ETag header"),
        (200, "OK", [("Bad Name", "x")], "is not a token"),
        (200, "OK", [("X-Tab", "a\tb"), ("X-Latin", "caf\xe9")], None),
    ],
)
def test_checked_origin_head(status, reason, headers, error):
    from edgeproxy.headers import InvalidOriginHead, checked_origin_head

    if error is None:
        assert checked_origin_head(status, reason, headers) == (reason, headers)
    else:
        with pytest.raises(InvalidOriginHead, match=re.escape(error)):
            checked_origin_head(status, reason, headers)


def test_a_reason_phrase_with_control_characters_is_dropped_not_fatal():
    from edgeproxy.headers import checked_origin_head

    assert checked_origin_head(204, "No Conten\x00", []) == ("", [])


_FIELD_CHARS = "aZ09-_!~: \t\r\n\x00\x7f\u00e9"


@given(st.lists(st.tuples(st.text(_FIELD_CHARS, max_size=6), st.text(_FIELD_CHARS, max_size=6)), max_size=5))
@settings(max_examples=400, deadline=None)
def test_checked_origin_head_checks_all_fields_at_once_as_one_by_one(headers):
    """The batched name and value searches accept exactly the heads the
    per-field rule accepts (a name must be a token, a value free of
    control characters but TAB), and name the same first bad field."""
    from edgeproxy.headers import _BAD_VALUE, _TOKEN, InvalidOriginHead, checked_origin_head

    expected = None
    for name, value in headers:
        if not _TOKEN.match(name):
            expected = f"header name {name[:40]!r} is not a token"
            break
        if _BAD_VALUE.search(value):
            expected = f"control character in the {name[:40]} header"
            break
    try:
        checked_origin_head(200, "OK", headers)
        got = None
    except InvalidOriginHead as exc:
        got = str(exc)
    assert got == expected


def _forward_reference(headers, *, peer, peer_trusted, scheme, host, upstream_host, request_id):
    """forward_request_headers as it was written before the one-pass reader
    (strip hop-by-hop first, then each rule in turn): the reference the
    differential test holds the fast one to."""
    from edgeproxy.headers import HOP_BY_HOP, OVERRIDE, PROXY_ONLY_REQUEST, REQUEST_ID_HEADER, forgeable

    listed = set(HOP_BY_HOP)
    for name, value in headers:
        if name.lower() == "connection":
            listed.update(t.strip().lower() for t in value.split(",") if t.strip())
    out, prior_xff, prior_proto, prior_host = [], [], None, None
    for name, value in [(n, v) for n, v in headers if n.lower() not in listed]:
        lower = name.lower()
        if lower in OVERRIDE or (request_id is not None and lower == "x-request-id"):
            continue
        if forgeable(lower):
            if peer_trusted:
                if lower == "x-forwarded-for":
                    prior_xff.append(value)
                elif lower == "x-forwarded-proto":
                    prior_proto = value
                elif lower == "x-forwarded-host":
                    prior_host = value
                else:
                    out.append((name, value))
            continue
        if lower == "host" or lower in PROXY_ONLY_REQUEST or lower == "expect":
            continue
        out.append((name, value))
    chain = ", ".join(prior_xff + ([peer] if peer else []))
    if chain:
        out.append(("X-Forwarded-For", chain))
    out.append(("X-Forwarded-Proto", prior_proto or scheme))
    if prior_host or host:
        out.append(("X-Forwarded-Host", prior_host or host))
    if request_id is not None:
        out.append((REQUEST_ID_HEADER, request_id))
    out.append(("Host", upstream_host))
    return out


_NAMES = st.sampled_from([
    "Host", "Cookie", "cookie", "Connection", "Keep-Alive", "TE", "Upgrade", "X-Forwarded-For", "x-forwarded-proto",
    "X-Forwarded-Host", "X-Real-IP", "CF-IPCountry", "X-Original-URL", "X-HTTP-Method-Override", "Expect",
    "X-Edge-Preview-Token", "X-Request-ID", "Accept", "User-Agent", "X-Custom", "close", "Forwarded",
])
_CONNECTION_VALUES = st.sampled_from(["close", "keep-alive", "X-Custom", "x-forwarded-for, X-Custom", "cookie", "upgrade", " , ", "X-Real-IP"])


@given(
    st.lists(st.tuples(_NAMES, st.one_of(_CONNECTION_VALUES, st.text("abc ,;=", max_size=5))), max_size=8),
    st.booleans(),
    st.sampled_from([None, "rid-1"]),
)
@example([("Connection", "close"), ("close", "x"), ("Connection", "keep-alive, X-Custom"), ("X-Custom", "1")], False, None)
@example([("Connection", "x-forwarded-for"), ("X-Forwarded-For", "203.0.113.9"), ("Cookie", "a=1"), ("Connection", "cookie")], True, "rid-1")
@settings(max_examples=1500, deadline=None)
def test_forward_and_facts_from_one_pass_match_the_rule_by_rule_reference(headers, trusted, rid):
    from edgeproxy.headers import read_request_headers, request_facts

    args = dict(peer="198.51.100.7", peer_trusted=trusted, scheme="https", host="shop.example", upstream_host="origin:8080", request_id=rid)
    assert forward_request_headers(headers, **args) == _forward_reference(headers, **args)
    # The pipeline's path: one read for both, same answers.
    read = read_request_headers(headers, trusted)
    assert forward_request_headers((), read=read, **args) == _forward_reference(headers, **args)
    nets = [ipaddress.ip_network("198.51.100.0/24")] if trusted else []
    kw = dict(method="GET", path="/", query=(), peer="198.51.100.7", networks=nets, scheme="http", host="shop.example")
    a, b = request_facts(headers=headers, **kw), request_facts(headers=(), read=read, read_trusted=trusted, **kw)
    assert (dict(a.headers), dict(a.cookies), a.client_ip, a.scheme, a.host) == (dict(b.headers), dict(b.cookies), b.client_ip, b.scheme, b.host)


@given(
    st.lists(st.tuples(_NAMES, st.one_of(_CONNECTION_VALUES, st.text("abc ,;=", max_size=5))), max_size=8, unique_by=lambda h: h[0].lower()),
    st.booleans(),
)
@settings(max_examples=800, deadline=None)
def test_the_batched_header_read_equals_the_field_by_field_one(headers, trusted):
    """Unique names and no CDN header: the C-level fast path; it must give
    what the field-by-field reader gives (field order included)."""
    from edgeproxy.headers import _read_each, read_request_headers

    assert read_request_headers(headers, trusted) == _read_each(headers, trusted)
