"""A shop, its slots folder and the real proxy, for the console's tests.

Used by ``test_console.py`` (HTTP) and ``test_console_browser.py``
(Playwright).  The slots cover every state the overview shows::

    hero/mobile-uk.html      live       mobile visitors in GB or IE, priority 10
    hero/welcome-back.html   live       returning visitors, priority 5, a merge tag
    hero/black-friday.html   scheduled  starts in 2099
    hero/summer-sale.html    ended      summer 2000
    banner/free-delivery.html live      experiment delivery-test, weight 50
    banner/broken.html       broken     invalid TOML, nothing serves
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from proxyharness import BROWSER, run_origin, run_proxy

PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Ridgeline</title>'
    '<link rel="stylesheet" href="/static/site.css"></head><body>'
    '<section data-edge-slot="hero" class="hero"><h1>Default hero</h1></section>'
    '<div data-edge-slot="banner"></div>'
    '<p><a href="/c/running">Running</a> <a href="/checkout/complete">Buy</a></p>'
    "</body></html>"
)
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"

VARIANTS = {
    "hero/mobile-uk.html": (
        'description = "Mobile hero for the UK and Ireland"\nwhen = { device = "mobile", country = ["GB", "IE"] }\npriority = 10',
        "<h1>Mobile UK hero</h1>",
    ),
    "hero/welcome-back.html": (
        'when = { visitor = "returning" }\npriority = 5',
        '<h1>Welcome back, {{ city | default: "friend" }}</h1>',
    ),
    "hero/black-friday.html": ("priority = 20\nstart = 2099-11-27T00:00:00Z", "<h1>Black Friday</h1>"),
    "hero/summer-sale.html": ("start = 2000-06-01T00:00:00Z\nend = 2000-09-01T00:00:00Z", "<h1>Summer sale</h1>"),
    "banner/free-delivery.html": ('experiment = { name = "delivery-test", weight = 50 }', "<p>Free delivery</p>"),
    "banner/broken.html": ("priority = = 1", "<p>Never</p>"),
}


def write_slots(directory: Path) -> Path:
    for rel, (header, fragment) in VARIANTS.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<!--edge\n{header}\n-->\n{fragment}\n", encoding="utf-8")
    return directory


class Shop:
    """The origin: one page for every path, a stylesheet; it remembers the
    headers of every request it got."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/static/site.css", self.css)
        app.router.add_get("/old-sale", self.moved)
        app.router.add_get("/{tail:.*}", self.page)
        return app

    async def page(self, request: web.Request) -> web.Response:
        self.requests.append({"path_qs": request.path_qs, **{k.lower(): v for k, v in request.headers.items()}})
        return web.Response(text=PAGE, content_type="text/html")

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/c/sale")

    async def css(self, request: web.Request) -> web.Response:
        return web.Response(text=".hero{color:#333}", content_type="text/css")


@contextlib.asynccontextmanager
async def run_shop(tmp_path: Path, **overrides) -> AsyncIterator[tuple[Shop, object]]:
    """The shop and the proxy in front of it; yields ``(shop, server)``."""
    shop = Shop()
    slots = write_slots(tmp_path / "slots")
    async with run_origin(shop.app()) as url:
        shop.url = url
        async with run_proxy(url, slots, **overrides) as server:
            yield shop, server


async def get(port: int, path: str, headers: dict | None = None, cookie_jar=None) -> tuple[int, str, dict]:
    async with aiohttp.ClientSession(cookie_jar=cookie_jar) as session:
        async with session.get(f"http://127.0.0.1:{port}{path}", headers=headers, allow_redirects=True) as resp:
            return resp.status, await resp.text(), dict(resp.headers)


def visit_headers(*, mobile: bool = False, country: str | None = None) -> dict[str, str]:
    """A browser page load (with ``--geo-header CF-IPCountry`` trusted)."""
    h = dict(BROWSER)
    if mobile:
        h["User-Agent"] = IPHONE
    if country:
        h["CF-IPCountry"] = country
    return h


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{" if labels else name + " "):
            head, _, value = line.rpartition(" ")
            if not labels or all(f'{k}="{v}"' in head for k, v in labels.items()):
                return float(value)
    return 0.0
