"""The two aiohttp baselines edgeproxy is measured against.

    python -m load_tests.proxies bare    --upstream URL --port P
    python -m load_tests.proxies reparse --upstream URL --port P
    python -m load_tests.proxies static  --port P

``bare``: the floor of any aiohttp reverse proxy.  Forwards the request
(hop-by-hop headers stripped, RFC 9110 §7.6.1), streams the origin's body
back chunk by chunk without decoding it (``auto_decompress=False``), no
personalisation.  If edgeproxy costs about what this costs, personalisation
is nearly free.

``reparse``: what a re-parsing personaliser does (GrowthBook's edge app with
its own parser, most "edge HTML rewriting" middleware): buffer the whole
body, decode it, parse it into a DOM (selectolax/lexbor), replace the hero and
banner contents, sort the product grid by ``data-price``, re-serialise and
send.  It does the same three edits edgeproxy does (and loses the origin's
exact bytes doing it).

``static``: not a proxy — aiohttp answering with the page from memory, the
same bytes and headers as the origin.  The floor of anything built on
aiohttp's server: a cached response cannot cost less than this.

All run on uvloop when installed, with the access log off.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import signal

import aiohttp
from aiohttp import web

from .origin import run
from .pages import BANNER_VARIANT, HERO_VARIANT, PAGE_SIZES, SORT_KEYS, make_page

# RFC 9110 §7.6.1 hop-by-hop fields, plus the ones aiohttp sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
READ_CHUNK = 64 * 1024

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


def _request_headers(request: web.Request) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
    headers["X-Forwarded-For"] = request.remote or ""
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    return headers


def _response_headers(upstream: aiohttp.ClientResponse, *, drop: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    return [(k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() not in drop]


async def bare_handler(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    body = request.content if request.can_read_body else None
    async with session.request(
        request.method, request.app[UPSTREAM] + request.path_qs, headers=_request_headers(request), data=body, allow_redirects=False
    ) as up:
        resp = web.StreamResponse(status=up.status, reason=up.reason)
        for k, v in _response_headers(up):
            resp.headers.add(k, v)
        await resp.prepare(request)
        async for chunk in up.content.iter_chunked(READ_CHUNK):
            await resp.write(chunk)
        await resp.write_eof()
        return resp


def _rewrite_dom(html: bytes) -> bytes:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    for slot, inner in (("hero", HERO_VARIANT), ("banner", BANNER_VARIANT)):
        node = tree.css_first(f'[data-edge-slot="{slot}"]')
        if node is not None:
            node.inner_html = inner
    grid = tree.css_first('[data-edge-slot="product-grid"]')
    if grid is not None:
        children = [c for c in grid.iter() if c.is_element_node]

        def key(node):
            raw = node.attributes.get(SORT_KEYS[0]) or ""
            try:
                return (0, float(raw), "")
            except ValueError:
                return (1, 0.0, raw)

        for child in sorted(children, key=key):
            grid.insert_child(child)  # appends a copy
        for child in children:
            child.decompose()
    return tree.html.encode("utf-8")


async def reparse_handler(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    body = await request.read() if request.can_read_body else None
    async with session.request(
        request.method, request.app[UPSTREAM] + request.path_qs, headers=_request_headers(request), data=body, allow_redirects=False
    ) as up:
        payload = await up.read()  # decoded: the session decompresses
        if not up.headers.get("Content-Type", "").startswith("text/html"):
            return web.Response(status=up.status, body=payload, headers=_response_headers(up, drop=frozenset({"content-length", "content-encoding"})))
        out = _rewrite_dom(payload)
        headers = _response_headers(up, drop=frozenset({"content-length", "content-encoding", "cache-control", "etag"}))
        headers.append(("Cache-Control", "private"))
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            out = gzip.compress(out, 1)  # level 1, as nginx and edgeproxy
            headers.append(("Content-Encoding", "gzip"))
        resp = web.Response(status=up.status, body=out)
        for k, v in headers:
            resp.headers.add(k, v)
        return resp


PAGES = web.AppKey("pages", dict)


async def static_handler(request: web.Request) -> web.Response:
    name, kind = request.match_info["name"], request.match_info["kind"]
    body = request.app[PAGES].get(name)
    if body is None or kind not in ("private", "public"):
        raise web.HTTPNotFound()
    cc = "private, no-store" if kind == "private" else "public, max-age=60"
    return web.Response(body=body, headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": cc, "Vary": "Accept-Encoding"})


async def serve(kind: str, upstream: str, host: str, port: int) -> None:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    if kind == "static":
        app[PAGES] = {name: make_page(size) for name, size in PAGE_SIZES.items()}
        app.router.add_get("/listing/{name}/{kind}", static_handler)

    async def session_ctx(app: web.Application):
        # bare: pass the encoding through untouched; reparse: decode to parse.
        app[SESSION] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256),
            auto_decompress=(kind == "reparse"),
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
        )
        yield
        await app[SESSION].close()

    if kind != "static":
        app.cleanup_ctx.append(session_ctx)
        app.router.add_route("*", "/{tail:.*}", bare_handler if kind == "bare" else reparse_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="baseline proxies for the load tests")
    ap.add_argument("kind", choices=("bare", "reparse", "static"))
    ap.add_argument("--upstream", default="", help="the origin (bare, reparse)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    run(serve(args.kind, args.upstream, args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
