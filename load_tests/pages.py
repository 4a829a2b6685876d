"""The benchmark's storefront pages and the edits every personaliser applies.

Pages are product-listing pages of about 60 KB, 120 KB and 500 KB: a head
with scripts, styles and comments, a site header, a hero slot
(``<section data-edge-slot="hero">``), a banner slot
(``<div data-edge-slot="banner">``), a 24-item product grid slot
(``<ul data-edge-slot="product-grid">`` of ``<li data-sku data-category
data-price data-stock>``) and filler cards, inline scripts and comments
around them.  Generation is deterministic (seeded), so every system in a run
and every run on every machine serves the same bytes.

The edits are the same for every personaliser: the hero and the banner get
the variant content below, the grid is sorted by ``data-price`` ascending.
nginx ``sub_filter`` can only do the first two (it has no way to reorder
elements); the table says so.
"""

from __future__ import annotations

import random
import re

#: Page name -> approximate size in bytes.
PAGE_SIZES: dict[str, int] = {"60k": 60_000, "120k": 120_000, "500k": 500_000}

#: The hero's default inner HTML, exactly as the origin sends it (nginx's
#: ``sub_filter`` searches for this string).
HERO_DEFAULT = "<h1>Welcome to Ridgeline</h1><p>Trail and road running gear.</p>"
HERO_VARIANT = (
    '<h1 class="hero__title">Free next-day delivery</h1>'
    '<p>Order by 3pm and run in them tomorrow.</p><a class="btn" href="/sale">Shop the sale</a>'
)
BANNER_VARIANT = '<p class="banner">Black Friday: 20% off trail running</p>'
BANNER_EMPTY = '<div data-edge-slot="banner"></div>'
#: The product-grid sort variant: cheapest first (stable).
SORT_KEYS = ("data-price",)

#: Substrings that prove an edit was applied.
HERO_MARKER = b"Free next-day delivery"
BANNER_MARKER = b"Black Friday: 20% off trail running"

CATEGORIES = ("trail-running", "road-running", "hiking", "formal", "kids", "outdoor")
GRID_ITEMS = 24


def make_page(target: int, seed: int = 1) -> bytes:
    """A product-listing page of about ``target`` bytes with the three slots."""
    rnd = random.Random(seed)
    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Trail running | Ridgeline</title>\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        + "".join(
            f'<script src="/static/app{i}.js" defer></script>\n<link rel="stylesheet" href="/static/s{i}.css">\n'
            for i in range(6)
        )
        + "<style>.card{display:flex}.hero>h1{font:2em serif}.grid li{list-style:none}</style>\n"
        + '<script>window.__STATE__ = {"user": null, "cart": [], "html": "<div class=x>\\u003c/div>"};</script>\n'
        + "<!-- build 2026-11-22 <div data-edge-slot=\"hero\"> in a comment is not a slot -->\n</head><body>\n"
    )
    header = (
        '<header class="site-header"><nav><ul>'
        + "".join(f'<li><a href="/c/{c}">{c}</a></li>' for c in CATEGORIES)
        + "</ul></nav></header>\n"
        f'<section data-edge-slot="hero" class="hero">{HERO_DEFAULT}</section>\n'
        f"{BANNER_EMPTY}\n"
    )
    items = []
    for i in range(GRID_ITEMS):
        cat = rnd.choice(CATEGORIES)
        price = rnd.randint(10, 300)
        items.append(
            f'  <li data-sku="S{i:03d}" data-category="{cat}" data-price="{price}.00" data-stock="{rnd.randint(0, 20)}">'
            f'<a href="/p/S{i:03d}"><img src="/img/S{i:03d}.jpg" alt="Shoe {i}" loading="lazy">'
            f'<span class="name">Shoe {i}</span><span class="price">&pound;{price}.00</span></a></li>\n'
        )
    grid = '<ul data-edge-slot="product-grid" class="grid">\n' + "".join(items) + "</ul>\n"
    filler = []
    size = len(head) + len(header) + len(grid)
    i = 0
    while size < target - 200:
        if i % 7 == 3:
            part = f"<script>dataLayer.push({{event: 'impression', id: {i}, html: '<div data-x=\"{i}\">'}});</script>\n"
        elif i % 11 == 5:
            part = f"<!-- card {i}: <div class=old> -->\n"
        else:
            part = (
                f'<div class="card card--{i % 5}" data-id="{i}"><a href="/p/{i}" title="Item &quot;{i}&quot;">'
                f'<img src="/i/{i}.jpg" alt="item {i}"><span>Item {i}</span></a><p>Lorem ipsum dolor sit amet, '
                f"consectetur adipiscing elit {i}.</p></div>\n"
            )
        filler.append(part)
        size += len(part)
        i += 1
    # The grid sits in the first third: a streaming rewriter has most of the
    # page still to pass through after the last slot.
    third = len(filler) // 3
    body = "".join(filler[:third]) + grid + "".join(filler[third:])
    return (head + header + body + "<footer>Ridgeline</footer></body></html>\n").encode()


def hero_offset(page: bytes) -> int:
    """Offset of the hero slot's start tag: everything before it is page head."""
    return page.index(b'<section data-edge-slot="hero"')


_PRICE = re.compile(rb'<li data-sku="[^"]*" data-category="[^"]*" data-price="([0-9.]+)"')


def check_personalised(body: bytes) -> dict[str, bool]:
    """Which of the three edits a response body shows."""
    grid_start = body.find(b'data-edge-slot="product-grid"')
    grid = body[grid_start : body.find(b"</ul>", grid_start)] if grid_start >= 0 else b""
    prices = [float(p) for p in _PRICE.findall(grid)]
    return {
        "hero": HERO_MARKER in body,
        "banner": BANNER_MARKER in body,
        "sort": len(prices) == GRID_ITEMS and prices == sorted(prices) and prices != _origin_prices(),
    }


_ORIGIN_PRICES: list[float] = []


def _origin_prices() -> list[float]:
    if not _ORIGIN_PRICES:
        page = make_page(PAGE_SIZES["60k"])
        start = page.find(b'data-edge-slot="product-grid"')
        _ORIGIN_PRICES.extend(float(p) for p in _PRICE.findall(page[start : page.find(b"</ul>", start)]))
    return _ORIGIN_PRICES


def describe(flags: dict[str, bool]) -> str:
    """``hero+banner+sort``, ``hero+banner``, … or ``none``."""
    done = [name for name in ("hero", "banner", "sort") if flags.get(name)]
    return "+".join(done) if done else "none"


LISTING_CARDS = 48


def _card(rnd: random.Random, i: int) -> str:
    """One ~2 KB product card as shops write them: nested divs, a ``srcset``
    image, price/stock/category attributes, an inline SVG, a JSON-LD script."""
    cat = rnd.choice(CATEGORIES)
    price = rnd.randint(10, 300) + rnd.choice((0, 0.5, 0.99))
    stock = rnd.randint(0, 40)
    sku = f"RL-{i:04d}"
    rating = rnd.randint(30, 50) / 10
    imgs = ", ".join(f"/img/{sku}-{w}.webp {w}w" for w in (240, 360, 480, 720, 960))
    return (
        f'<div class="product-card product-card--{cat}" data-sku="{sku}" data-category="{cat}" '
        f'data-price="{price:.2f}" data-stock="{stock}" data-rating="{rating}">\n'
        f'  <div class="product-card__media"><a href="/p/{sku}" class="product-card__link" tabindex="-1">'
        f'<picture><source type="image/avif" srcset="{imgs.replace(".webp", ".avif")}" sizes="(min-width: 1024px) 25vw, 50vw">'
        f'<img src="/img/{sku}-480.webp" srcset="{imgs}" sizes="(min-width: 1024px) 25vw, 50vw" '
        f'alt="Ridgeline {cat.replace("-", " ")} shoe {i} &ndash; side view" width="480" height="480" loading="lazy" decoding="async">'
        f"</picture></a>\n"
        f'    <button type="button" class="wishlist" aria-label="Add to wishlist" data-action="wishlist#toggle">'
        f'<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true"><path d="M12 21s-6.7-4.3-9.3-8.1C.9 10.3 1.6 6.6 4.6 5.2'
        f'c2-.9 4.3-.3 5.6 1.4L12 8.4l1.8-1.8c1.3-1.7 3.6-2.3 5.6-1.4 3 1.4 3.7 5.1 1.9 7.7C18.7 16.7 12 21 12 21z"/></svg>'
        f"</button></div>\n"
        f'  <div class="product-card__body"><h3 class="product-card__title"><a href="/p/{sku}">Ridgeline Trail {i} '
        f'{"GTX" if i % 3 else "Lite"}</a></h3>\n'
        f'    <div class="rating" title="{rating} out of 5"><span class="stars" style="--rating: {rating}"></span>'
        f'<span class="count">({rnd.randint(3, 900)})</span></div>\n'
        f'    <div class="price"><span class="price__now" data-currency="GBP">&pound;{price:.2f}</span>'
        + (f'<s class="price__was">&pound;{price * 1.2:.2f}</s>' if i % 4 == 0 else "")
        + f'</div>\n    <p class="stock stock--{"low" if stock < 5 else "ok"}">{"Only " + str(stock) + " left" if stock < 5 else "In stock"}</p>\n'
        f'    <form action="/cart/add" method="post" class="add"><input type="hidden" name="sku" value="{sku}">'
        f'<input type="hidden" name="csrf" value="{rnd.getrandbits(64):016x}"><button class="btn btn--primary">Add to bag</button></form>\n'
        f"  </div>\n"
        f'  <script type="application/ld+json">{{"@context":"https://schema.org","@type":"Product","sku":"{sku}",'
        f'"name":"Ridgeline Trail {i}","image":"/img/{sku}-480.webp","offers":{{"@type":"Offer","price":"{price:.2f}",'
        f'"priceCurrency":"GBP","availability":"https://schema.org/{"InStock" if stock else "OutOfStock"}"}},'
        f'"aggregateRating":{{"@type":"AggregateRating","ratingValue":"{rating}"}}}}</script>\n'
        f"</div>\n"
    )


def make_listing_page(cards: int = LISTING_CARDS, seed: int = 1) -> bytes:
    """A listing page as real shops send it: most of its bytes are a product
    grid slot (``<div data-edge-slot="product-grid">``) of ``cards`` ~2 KB
    cards (see ``_card``), with the hero and banner slots above it; about
    120 KB with the default 48 cards."""
    rnd = random.Random(seed)
    page = make_page(20_000, seed)
    grid = (
        '<div data-edge-slot="product-grid" class="product-grid" data-view="grid">\n'
        + "".join(_card(rnd, i) for i in range(cards))
        + "</div>\n"
    )
    # Replace the small generated grid by the realistic one.
    start = page.index(b'<ul data-edge-slot="product-grid"')
    end = page.index(b"</ul>\n", start) + len(b"</ul>\n")
    return page[:start] + grid.encode() + page[end:]
