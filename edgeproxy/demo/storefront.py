"""The demo storefront: a small outdoor-gear shop that edgeproxy sits in front of.

It plays the *origin* in ``edgeproxy demo`` and in the end-to-end tests, so it
behaves like a real shop would, warts included:

- pages carry the slot markers of CONTRACT §1: ``announcement`` (every page),
  ``hero`` and ``banner`` (home), ``product-grid`` (home and category pages,
  ``<li data-sku data-category data-price data-stock>`` children);
- the page also holds a ``<style>`` rule, a ``<script>`` string and a comment
  that mention ``data-edge-slot`` -- none of them is a slot;
- HTML is gzip-compressed when the client accepts it, with ``Vary:
  Accept-Encoding``, a strong ``ETag`` per representation and ``304`` on a
  matching ``If-None-Match`` (RFC 9110 §13.1.2);
- listings are ``Cache-Control: public, max-age=60``; the basket, checkout
  and account pages are ``private, no-store``;
- ``/cart/add?sku=…`` sets the storefront's own ``cart`` cookie and
  ``/login`` sets ``customer=1`` (plus a ``session`` cookie), so the demo can
  target ``cart = "filled"``, ``customer = true`` and ``logged_in = true``;
- ``/checkout/complete`` is a conversion page; ``/static/logo.svg`` and
  ``/robots.txt`` are non-HTML responses the proxy must stream unchanged.

Run it alone with ``python -m edgeproxy.demo.storefront --port 8080``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import html
import secrets
import string
from collections import Counter
from importlib import resources

from aiohttp import web

DEFAULT_STOREFRONT_PORT = 8080
LISTING_CACHE = "public, max-age=60"
PRODUCT_CACHE = "public, max-age=300"
PRIVATE_CACHE = "private, no-store"
STATIC_CACHE = "public, max-age=86400"
# The cart cookie holds SKUs joined by "." (RFC 6265 cookie-octets: no commas).
CART_COOKIE = "cart"
CUSTOMER_COOKIE = "customer"
SESSION_COOKIE = "session"
MAX_CART_ITEMS = 20
# Bodies smaller than this are not worth compressing (nginx: gzip_min_length).
GZIP_MIN_BYTES = 256


@dataclasses.dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    category: str
    price: str  # pounds, two decimals, as the page's data-price shows it
    stock: int
    blurb: str


CATEGORIES: dict[str, tuple[str, str]] = {
    "trail-running": ("Trail running", "Grippy shoes and light packs for mud, rock and fell."),
    "road-running": ("Road running", "Cushioned miles, race-day carbon and kit for dark evenings."),
    "hiking": ("Hiking", "Boots, packs and shells for long days on the hill."),
    "formal": ("Formal & commute", "Leather shoes you can actually walk to the office in."),
}

PRODUCTS: tuple[Product, ...] = (
    Product("TR-101", "Ridgeline Trail 3", "trail-running", "89.00", 12, "Our best-selling all-rounder: 5 mm lugs, rock plate, 8 mm drop."),
    Product("TR-102", "Scree Runner GTX", "trail-running", "129.00", 4, "Waterproof membrane and a gusseted tongue for wet Pennine bogs."),
    Product("TR-103", "Fellrunner Lite", "trail-running", "99.00", 0, "Minimal, precise and fast on steep grass. Back in stock soon."),
    Product("TR-104", "Summit Vest 12L", "trail-running", "75.00", 25, "Race vest with two soft flasks and room for a full kit list."),
    Product("RD-201", "Tempo Glide 5", "road-running", "110.00", 30, "Bouncy foam for tempo runs and long Sundays."),
    Product("RD-202", "Marathon Carbon", "road-running", "180.00", 2, "Carbon plate, 39 mm stack, built for race day."),
    Product("RD-203", "Daily Miles", "road-running", "70.00", 18, "A dependable trainer for every easy run."),
    Product("RD-204", "Reflective Night Jacket", "road-running", "65.00", 9, "360° reflective print and a packable hood."),
    Product("HK-301", "Cairn Mid WP", "hiking", "140.00", 7, "Waterproof mid boot with a Vibram outsole."),
    Product("HK-302", "Bothy 28L Daypack", "hiking", "60.00", 15, "Ventilated back, rain cover and hip-belt pockets."),
    Product("HK-303", "Ridge Poles (pair)", "hiking", "45.00", 0, "Carbon folding poles, 290 g a pair."),
    Product("HK-304", "Storm Shell Jacket", "hiking", "160.00", 5, "Three-layer shell with pit zips and a helmet-ready hood."),
    Product("FM-401", "Commuter Oxford", "formal", "120.00", 0, "Goodyear-welted leather with a hidden cushioned sole."),
    Product("FM-402", "City Derby", "formal", "115.00", 6, "Soft-grain derby that survives the walk from the station."),
    Product("FM-403", "Merino Office Socks (3 pairs)", "formal", "24.50", 40, "Fine merino, no itch, no smell."),
)
PRODUCTS_BY_SKU = {p.sku: p for p in PRODUCTS}
# The home page's "Bestsellers" grid mixes categories, so an affinity sort shows.
BESTSELLERS = ("RD-201", "HK-301", "TR-101", "FM-402", "RD-203", "TR-102")

ROBOTS_TXT = b"User-agent: *\nDisallow: /cart\nDisallow: /checkout\nDisallow: /login\n"

_LAYOUT = string.Template(resources.files("edgeproxy.demo").joinpath("templates/layout.html").read_text("utf-8"))
_LOGO_SVG = resources.files("edgeproxy.demo").joinpath("static/logo.svg").read_bytes()


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------
def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _initials(name: str) -> str:
    return "".join(word[0] for word in name.split()[:2]).upper()


def _product_li(p: Product) -> str:
    """One grid child.  Each ``<li>`` is one line, so a sort variant's effect
    is easy to see with ``grep -o 'data-sku="[^"]*"'``."""
    stock = f'<span class="stock">{p.stock} in stock</span>' if p.stock else '<span class="stock out">Out of stock</span>'
    return (
        f'  <li data-sku="{p.sku}" data-category="{p.category}" data-price="{p.price}" data-stock="{p.stock}" class="card">'
        f'<a href="/p/{p.sku}"><div class="thumb {p.category}">{_initials(p.name)}</div>'
        f'<div class="info"><span class="name">{_e(p.name)}</span><span class="price">£{p.price}</span>{stock}</div></a></li>'
    )


def _product_grid(products: list[Product]) -> str:
    items = "\n".join(_product_li(p) for p in products)
    return f'<ul data-edge-slot="product-grid" class="grid">\n{items}\n</ul>'


def _render(request: web.Request, *, title: str, page: str, main: str) -> str:
    signed_in = request.cookies.get(SESSION_COOKIE)
    account = '<a href="/logout">Sign out</a>' if signed_in else '<a href="/login">Sign in</a>'
    return _LAYOUT.substitute(title=_e(title), page=page, account=account, main=main)


def _cart_skus(request: web.Request) -> list[str]:
    raw = request.cookies.get(CART_COOKIE, "")
    return [sku for sku in raw.split(".") if sku in PRODUCTS_BY_SKU][:MAX_CART_ITEMS]


# ---------------------------------------------------------------------------
# Responses: gzip, ETag and conditional requests, as a real shop's stack does.
# ---------------------------------------------------------------------------
def _accepts_gzip(accept_encoding: str) -> bool:
    """True when ``gzip`` (or ``*``) has a non-zero q-value (RFC 9110 §12.5.3)."""
    explicit: dict[str, float] = {}
    for part in accept_encoding.split(","):
        token, _, params = part.strip().partition(";")
        token = token.strip().lower()
        if not token:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        explicit[token] = q
    for name in ("gzip", "x-gzip"):
        if name in explicit:
            return explicit[name] > 0
    return explicit.get("*", 0.0) > 0


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison, as RFC 9110 §13.1.2 asks for If-None-Match."""
    if if_none_match.strip() == "*":
        return True
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag.removeprefix("W/") in tags


def _respond(
    request: web.Request,
    body: bytes,
    *,
    content_type: str,
    cache_control: str,
    status: int = 200,
    compressible: bool = True,
) -> web.Response:
    """A response with a per-representation strong ETag, gzip when accepted."""
    headers = {"Cache-Control": cache_control}
    digest = hashlib.sha256(body).hexdigest()[:20]
    if compressible and len(body) >= GZIP_MIN_BYTES:
        headers["Vary"] = "Accept-Encoding"
        if _accepts_gzip(request.headers.get("Accept-Encoding", "")):
            # mtime=0: the same page always compresses to the same bytes.
            body = gzip.compress(body, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
            digest += "-gzip"
    etag = f'"{digest}"'
    headers["ETag"] = etag
    if status == 200 and _etag_matches(request.headers.get("If-None-Match", ""), etag):
        headers.pop("Content-Encoding", None)
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, status=status, headers=headers, content_type=content_type,
                        charset="utf-8" if content_type.startswith("text/") else None)


def _page(request: web.Request, *, title: str, page: str, main: str, cache: str, status: int = 200) -> web.Response:
    body = _render(request, title=title, page=page, main=main).encode("utf-8")
    return _respond(request, body, content_type="text/html", cache_control=cache, status=status)


def _redirect(location: str) -> web.Response:
    """303 See Other, so a GET follows whatever method the form used."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": PRIVATE_CACHE})


# ---------------------------------------------------------------------------
# Handlers
# ---------------------------------------------------------------------------
async def home(request: web.Request) -> web.Response:
    bestsellers = [PRODUCTS_BY_SKU[sku] for sku in BESTSELLERS]
    main = f"""<section data-edge-slot="hero" class="hero">
  <h1>Gear for every kind of ground</h1>
  <p>Trail, road and hill: every pair tested by our staff on the Calderdale hills.</p>
  <a class="btn" href="/c/trail-running">Shop trail running</a>
</section>
<div data-edge-slot="banner" class="banner"></div>
<h2>Bestsellers</h2>
{_product_grid(bestsellers)}"""
    return _page(request, title="Running, trail & hiking gear", page="home", main=main, cache=LISTING_CACHE)


async def category(request: web.Request) -> web.Response:
    slug = request.match_info["category"]
    if slug not in CATEGORIES:
        return await not_found(request)
    title, blurb = CATEGORIES[slug]
    products = [p for p in PRODUCTS if p.category == slug]
    main = f"""<div class="crumbs"><a href="/">Home</a> › {_e(title)}</div>
<h1>{_e(title)}</h1>
<p>{_e(blurb)}</p>
{_product_grid(products)}"""
    return _page(request, title=title, page=f"category:{slug}", main=main, cache=LISTING_CACHE)


async def product(request: web.Request) -> web.Response:
    p = PRODUCTS_BY_SKU.get(request.match_info["sku"])
    if p is None:
        return await not_found(request)
    cat_title = CATEGORIES[p.category][0]
    stock = f'<p class="stock">{p.stock} in stock, ships today</p>' if p.stock else '<p class="stock out">Out of stock</p>'
    buy = f'<a class="btn" href="/cart/add?sku={p.sku}">Add to basket</a>' if p.stock else ""
    main = f"""<div class="crumbs"><a href="/">Home</a> › <a href="/c/{p.category}">{_e(cat_title)}</a> › {_e(p.name)}</div>
<div class="product" data-sku="{p.sku}">
  <div class="thumb {p.category}">{_initials(p.name)}</div>
  <div>
    <h1>{_e(p.name)}</h1>
    <p class="price">£{p.price}</p>
    <p>{_e(p.blurb)}</p>
    {stock}
    {buy}
  </div>
</div>"""
    return _page(request, title=p.name, page=f"product:{p.sku}", main=main, cache=PRODUCT_CACHE)


async def cart(request: web.Request) -> web.Response:
    counts = Counter(_cart_skus(request))
    if counts:
        rows = []
        total = 0.0
        for sku, qty in counts.items():
            p = PRODUCTS_BY_SKU[sku]
            total += float(p.price) * qty
            rows.append(f"<tr><td>{_e(p.name)}</td><td>{qty}</td><td>£{float(p.price) * qty:.2f}</td></tr>")
        body = (
            '<table class="cart"><tr><th>Item</th><th>Qty</th><th>Price</th></tr>\n'
            + "\n".join(rows)
            + f'\n<tr><th colspan="2">Total</th><th>£{total:.2f}</th></tr></table>\n'
            + '<p><a class="btn" href="/checkout/complete">Place order</a> <a href="/cart/clear">Empty basket</a></p>'
        )
    else:
        body = '<div class="notice">Your basket is empty. <a href="/c/trail-running">Find some shoes</a>.</div>'
    return _page(request, title="Your basket", page="cart", main=f"<h1>Your basket</h1>\n{body}", cache=PRIVATE_CACHE)


async def cart_add(request: web.Request) -> web.Response:
    sku = request.query.get("sku", "")
    if request.method == "POST":
        sku = str((await request.post()).get("sku", sku))
    if sku not in PRODUCTS_BY_SKU:
        raise web.HTTPBadRequest(text=f"unknown sku {sku!r}\n")
    skus = (_cart_skus(request) + [sku])[-MAX_CART_ITEMS:]
    response = _redirect("/cart")
    response.set_cookie(CART_COOKIE, ".".join(skus), max_age=14 * 86400, path="/", httponly=True, samesite="Lax")
    return response


async def cart_clear(request: web.Request) -> web.Response:
    response = _redirect("/cart")
    response.del_cookie(CART_COOKIE, path="/")
    return response


async def checkout_complete(request: web.Request) -> web.Response:
    """The conversion page (``--conversion-path /checkout/complete``)."""
    skus = _cart_skus(request)
    total = sum(float(PRODUCTS_BY_SKU[s].price) for s in skus)
    order = secrets.token_hex(3).upper()
    main = f"""<h1>Thank you!</h1>
<div class="notice">Order <strong>RL-{order}</strong> is confirmed: {len(skus)} item(s), £{total:.2f}.
A confirmation email is on its way (not really: this is a demo shop).</div>"""
    response = _page(request, title="Order confirmed", page="checkout-complete", main=main, cache=PRIVATE_CACHE)
    response.del_cookie(CART_COOKIE, path="/")
    return response


async def login(request: web.Request) -> web.Response:
    """Signs in without a password: sets ``customer=1`` (one year) and a session."""
    response = _redirect("/")
    response.set_cookie(CUSTOMER_COOKIE, "1", max_age=365 * 86400, path="/", httponly=True, samesite="Lax")
    response.set_cookie(SESSION_COOKIE, secrets.token_urlsafe(16), path="/", httponly=True, samesite="Lax")
    return response


async def logout(request: web.Request) -> web.Response:
    # The visitor stays a known customer; only the session ends.
    response = _redirect("/")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def app_page(request: web.Request) -> web.Response:
    main = """<h1>The Ridgeline app</h1>
<div class="notice">Track orders, save routes and collect rewards. (A demo page: there is no app.)</div>"""
    return _page(request, title="The Ridgeline app", page="app", main=main, cache=PRODUCT_CACHE)


async def robots(request: web.Request) -> web.Response:
    return _respond(request, ROBOTS_TXT, content_type="text/plain", cache_control=STATIC_CACHE)


async def logo(request: web.Request) -> web.Response:
    return _respond(request, _LOGO_SVG, content_type="image/svg+xml", cache_control=STATIC_CACHE, compressible=False)


async def not_found(request: web.Request) -> web.Response:
    main = '<h1>Page not found</h1>\n<div class="notice">That trail goes nowhere. <a href="/">Back to the shop</a>.</div>'
    return _page(request, title="Not found", page="404", main=main, cache="no-cache", status=404)


def build_storefront() -> web.Application:
    """The demo shop as an aiohttp application (no I/O until it is run)."""
    app = web.Application()
    app.router.add_get("/", home)
    app.router.add_get("/c/{category}", category)
    app.router.add_get("/p/{sku}", product)
    app.router.add_get("/cart", cart)
    app.router.add_route("*", "/cart/add", cart_add)
    app.router.add_get("/cart/clear", cart_clear)
    app.router.add_route("*", "/checkout/complete", checkout_complete)
    app.router.add_get("/login", login)
    app.router.add_get("/logout", logout)
    app.router.add_get("/app", app_page)
    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/static/logo.svg", logo)
    app.router.add_get("/{tail:.*}", not_found)
    return app


def main(argv: list[str] | None = None) -> None:
    """``python -m edgeproxy.demo.storefront``: the shop alone (the compose file's origin)."""
    parser = argparse.ArgumentParser(prog="python -m edgeproxy.demo.storefront", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_STOREFRONT_PORT)
    args = parser.parse_args(argv)
    web.run_app(build_storefront(), host=args.host, port=args.port, access_log=None)


if __name__ == "__main__":  # pragma: no cover
    main()
