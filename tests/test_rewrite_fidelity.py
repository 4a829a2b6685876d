"""Fidelity on real storefront pages (raw server bytes, see tests/data/html/README.md):
no edit -> identical; with edits -> every byte outside the slots identical."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeproxy.model import ReplaceInner, SortChildren, SortKey
from edgeproxy.rewrite import SlotRewriter, rewrite_document

from rewrite_impls import each_scanner  # noqa: F401  (the fixture, by name)

pytestmark = pytest.mark.usefixtures("each_scanner")

PAGES = Path(__file__).parent / "data" / "html"


def load(name: str) -> bytes:
    return (PAGES / name).read_bytes()


def mark(page: bytes, start_tag_prefix: bytes, name: str) -> tuple[bytes, int]:
    """Add ``data-edge-slot`` to the first start tag beginning with
    ``start_tag_prefix``; returns the page and the offset after that start tag."""
    at = page.index(start_tag_prefix)
    name_end = at + page[at:].index(b" ")
    page = page[:name_end] + f' data-edge-slot="{name}"'.encode() + page[name_end:]
    return page, page.index(b">", name_end) + 1


# Realistic places: the listing's image carousel, the search widget, a
# product details panel (several look-alike ids on Costco's page sit inside
# <script type="text/template"> and are rightly not slots).
SLOTS = {
    "etsy-listing-es.html": [
        (b'<div class="listing-page-image-carousel-component', "hero"),
        (b'<div \n    id="product-details-content-toggle"', "banner"),
    ],
    "costco-product.html": [
        (b'<div id="search-widget"', "hero"),
        (b'<div class="product-info-description"', "banner"),
    ],
}


@pytest.mark.parametrize("page_name", sorted(SLOTS))
def test_page_with_slots_but_no_edit_is_byte_identical(page_name):
    page = load(page_name)
    for prefix, name in SLOTS[page_name]:
        page, _ = mark(page, prefix, name)
    assert rewrite_document(page, {"other": ReplaceInner("x")})[0] == page
    rw = SlotRewriter({"other": ReplaceInner("x")})
    assert b"".join(rw.feed(page[i : i + 8192]) for i in range(0, len(page), 8192)) + rw.finish() == page


@pytest.mark.parametrize("page_name", sorted(SLOTS))
def test_unmarked_page_is_returned_as_the_same_object(page_name):
    page = load(page_name)
    out, outcomes = rewrite_document(page, {"hero": ReplaceInner("x")})
    assert out is page and outcomes == {"hero": "absent"}


@pytest.mark.parametrize("page_name", sorted(SLOTS))
@pytest.mark.parametrize("prefix_name", [0, 1])
def test_bytes_outside_the_rewritten_slot_are_identical(page_name, prefix_name):
    prefix, name = SLOTS[page_name][prefix_name]
    page, body_start = mark(load(page_name), prefix, name)
    new = "<p>Personalised \u00e9 \u20ac</p>"
    out, outcomes = rewrite_document(page, {name: ReplaceInner(new)})
    assert outcomes == {name: "applied"}
    new_bytes = new.encode()
    # Everything up to and including the slot's start tag is untouched...
    assert out[:body_start] == page[:body_start]
    assert out[body_start : body_start + len(new_bytes)] == new_bytes
    # ...and so is everything from its end tag on.
    suffix = out[body_start + len(new_bytes) :]
    assert page.endswith(suffix) and suffix.startswith(b"</div")
    assert len(page) - len(suffix) > body_start


@pytest.mark.parametrize("page_name", sorted(SLOTS))
def test_two_slots_rewritten_in_one_stream_with_odd_chunks(page_name):
    page = load(page_name)
    edits = {}
    for prefix, name in SLOTS[page_name]:
        page, _ = mark(page, prefix, name)
        edits[name] = ReplaceInner(f"<b>{name}</b>")
    whole, outcomes = rewrite_document(page, edits)
    assert outcomes == {name: "applied" for name in edits}
    rw = SlotRewriter(edits)
    chunked = b"".join(rw.feed(page[i : i + 1021]) for i in range(0, len(page), 1021)) + rw.finish()
    assert chunked == whole
    assert len(whole) < len(page)


def test_sorting_a_real_list_keeps_every_child_byte():
    # Costco's header menu list: reverse its items by a key they all lack except one.
    page = load("costco-product.html")
    at = page.index(b"<ul ", page.index(b'id="search-widget"'))
    page, body_start = mark(page, page[at : at + 8], "grid")
    out, outcomes = rewrite_document(page, {"grid": SortChildren((SortKey("attr", attr="class"),))})
    assert outcomes["grid"] in {"applied", "unsortable"}
    assert len(out) == len(page) and sorted(out) == sorted(page)
    assert out[:body_start] == page[:body_start]
