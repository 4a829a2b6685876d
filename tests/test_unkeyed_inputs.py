"""Unkeyed inputs (issue 10 item 4): no header a client can forge reaches a
cached page another visitor gets.

Each case is the web-cache-poisoning attack on a real proxy with its upstream
cache on: an origin that reflects every request header it receives into a
page it marks ``public, max-age=60`` (and names nothing in ``Vary``), a first
visitor who sends a forged header, and a second, ordinary visitor who asks
for the same URL.  The second must never see the first's value: the header
was stripped before the origin saw it, or it is part of the cache key.
docs/HEADERS.md is the table these tests pin.
"""

from __future__ import annotations

import pytest
from aiohttp import web

from edgeproxy.cache import normalise_forwarded, response_policy
from edgeproxy.headers import CLIENT_ADDRESS, KEYED, OVERRIDE, forward_request_headers, request_facts
from proxyharness import BROWSER, raw_get, run_origin, run_proxy

MARK = "poison-7f3a"

# Headers a client can send itself that some framework reads to build URLs,
# pick the client address or change the method or path.
FORGEABLE = sorted(KEYED | CLIENT_ADDRESS | OVERRIDE) + ["CF-Connecting-IP", "CF-IPCountry", "Fastly-Client-IP", "CloudFront-Viewer-Country"]


def reflecting_origin(seen: list) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        lines = "".join(f"<li>{name}: {value}</li>" for name, value in request.headers.items())
        body = f"<!doctype html><html><body><p>{request.method} {request.path_qs}</p><ul>{lines}</ul></body></html>"
        return web.Response(text=body, content_type="text/html", headers={"Cache-Control": "public, max-age=60"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    return app


def value_for(name: str) -> str:
    """A forged value the header's parsers would accept, carrying MARK."""
    lower = name.lower()
    if lower == "forwarded":
        return f'for=203.0.113.9;host={MARK}.example;proto=https'
    if lower in CLIENT_ADDRESS or lower.endswith("-ip"):
        return f"203.0.113.9, {MARK}"
    if lower in ("x-original-url", "x-rewrite-url", "x-override-url", "x-http-destinationurl"):
        return f"/admin/{MARK}"
    return f"{MARK}.example"


async def poison_attempts(proxy_port: int, headers: list[str], *, prefix: str) -> list[str]:
    """For each header, visitor 1 sends it forged, visitor 2 asks plainly;
    returns the headers whose forged value reached visitor 2."""
    leaked = []
    for i, name in enumerate(headers):
        path = f"/{prefix}/{i}"
        first = await raw_get(proxy_port, path, {**BROWSER, name: value_for(name)})
        assert first.status == 200, name
        second = await raw_get(proxy_port, path, BROWSER)
        if MARK.encode() in second.body:
            leaked.append(name)
    return leaked


@pytest.fixture
def slots(tmp_path):
    path = tmp_path / "slots"
    path.mkdir()
    return path


async def test_no_forged_header_of_an_untrusted_client_reaches_the_next_visitor(slots):
    seen: list = []
    async with run_origin(reflecting_origin(seen)) as url, run_proxy(url, slots, cache_bytes=1 << 20) as proxy:
        assert await poison_attempts(proxy.port, FORGEABLE, prefix="untrusted") == []
    # Stripped, not just keyed: the origin never saw any forged value.
    assert not [h for h in seen if MARK in repr(h)]


async def test_forwarding_headers_of_a_trusted_proxy_are_keyed_and_overrides_still_stripped(slots):
    """Behind a trusted CDN the host/scheme headers are believed and sent on,
    so they must be part of the key; a CDN passes its clients' override
    headers on too, so those are stripped whoever sends them."""
    seen: list = []
    async with run_origin(reflecting_origin(seen)) as url, run_proxy(url, slots, cache_bytes=1 << 20, trust_proxy="127.0.0.0/8") as proxy:
        assert await poison_attempts(proxy.port, sorted(KEYED | OVERRIDE), prefix="trusted") == []
        # A keyed header the CDN does send reaches the origin.
        resp = await raw_get(proxy.port, "/keyed", {**BROWSER, "X-Forwarded-Port": "8443"})
        assert b"X-Forwarded-Port: 8443" in resp.body
    assert not [h for h in seen if any(name.lower() in OVERRIDE for name in h)]


async def test_a_forged_host_header_gets_its_own_cache_entry(slots):
    """The classic: ``Host: evil`` becomes ``X-Forwarded-Host: evil`` at the
    origin, which builds absolute links from it."""
    async with run_origin(reflecting_origin([])) as url, run_proxy(url, slots, cache_bytes=1 << 20) as proxy:
        forged = await raw_get(proxy.port, "/home", {**BROWSER, "Host": f"{MARK}.example"})
        assert f"X-Forwarded-Host: {MARK}.example".encode() in forged.body
        real = await raw_get(proxy.port, "/home", {**BROWSER, "Host": "shop.example"})
        assert MARK.encode() not in real.body and b"X-Forwarded-Host: shop.example" in real.body
        # Hosts are case-insensitive: the same entry.
        again = await raw_get(proxy.port, "/home", {**BROWSER, "Host": "SHOP.example"})
        assert again.get("age") is not None and again.body == real.body


async def test_keying_does_not_split_ordinary_visitors(slots):
    async with run_origin(reflecting_origin([])) as url, run_proxy(url, slots, cache_bytes=1 << 20) as proxy:
        await raw_get(proxy.port, "/p", BROWSER)
        second = await raw_get(proxy.port, "/p", {**BROWSER, "X-Forwarded-Host": "ignored.example"})
        assert second.get("age") is not None  # served from the cache: the forged header was stripped, not keyed
        assert proxy.state.cache.stats["HIT"] == 1


async def test_an_override_header_cannot_change_the_method_the_origin_sees(slots):
    seen: list = []
    async with run_origin(reflecting_origin(seen)) as url, run_proxy(url, slots, cache_bytes=1 << 20) as proxy:
        resp = await raw_get(proxy.port, "/m", {**BROWSER, "X-HTTP-Method-Override": "DELETE", "X-Original-URL": "/admin"})
    assert b"<p>GET /m</p>" in resp.body
    assert "X-HTTP-Method-Override" not in seen[0] and "X-Original-URL" not in seen[0]


# ---------------------------------------------------------------------------
# The pure parts
# ---------------------------------------------------------------------------
def forwarded(headers, *, trusted: bool):
    return forward_request_headers(headers, peer="198.51.100.7", peer_trusted=trusted, scheme="https", host="shop.example",
                                   upstream_host="origin:8080")


@pytest.mark.parametrize("name", FORGEABLE)
def test_forward_request_headers_strips_every_forgeable_header_of_an_untrusted_peer(name):
    out = forwarded([(name, value_for(name))], trusted=False)
    assert MARK not in repr(out)


@pytest.mark.parametrize("name", sorted(OVERRIDE))
def test_override_headers_are_stripped_even_from_a_trusted_peer(name):
    assert MARK not in repr(forwarded([(name, value_for(name))], trusted=True))


@pytest.mark.parametrize("name", sorted(KEYED - {"x-forwarded-host", "x-forwarded-proto"}))
def test_a_trusted_peers_keyed_headers_are_forwarded(name):
    assert (name, value_for(name)) in forwarded([(name, value_for(name))], trusted=True)


def test_request_facts_hide_forged_headers_from_every_stage():
    facts = request_facts(method="GET", path="/", query=(), headers=[("X-Forwarded-Host", "evil"), ("CF-IPCountry", "GB"),
                          ("X-Original-URL", "/admin"), ("User-Agent", "ua")], peer="198.51.100.7", networks=(), scheme="http", host="shop")
    assert dict(facts.headers) == {"user-agent": "ua"} and facts.host == "shop"


def test_response_policy_keys_on_the_keyed_fields_whatever_vary_says():
    policy = response_policy(200, [("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding")], keyed=frozenset({"x-forwarded-host"}))
    assert policy.vary == ("accept-encoding", "x-forwarded-host")


def test_forwarded_is_keyed_without_the_client_address():
    a = normalise_forwarded("for=203.0.113.9;host=Shop.example;proto=https")
    b = normalise_forwarded('proto=https; for="[2001:db8::1]";host=shop.example')
    assert a == b == "host=shop.example;proto=https"
