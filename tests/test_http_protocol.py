"""The traffic port's own HTTP/1.1 layer (edgeproxy/http/), on raw sockets.

Framing the proxy will not guess at is refused with 400 and the connection
closed; pipelined requests are answered in order; methods that must never
reach the origin are answered by the proxy; deadlines close connections
that hold a socket without sending a request.  The aiohttp server, kept as
``traffic_server = "aiohttp"``, still serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from aiohttp import web

from proxyharness import read_response, raw_request, request_bytes, run_origin, run_proxy


@pytest.fixture
async def origin():
    seen: list[tuple[str, str]] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.method, request.path_qs))
        return web.json_response({"method": request.method, "path": request.path_qs, "body": body.decode("latin-1")})

    async def bare(request: web.Request) -> web.StreamResponse:
        # No Date, no Server: what the proxy adds (and does not add) shows.
        return web.Response(text="ok", headers={"Content-Type": "text/plain"})

    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="slow")

    app = web.Application()
    app.router.add_get("/bare", bare)
    app.router.add_get("/slow", slow)
    app.router.add_route("*", "/{tail:.*}", echo)
    async with run_origin(app) as url:
        yield url, seen, release
        release.set()


@pytest.fixture
async def proxy(origin, tmp_path):
    async with run_proxy(origin[0], tmp_path / "slots") as server:
        yield server


async def exchange(port: int, data: bytes, *, responses: int = 1, timeout: float = 5) -> tuple[list, bool]:
    """Send ``data`` on one connection; read ``responses`` responses, then
    whether the proxy closed the connection (EOF within ``timeout``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        got = []
        for _ in range(responses):
            got.append(await asyncio.wait_for(read_response(reader), timeout))
        try:
            closed = await asyncio.wait_for(reader.read(1), timeout) == b""
        except (asyncio.TimeoutError, ConnectionError):
            closed = False
        return got, closed
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def keep_alive(method: str, target: str, headers=None, body: bytes = b"") -> bytes:
    return request_bytes(method, target, [("Connection", "keep-alive"), *(headers or [])], body)


# ---------------------------------------------------------------------------
# Framing: 400 and close, nothing forwarded
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked, gzip\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost : a\r\n\r\n",
    ],
    ids=["cl-and-te", "duplicate-cl", "obs-fold", "bad-chunk-size", "te-not-ending-in-chunked", "space-before-colon"],
)
async def test_ambiguous_framing_is_a_400_and_the_connection_closes(proxy, origin, raw):
    [resp], closed = await exchange(proxy.port, raw)
    assert resp.status == 400
    assert resp.get("connection") == "close"
    assert closed
    await asyncio.sleep(0.05)
    assert not origin[1]  # nothing reached the origin


async def test_a_request_after_a_framing_error_is_never_read(proxy, origin):
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    raw = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\n" + smuggled
    [resp], closed = await exchange(proxy.port, raw)
    assert resp.status == 400 and closed
    await asyncio.sleep(0.05)
    assert ("GET", "/smuggled") not in origin[1]


async def test_pipelined_requests_are_answered_in_order_then_an_error_closes(proxy, origin):
    raw = keep_alive("GET", "/one") + keep_alive("POST", "/two", body=b"hello") + b"GET /x HTTP/1.1\r\nHost : bad\r\n\r\n"
    (one, two, bad), closed = await exchange(proxy.port, raw, responses=3)
    assert json.loads(one.body)["path"] == "/one"
    assert json.loads(two.body) == {"method": "POST", "path": "/two", "body": "hello"}
    assert bad.status == 400 and closed


async def test_a_keep_alive_connection_serves_many_requests(proxy):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        for i in range(5):
            writer.write(keep_alive("GET", f"/n{i}"))
            resp = await asyncio.wait_for(read_response(reader), 5)
            assert json.loads(resp.body)["path"] == f"/n{i}"
    finally:
        writer.close()


# ---------------------------------------------------------------------------
# Methods the proxy answers itself
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [b"CONNECT shop.example:443 HTTP/1.1\r\nHost: shop.example:443\r\n\r\n", b"TRACE /x HTTP/1.1\r\nHost: a\r\n\r\n"])
async def test_connect_and_trace_get_405_and_never_reach_the_origin(proxy, origin, raw):
    [resp], _closed = await exchange(proxy.port, raw)
    assert resp.status == 405
    assert "GET" in resp.get("allow")
    await asyncio.sleep(0.05)
    assert not origin[1]


async def test_options_star_is_answered_by_the_proxy(proxy, origin):
    resp = await raw_request(proxy.port, b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert resp.status == 200
    assert "GET" in resp.get("allow")
    assert not origin[1]


# ---------------------------------------------------------------------------
# Headers the proxy adds
# ---------------------------------------------------------------------------
async def test_a_date_is_added_when_the_origin_sends_none_and_no_server_ever(proxy):
    resp = await raw_request(proxy.port, request_bytes("GET", "/bare"))
    assert resp.status == 200 and resp.body == b"ok"
    assert resp.get("date")
    # aiohttp's test origin names itself; the proxy adds nothing of its own.
    assert all("edgeproxy" not in v.lower() for v in resp.get_all("server"))


# ---------------------------------------------------------------------------
# Deadlines
# ---------------------------------------------------------------------------
async def test_a_request_head_that_never_ends_is_cut_off_at_the_header_timeout(origin, tmp_path):
    async with run_proxy(origin[0], tmp_path / "slots", header_timeout=0.3) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            data = await asyncio.wait_for(reader.read(), 5)  # EOF well before 5 s
        finally:
            writer.close()
    assert data.startswith(b"HTTP/1.1 408 ")


async def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(origin, tmp_path):
    async with run_proxy(origin[0], tmp_path / "slots", keepalive_timeout=0.3) as proxy:
        [resp], closed = await exchange(proxy.port, keep_alive("GET", "/x"), timeout=5)
    assert resp.status == 200 and closed


async def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(origin, tmp_path):
    async with run_proxy(origin[0], tmp_path / "slots", header_timeout=0.3) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            data = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
    assert data == b"" or data.startswith(b"HTTP/1.1 408 ")


async def test_a_body_that_stops_arriving_is_cut_off_at_the_body_timeout(origin, tmp_path):
    async with run_proxy(origin[0], tmp_path / "slots", body_timeout=0.3) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(request_bytes("POST", "/x", [("Content-Length", "100")]) + b"only part")
            data = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
    assert data.startswith(b"HTTP/1.1 408 ")


# ---------------------------------------------------------------------------
# Limits: 431, 414, 413
# ---------------------------------------------------------------------------
async def test_too_many_request_headers_is_a_431(proxy, origin):
    headers = [(f"X-H{i}", "v") for i in range(150)]
    [resp], closed = await exchange(proxy.port, request_bytes("GET", "/x", headers))
    assert resp.status == 431 and closed
    assert not origin[1]


async def test_a_header_block_over_the_byte_limit_is_a_431(origin, tmp_path):
    async with run_proxy(origin[0], tmp_path / "slots", max_header_bytes=2048) as proxy:
        [resp], _ = await exchange(proxy.port, request_bytes("GET", "/x", [("Cookie", "a=" + "b" * 3000)]))
    assert resp.status == 431


async def test_a_request_target_over_the_limit_is_a_414(proxy, origin):
    [resp], closed = await exchange(proxy.port, request_bytes("GET", "/x?" + "q" * 9000))
    assert resp.status == 414 and closed
    assert not origin[1]


async def test_a_body_declared_over_the_limit_is_a_413_without_reaching_the_origin(origin, tmp_path):
    async with run_proxy(origin[0], tmp_path / "slots", max_body_bytes=1000) as proxy:
        [resp], closed = await exchange(proxy.port, request_bytes("POST", "/x", body=b"z" * 1001))
        ok = await raw_request(proxy.port, request_bytes("POST", "/x", body=b"z" * 1000))
    assert resp.status == 413 and closed
    assert ok.status == 200 and json.loads(ok.body)["body"] == "z" * 1000


async def test_a_chunked_body_running_over_the_limit_is_a_413(origin, tmp_path):
    async with run_proxy(origin[0], tmp_path / "slots", max_body_bytes=1000) as proxy:
        raw = request_bytes("POST", "/x", [("Transfer-Encoding", "chunked")]) + b"800\r\n" + b"z" * 2048 + b"\r\n0\r\n\r\n"
        [resp], closed = await exchange(proxy.port, raw)
    assert resp.status == 413 and closed


async def test_the_conversion_beacon_takes_only_a_small_body(proxy):
    [resp], _ = await exchange(proxy.port, request_bytes("POST", "/_edge/convert?value=1", body=b"x" * 10_000))
    assert resp.status == 413


# ---------------------------------------------------------------------------
# Overload: a fast 503 with Retry-After
# ---------------------------------------------------------------------------
async def test_past_max_in_flight_a_request_gets_a_fast_503_with_retry_after(origin, tmp_path):
    async with run_proxy(origin[0], tmp_path / "slots", max_in_flight=1, retry_after=2) as proxy:
        first = asyncio.ensure_future(raw_request(proxy.port, request_bytes("GET", "/slow")))
        for _ in range(100):  # until the first one is in the pipeline
            await asyncio.sleep(0.02)
            if origin[1] or proxy.state.metrics.active >= 1:
                break
        shed = await raw_request(proxy.port, request_bytes("GET", "/x"))
        origin[2].set()
        assert (await first).status == 200
        metrics = await raw_request(proxy.admin_port, b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert shed.status == 503 and shed.get("retry-after") == "2"
    assert b'edgeproxy_refused_total{reason="in_flight"} 1.0' in metrics.body


async def test_past_max_connections_a_new_connection_gets_a_503(origin, tmp_path):
    async with run_proxy(origin[0], tmp_path / "slots", max_connections=1) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            await asyncio.sleep(0.05)
            second = await raw_request(proxy.port, request_bytes("GET", "/x"))
        finally:
            writer.close()
    assert second.status == 503 and second.get("retry-after") == "1"


# ---------------------------------------------------------------------------
# Via (RFC 9110 §7.6.3)
# ---------------------------------------------------------------------------
async def test_via_is_added_to_the_response_and_to_the_origin_request(tmp_path):
    seen = {}

    async def handler(request: web.Request) -> web.Response:
        seen["via"] = request.headers.getall("Via", [])
        return web.Response(text="ok", headers={"Via": "1.1 shop-cdn"})

    app = web.Application()
    app.router.add_get("/", handler)
    async with run_origin(app) as url, run_proxy(url, tmp_path / "slots") as proxy:
        resp = await raw_request(proxy.port, request_bytes("GET", "/", [("Via", "1.0 client-proxy")]))
    assert seen["via"] == ["1.0 client-proxy", "1.1 edgeproxy"]
    assert resp.get_all("via") == ["1.1 shop-cdn", "1.1 edgeproxy"]


async def test_the_via_pseudonym_is_configurable_and_can_be_off(origin, tmp_path):
    async with run_proxy(origin[0], tmp_path / "slots", via="edge-7") as proxy:
        named = await raw_request(proxy.port, request_bytes("GET", "/bare"))
    async with run_proxy(origin[0], tmp_path / "slots", via="") as proxy:
        off = await raw_request(proxy.port, request_bytes("GET", "/bare"))
    assert named.get_all("via") == ["1.1 edge-7"]
    assert off.get_all("via") == []


def test_a_via_pseudonym_that_is_not_a_token_is_refused_naming_the_key():
    from edgeproxy.errors import SettingsError
    from edgeproxy.settings import build_settings

    with pytest.raises(SettingsError, match="via"):
        build_settings({"upstream": "http://a", "via": "edge proxy\r\nX: y"}, env={})


# ---------------------------------------------------------------------------
# The former server, still selectable
# ---------------------------------------------------------------------------
async def test_the_aiohttp_traffic_server_is_still_selectable(origin, tmp_path):
    async with run_proxy(origin[0], tmp_path / "slots", traffic_server="aiohttp") as proxy:
        resp = await raw_request(proxy.port, request_bytes("POST", "/echo?q=1", body=b"abc"))
    assert json.loads(resp.body) == {"method": "POST", "path": "/echo?q=1", "body": "abc"}


@pytest.fixture
async def named_origin():
    """``/named`` says ``Server: shop/1.0``; ``/anonymous`` sends no Server
    (aiohttp's own is taken off before its head goes out)."""

    async def named(request: web.Request) -> web.Response:
        return web.Response(text="named", headers={"Server": "shop/1.0"})

    async def anonymous(request: web.Request) -> web.Response:
        return web.Response(text="anonymous")

    async def no_server(request: web.Request, response: web.StreamResponse) -> None:
        if request.path == "/anonymous":
            response.headers.popall("Server", None)

    app = web.Application()
    app.on_response_prepare.append(no_server)
    app.router.add_get("/named", named)
    app.router.add_get("/anonymous", anonymous)
    async with run_origin(app) as url:
        yield url


@pytest.mark.parametrize("server", ["protocols", "aiohttp"])
async def test_both_traffic_servers_append_via_pass_the_origins_server_and_add_none(named_origin, tmp_path, server):
    async with run_proxy(named_origin, tmp_path / "slots", traffic_server=server) as proxy:
        named = await raw_request(proxy.port, request_bytes("GET", "/named"))
        anonymous = await raw_request(proxy.port, request_bytes("GET", "/anonymous"))
    assert named.status == anonymous.status == 200
    assert named.get_all("server") == ["shop/1.0"]
    assert anonymous.get_all("server") == []  # aiohttp's "Python/… aiohttp/…" is not added
    assert named.get_all("via") == anonymous.get_all("via") == ["1.1 edgeproxy"]


async def test_the_aiohttp_traffic_server_sheds_past_max_in_flight_with_a_503_and_retry_after(origin, tmp_path):
    async with run_proxy(origin[0], tmp_path / "slots", traffic_server="aiohttp", max_in_flight=1, retry_after=2) as proxy:
        first = asyncio.ensure_future(raw_request(proxy.port, request_bytes("GET", "/slow")))
        for _ in range(250):  # until the first one is in the pipeline
            await asyncio.sleep(0.02)
            if proxy.state.metrics.active >= 1:
                break
        shed = await raw_request(proxy.port, request_bytes("GET", "/x"))
        origin[2].set()
        assert (await first).status == 200
        metrics = await raw_request(proxy.admin_port, b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert shed.status == 503 and shed.get("retry-after") == "2"
    assert ("GET", "/x") not in origin[1]
    assert b'edgeproxy_refused_total{reason="in_flight"} 1.0' in metrics.body


async def test_a_burst_of_pipelined_requests_is_answered_in_order(proxy):
    raw = b"".join(keep_alive("GET", f"/p{i}") for i in range(40))
    responses, _closed = await exchange(proxy.port, raw, responses=40, timeout=0.5)
    assert [json.loads(r.body)["path"] for r in responses] == [f"/p{i}" for i in range(40)]


async def test_an_http_1_0_client_may_keep_its_connection_alive(proxy):
    raw = b"GET /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n" * 2
    (one, two), _closed = await exchange(proxy.port, raw, responses=2, timeout=0.5)
    assert json.loads(one.body)["path"] == json.loads(two.body)["path"] == "/a"
    assert one.get("connection") == "keep-alive"


async def test_a_body_never_asked_for_with_expect_100_continue_closes_the_connection(origin, tmp_path):
    # The beacon answers at once without reading its body: the client, waiting
    # for a 100 that never comes, may never send it.
    async with run_proxy(origin[0], tmp_path / "slots", exposure_log=str(tmp_path / "exposures.log")) as proxy:
        raw = keep_alive("POST", "/_edge/convert?value=1", [("Expect", "100-continue"), ("Content-Length", "5")])
        [resp], closed = await exchange(proxy.port, raw)
    assert resp.status == 204 and closed


# ---------------------------------------------------------------------------
# Mangled requests: every connection ends, nothing leaks, the port keeps serving
# ---------------------------------------------------------------------------
def _mangled(seed: int) -> bytes:
    import random

    rng = random.Random(seed)
    base = bytearray(
        keep_alive("POST", "/m?x=1", [("Content-Type", "text/plain"), ("Cookie", "a=b")], b"hello world")
        + keep_alive("GET", "/n", [("Transfer-Encoding", "chunked")]) + b"5\r\nhello\r\n0\r\n\r\n"
    )
    for _ in range(rng.randint(1, 6)):
        if not base:
            break
        op = rng.randrange(5)
        at = rng.randrange(len(base))
        if op == 0:
            base[at] = rng.randrange(256)
        elif op == 1:
            base[at:at] = rng.choice([b"\r\n", b"\n", b" ", b":", b"\x00", b"Content-Length: 99\r\n", b"ffffffffffffffff\r\n"])
        elif op == 2:
            del base[at : at + rng.randint(1, 20)]
        elif op == 3:
            base = base[:at]
        else:
            base[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
    return bytes(base)


async def test_mangled_requests_end_their_connections_and_leak_nothing(origin, tmp_path):
    async with run_proxy(origin[0], tmp_path / "slots", header_timeout=0.5, body_timeout=0.5, keepalive_timeout=0.5) as proxy:

        async def one(seed: int) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            try:
                writer.write(_mangled(seed))
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                while await asyncio.wait_for(reader.read(65536), 10):
                    pass  # the proxy ends every connection: EOF within the deadlines
            finally:
                writer.close()

        await asyncio.gather(*(one(seed) for seed in range(120)))
        good = await raw_request(proxy.port, request_bytes("GET", "/still-fine"))
        assert json.loads(good.body)["path"] == "/still-fine"
        for _ in range(100):
            if not proxy._traffic.connections:
                break
            await asyncio.sleep(0.02)
        assert not proxy._traffic.connections
        assert proxy._traffic.in_flight == 0


async def test_open_connections_are_counted_in_metrics(proxy):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(keep_alive("GET", "/x"))
        await asyncio.wait_for(read_response(reader), 5)
        for _ in range(40):  # the gauge is set every second
            await asyncio.sleep(0.1)
            metrics = await raw_request(proxy.admin_port, b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            if b"edgeproxy_open_connections 1.0" in metrics.body:
                break
        assert b"edgeproxy_open_connections 1.0" in metrics.body
    finally:
        writer.close()


# ---------------------------------------------------------------------------
# The Request the pipeline reads: aiohttp's BaseRequest subset
# ---------------------------------------------------------------------------
class _Conn:
    peer = "192.0.2.1"
    transport = None


@pytest.mark.parametrize(
    "target, path, path_qs, query",
    [
        ("/a%20b/c?x=1&y=&x=2", "/a b/c", "/a%20b/c?x=1&y=&x=2", [("x", "1"), ("y", ""), ("x", "2")]),
        ("/plain", "/plain", "/plain", []),
        ("http://other.example/p%2Fq?z=3", "/p/q", "/p%2Fq?z=3", [("z", "3")]),
        ("/s?q=a+b%26c", "/s", "/s?q=a+b%26c", [("q", "a b&c")]),
    ],
)
def test_a_request_reads_like_aiohttps(target, path, path_qs, query):
    from multidict import CIMultiDict

    from edgeproxy.http.request import Request

    request = Request(_Conn(), "GET", target, (1, 1), CIMultiDict([("Host", "shop.example")]), True)
    assert request.path == path
    assert request.path_qs == path_qs
    assert list(request.query.items()) == query
    assert request.query_string == path_qs.partition("?")[2]
    assert (request.host, request.scheme, request.secure, request.remote) == ("shop.example", "http", False, "192.0.2.1")
    assert request.get("id") is None and "id" not in request
    request["id"] = "r-1"
    assert request["id"] == "r-1" and request.get("id") == "r-1" and "id" in request


async def test_the_response_the_pipeline_returns_shows_its_status_head_and_length(origin, tmp_path):
    seen = []

    async with run_proxy(origin[0], tmp_path / "slots") as proxy:
        handler = proxy._traffic.handler

        async def spy(request):
            response = await handler(request)
            seen.append((response.status, response.headers.get("Content-Type"), response.body_length))
            return response

        proxy._traffic.handler = spy
        for conn in list(proxy._traffic.connections):
            conn.handler = spy
        resp = await raw_request(proxy.port, request_bytes("GET", "/bare"))
    assert resp.status == 200
    assert seen == [(200, "text/plain; charset=utf-8", 2)]
