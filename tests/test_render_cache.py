"""The render cache: rewritten pages of bodies served from memory.

Pure tests of ``RenderCache`` with plain data, then one end to end through
the proxy: a cacheable origin page is rewritten once and served from memory.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from edgeproxy.model import ReplaceInner
from edgeproxy.render_cache import RenderCache, render_key

from proxyharness import BROWSER, raw_request, request_bytes, run_origin, run_proxy, write_variant

BODY = b'<p data-edge-slot="hero">default</p>' * 10
KEY = render_key({"hero": ReplaceInner("<b>hi</b>")}, "gzip", "text/html")


def test_a_stored_render_is_returned_for_the_same_body_and_edits():
    rc = RenderCache(1 << 20)
    rc.put("/", BODY, KEY, b"out", {"hero": "applied"})
    assert rc.get("/", BODY, KEY) == (b"out", {"hero": "applied"})
    assert rc.get("/", bytes(BODY), KEY) == (b"out", {"hero": "applied"})  # equal bytes, another object


def test_another_body_or_other_edits_or_another_coding_miss():
    rc = RenderCache(1 << 20)
    rc.put("/", BODY, KEY, b"out", {"hero": "applied"})
    assert rc.get("/", BODY + b" ", KEY) is None
    assert rc.get("/", BODY, render_key({"hero": ReplaceInner("<b>ho</b>")}, "gzip", "text/html")) is None
    assert rc.get("/", BODY, render_key({"hero": ReplaceInner("<b>hi</b>")}, "br", "text/html")) is None
    assert rc.get("/other", BODY, KEY) is None


def test_renders_that_ran_out_of_time_or_failed_are_not_stored():
    rc = RenderCache(1 << 20)
    rc.put("/", BODY, KEY, b"out", {"hero": "deadline"})
    rc.put("/", BODY, render_key({}, "br", None), b"out", {"hero": "failed"})
    assert rc.stats["entries"] == 0


def test_distinct_decisions_per_url_are_bounded_and_overflows_counted():
    rc = RenderCache(1 << 20, keys_per_url=3)
    keys = [render_key({"hero": ReplaceInner(f"city {i}")}, "gzip", "text/html") for i in range(5)]
    for key in keys:
        rc.put("/", BODY, key, b"x", {"hero": "applied"})
    assert rc.stats["max_keys_per_url"] == 3
    assert rc.stats["key_overflows"] == 2
    assert rc.get("/", BODY, keys[0]) is None  # the oldest went first
    assert rc.get("/", BODY, keys[4]) == (b"x", {"hero": "applied"})


def test_total_bytes_are_bounded_least_recently_used_out():
    rc = RenderCache(3 * (1000 + 256))
    keys = [render_key({"hero": ReplaceInner(str(i))}, "gzip", None) for i in range(4)]
    for i, key in enumerate(keys):
        rc.put(f"/{i}", BODY, key, b"x" * 1000, {})
    assert rc.stats["entries"] == 3
    assert rc.get("/0", BODY, keys[0]) is None
    assert rc.get("/3", BODY, keys[3]) is not None


async def test_a_cached_origin_page_is_rewritten_once_and_then_served_rendered(tmp_path):
    hits = 0

    async def page(request):
        nonlocal hits
        hits += 1
        return web.Response(
            text='<html><body><section data-edge-slot="hero">default</section></body></html>',
            content_type="text/html",
            headers={"Cache-Control": "public, max-age=60"},
        )

    app = web.Application()
    app.router.add_get("/", page)
    slots = tmp_path / "slots"
    write_variant(slots, "hero", "everyone", "<h1>Hello</h1>")
    async with run_origin(app) as origin, run_proxy(origin, slots, cache_bytes=1 << 20) as proxy:
        async with aiohttp.ClientSession(headers=BROWSER) as session:
            bodies, timings = [], []
            for _ in range(3):
                async with session.get(f"http://127.0.0.1:{proxy.port}/") as resp:
                    bodies.append(await resp.text())
                    timings.append(resp.headers["Server-Timing"])
                    assert resp.headers["Cache-Control"].startswith("private")
    assert hits == 1
    assert all('<section data-edge-slot="hero"><h1>Hello</h1></section>' in b for b in bodies)
    assert 'cache;desc="MISS"' in timings[0]
    assert 'cache;desc="HIT+RENDER"' in timings[2]


_PER_REQUEST = {"date", "set-cookie", "server-timing", "x-request-id"}


def _shape(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    # The head with what differs per request blanked, Age dropped (a miss has none).
    return [(k, "…" if k.lower() in _PER_REQUEST else v) for k, v in headers if k.lower() != "age"]


async def test_a_hit_head_prebuilt_per_entry_is_the_miss_head_but_for_per_request_lines(tmp_path):
    # A hit's head is formatted once per stored entry (``respond.prebuilt_head``);
    # the miss still builds it per request: both must come out the same.
    async def page(request):
        resp = web.Response(body=BODY, content_type="text/html")
        resp.headers.add("Cache-Control", "public")
        resp.headers.add("Cache-Control", "max-age=60")
        resp.headers["ETag"] = '"v1"'
        resp.headers["Vary"] = "Cookie"
        resp.headers["X-Request-ID"] = "origin-id"
        resp.headers["Server-Timing"] = "db;dur=3"
        resp.headers["X-Shop"] = "fr"
        return resp

    app = web.Application()
    app.router.add_get("/", page)
    slots = tmp_path / "slots"
    write_variant(slots, "hero", "everyone", "<h1>Hello</h1>")
    ask = request_bytes("GET", "/", {**BROWSER, "Accept-Encoding": "gzip"})
    async with run_origin(app) as origin, run_proxy(origin, slots, cache_bytes=1 << 20) as proxy:
        got = [await raw_request(proxy.port, ask) for _ in range(3)]
        old = await raw_request(proxy.port, ask.replace(b"HTTP/1.1", b"HTTP/1.0", 1))
    miss, hit, rendered = got
    assert 'cache;desc="MISS"' in miss.get("Server-Timing")
    assert 'cache;desc="HIT+RENDER"' in rendered.get("Server-Timing") and hit.body == rendered.body
    assert hit.get("Age") is not None and rendered.get("Age") is not None
    names = [k for k, _ in hit.headers]
    assert names.index("Age") == names.index("Server") + 1  # after the origin's, before ours
    assert _shape(hit.headers) == _shape(miss.headers) == _shape(rendered.headers)
    assert hit.body == miss.body == rendered.body
    assert hit.get("X-Request-ID") != "origin-id" and hit.get("Content-Encoding") == "gzip"
    assert old.get("Connection") is None or old.get("Connection") == "close"
    assert old.body == miss.body and old.get("Content-Length") == str(len(miss.body))


def test_two_decisions_whose_keys_hash_alike_never_get_each_others_page(monkeypatch):
    """The store is keyed by the decision key's hash; the key itself is
    compared on a hit, so a collision is a miss, never another page."""
    from edgeproxy import render_cache

    monkeypatch.setattr(render_cache, "hash", lambda value: 1, raising=False)
    rc = render_cache.RenderCache(1 << 20)
    body = b"<html>origin</html>"
    rc.put("/p", body, ("br", "text/html", (("hero", "a"),)), b"page A", {"hero": "applied"})
    assert rc.get("/p", body, ("br", "text/html", (("hero", "b"),))) is None
    assert rc.get("/p", body, ("br", "text/html", (("hero", "a"),))) == (b"page A", {"hero": "applied"})
