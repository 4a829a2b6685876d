"""Fidelity through the whole proxy on real storefront pages (CONTRACT §1).

The pages in tests/data/html (raw server bytes, MIT, see its README) are
served by a real origin, plain or gzip, in one piece or in odd chunks; the
proxy in front of them must give back the very same bytes when there is
nothing to personalise, and change nothing outside the slots when there is.
"""

from __future__ import annotations

import gzip

import pytest
from aiohttp import web

from proxyharness import BROWSER, decode, raw_get, run_origin, run_proxy, write_variant

# The real pages and the elements that become slots: the rewriter's own
# fidelity tests' table, here through the proxy.
from test_rewrite_fidelity import PAGES, SLOTS, mark

HERO = "<p>Personalised hero \u00e9 \u20ac</p>"
BANNER = "<b>Free delivery</b>"


def marked(name: str) -> bytes:
    page = (PAGES / name).read_bytes()
    for prefix, slot in SLOTS[name]:
        page, _ = mark(page, prefix, slot)
    return page


def origin_app(pages: dict[str, bytes]) -> web.Application:
    """``/<name>`` plain, ``/gz/<name>`` gzip, ``/chunked/<name>`` in odd chunks."""

    async def plain(request):
        return web.Response(body=pages[request.match_info["name"]], content_type="text/html", charset="utf-8")

    async def gz(request):
        body = gzip.compress(pages[request.match_info["name"]], compresslevel=6)
        return web.Response(body=body, headers={"Content-Type": "text/html; charset=utf-8", "Content-Encoding": "gzip"})

    async def chunked(request):
        page = pages[request.match_info["name"]]
        resp = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
        await resp.prepare(request)
        at, step = 0, 1
        while at < len(page):
            await resp.write(page[at : at + step])
            at += step
            step = step * 7 % 65521 + 1  # 1, 8, 57, 400, ... odd sizes that cut markers
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/gz/{name}", gz)
    app.router.add_get("/chunked/{name}", chunked)
    app.router.add_get("/{name}", plain)
    return app


@pytest.fixture
async def origin():
    pages = {name: marked(name) for name in SLOTS}
    pages.update({"raw-" + name: (PAGES / name).read_bytes() for name in SLOTS})
    async with run_origin(origin_app(pages)) as url:
        yield url, pages


ROUTES = [("", None), ("gz/", "gzip"), ("gz/", None), ("chunked/", None)]


def ids(route):
    return f"{route[0] or 'plain/'}{route[1] or 'identity'}"


@pytest.mark.parametrize("name", sorted(SLOTS))
@pytest.mark.parametrize("route", ROUTES, ids=ids)
async def test_page_without_a_variant_is_byte_identical(origin, tmp_path, name, route):
    url, pages = origin
    prefix, accept = route
    slots = tmp_path / "slots"
    write_variant(slots, "sidebar", "everyone", "<p>not on these pages</p>")
    async with run_proxy(url, slots) as proxy:
        for page_name in (name, "raw-" + name):
            headers = {**BROWSER, "Accept-Encoding": accept or "identity"}
            resp = await raw_get(proxy.port, f"/{prefix}{page_name}", headers)
            assert resp.status == 200 and resp.complete
            assert decode(resp.get("content-encoding"), resp.body) == pages[page_name]


@pytest.mark.parametrize("name", sorted(SLOTS))
@pytest.mark.parametrize("route", ROUTES, ids=ids)
async def test_with_variants_bytes_outside_the_slots_are_identical(origin, tmp_path, name, route):
    url, pages = origin
    prefix, accept = route
    slots = tmp_path / "slots"
    write_variant(slots, "hero", "everyone", HERO)
    write_variant(slots, "banner", "everyone", BANNER)
    async with run_proxy(url, slots) as proxy:
        resp = await raw_get(proxy.port, f"/{prefix}{name}", {**BROWSER, "Accept-Encoding": accept or "identity"})
    assert resp.status == 200 and resp.complete
    assert resp.get("content-encoding") == accept
    out = decode(resp.get("content-encoding"), resp.body)
    page = pages[name]

    # out = A + HERO + B + BANNER + C  and  page = A + I1 + B + I2 + C
    a, rest = out.split(HERO.encode())
    b, c = rest.split(BANNER.encode())
    assert page.startswith(a) and a.endswith(b">")
    assert b'data-edge-slot="hero"' in a[a.rindex(b"<") :]  # A ends with the hero's start tag
    assert page.endswith(c) and c.startswith(b"</div")
    at_b = page.index(b, len(a))
    inner_hero = page[len(a) : at_b]
    inner_banner = page[at_b + len(b) : len(page) - len(c)]
    assert inner_hero and inner_banner  # the slots' default content was there
    assert b.startswith(b"</div")
    assert b'data-edge-slot="banner"' in b[b.rindex(b"<") :]
    assert len(page) == len(a) + len(inner_hero) + len(b) + len(inner_banner) + len(c)
