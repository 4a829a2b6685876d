"""edgeproxy.rewrite.sort: reorder element children, keep every byte."""

from __future__ import annotations

import pytest

from edgeproxy.model import SortChildren, SortKey
from edgeproxy.rewrite import SortError, sort_children
from edgeproxy.rewrite.sort import split_children

from rewrite_impls import each_scanner  # noqa: F401  (the fixture, by name)

pytestmark = pytest.mark.usefixtures("each_scanner")

PRICE = SortKey("attr", attr="data-price")
PRICE_DESC = SortKey("attr", attr="data-price", descending=True)
STOCK_DESC = SortKey("attr", attr="data-stock", descending=True)
AFFINITY = SortKey("affinity")


def li(sku: str, **attrs: str) -> bytes:
    extra = "".join(f' data-{k}="{v}"' for k, v in attrs.items())
    return f'<li data-sku="{sku}"{extra}>{sku}</li>'.encode()


def skus(out: bytes) -> list[str]:
    import re

    return re.findall(r'data-sku="([^"]+)"', out.decode())


def sort(body: bytes, *keys: SortKey, affinity: tuple[str, ...] = ()) -> bytes:
    return sort_children(body, SortChildren(tuple(keys), affinity))


# ---------------------------------------------------------------------------
# Keys (CONTRACT §2)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "items, keys, affinity, expected",
    [
        # numeric attribute, ascending and descending
        ([li("A", price="10"), li("B", price="9.5"), li("C", price="100")], [PRICE], (), ["B", "A", "C"]),
        ([li("A", price="10"), li("B", price="9.5"), li("C", price="100")], [PRICE_DESC], (), ["C", "A", "B"]),
        # missing and non-numeric values sort last, in origin order, both directions
        ([li("A"), li("B", price="n/a"), li("C", price="2"), li("D", price="1")], [PRICE], (), ["D", "C", "A", "B"]),
        ([li("A"), li("B", price="n/a"), li("C", price="2"), li("D", price="1")], [PRICE_DESC], (), ["C", "D", "A", "B"]),
        # text attribute, case-folded, ascending and descending ("ab" vs "abc")
        ([li("A", name="pear"), li("B", name="Apple"), li("C", name="fig")], [SortKey("attr", attr="data-name")], (), ["B", "C", "A"]),
        ([li("A", name="ab"), li("B", name="abc"), li("C", name="b")], [SortKey("attr", attr="data-name", descending=True)], (), ["C", "B", "A"]),
        # stable: ties keep the origin's order
        ([li("A", price="1"), li("B", price="1"), li("C", price="0")], [PRICE], (), ["C", "A", "B"]),
        # affinity: strongest (earliest) first, others after in origin order
        ([li("A", category="formal"), li("B", category="trail"), li("C", category="road")], [AFFINITY], ("road", "trail"), ["C", "B", "A"]),
        ([li("A", category="x"), li("B", category="road trail")], [AFFINITY], ("trail",), ["B", "A"]),
        ([li("A", category="x"), li("B")], [AFFINITY], (), ["A", "B"]),
        # pin: listed SKUs first, in the listed order
        ([li("A"), li("B"), li("C"), li("D")], [SortKey("pin", skus=("C", "A"))], (), ["C", "A", "B", "D"]),
        # keys apply in order: affinity, then price descending within each group
        (
            [li("A", category="t", price="1"), li("B", category="f", price="5"), li("C", category="t", price="3")],
            [AFFINITY, PRICE_DESC],
            ("t",),
            ["C", "A", "B"],
        ),
        # out of stock last, then cheapest first
        (
            [li("A", stock="0", price="1"), li("B", stock="4", price="9"), li("C", stock="4", price="2")],
            [STOCK_DESC, PRICE],
            (),
            ["C", "B", "A"],
        ),
    ],
)
def test_sort_keys_order_children_as_the_contract_says(items, keys, affinity, expected):
    body = b"\n".join(items)
    assert skus(sort(body, *keys, affinity=affinity)) == expected


# ---------------------------------------------------------------------------
# Byte fidelity
# ---------------------------------------------------------------------------
def test_separators_stay_in_place_and_elements_keep_their_bytes():
    body = (
        b"\n  <li data-sku=B data-price=2 class='x'>b<ul><li>nested</li></ul></li>"
        b"<!-- c -->\n  <LI data-sku=A data-price=1>a</LI >text\n"
    )
    out = sort(body, PRICE)
    assert out == (
        b"\n  <LI data-sku=A data-price=1>a</LI ><!-- c -->\n  "
        b"<li data-sku=B data-price=2 class='x'>b<ul><li>nested</li></ul></li>text\n"
    )


def test_children_already_in_order_return_the_same_bytes():
    body = b"<li data-price=1>a</li> <li data-price=2>b</li>"
    assert sort(body, PRICE) is body


def test_scripts_and_templates_stay_where_they_are():
    body = b"<li data-price=2>b</li><script>x()</script><li data-price=1>a</li><template><li></template>"
    out = sort(body, PRICE)
    assert out == b"<li data-price=1>a</li><script>x()</script><li data-price=2>b</li><template><li></template>"


def test_void_children_are_sorted_as_single_tags():
    body = b'<img data-price=2 src=b><img data-price=1 src=a>'
    assert sort(body, PRICE) == b'<img data-price=1 src=a><img data-price=2 src=b>'


def test_split_children_gives_exact_extents():
    body = b" <a>1</a> t <b><b></b></b>"
    seps, els = split_children(body)
    assert seps == [b" ", b" t ", b""]
    assert [body[s:e] for s, e in els] == [b"<a>1</a>", b"<b><b></b></b>"]


def test_attribute_values_are_read_with_character_references_decoded():
    body = b'<li data-sku="B" data-price="&#50;">b</li><li data-sku="A" data-price="1">a</li>'
    assert skus(sort(body, PRICE)) == ["A", "B"]


# ---------------------------------------------------------------------------
# Bodies that are not a clean list of elements: refused, never mangled.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"<li data-price=2>b<li data-price=1>a",  # end tags omitted
        b"<li data-price=2>b</li><li data-price=1>a",
        b"<li>a</li></ul><li>b</li>",  # stray end tag
        b"<li data-price=2",  # cut-off start tag
    ],
)
def test_body_that_is_not_a_clean_element_list_raises_sort_error(body):
    with pytest.raises(SortError):
        sort(body, PRICE)


def test_sort_keys_read_only_real_attributes_first_occurrence_any_case():
    # The wanted name inside another attribute's value is not that attribute;
    # a repeated attribute keeps its first value; names are case-insensitive;
    # a valueless attribute is "" (not a number: after the numbers).
    body = (
        b'<li data-sku="A" title="data-price=0" data-price=3>a</li>'
        b'<li data-sku="B" DATA-PRICE=2 data-price=0>b</li>'
        b'<li data-sku="C" data-price>c</li>'
        b"<li data-sku=\"D\" data-price = '1'>d</li>"
    )
    assert skus(sort(body, PRICE)) == ["D", "B", "A", "C"]


# ---------------------------------------------------------------------------
# One pass (split_until_end) == end finder, then split_children
# ---------------------------------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgeproxy.model import ReplaceInner  # noqa: E402
from edgeproxy.rewrite import SlotRewriter, rewrite_document  # noqa: E402
from edgeproxy.rewrite import scanner as sc  # noqa: E402
from edgeproxy.rewrite import stream as stream_mod  # noqa: E402
from edgeproxy.rewrite.sort import _split, split_until_end  # noqa: E402

GRID_PIECES = [
    b"<li data-p=2>b</li>", b"<LI data-p=1>a</LI >", b"<li data-p=3>x<ul><li>n</li></ul></li>", b"<ul>", b"</ul>",
    b"</UL >", b"</ul", b"<!-- </ul> -->", b"<!--", b"-->", b"<script>'</ul>'</script>", b"<img data-p=0>",
    b'<li data-p=4 title="</ul>">t</li>', b"<li title='<UL>'>", b"<li>", b"</li>", b"text ", b"\n", b"<", b"<!x>",
    b"</ >", b"<textarea></ul></textarea>", b"<template><li></template>", b"<p data-p=5>a</p>",
    b"<li data-p=6><!--</li>--></li>", b"<li>a</ul>b</li>", b"<br>", b"<li data-p=0 data-edge-slot=h>h</li>",
    b"<plaintext>", b"<li data-p=1", b"<style>x</style>", b"<uL/>", b"<ul\n>", b"<ulx>", b"</ulx>",
]
grid_bodies = st.lists(st.sampled_from(GRID_PIECES), max_size=10).map(b"".join)


@settings(max_examples=800, deadline=None)
@given(grid_bodies, st.sampled_from([b"<ul data-edge-slot=g>", b"<UL data-edge-slot=g class=x>"]), grid_bodies)
def test_split_until_end_agrees_with_the_end_finder_and_split_children(body, start, after):
    buf = b"<p>" + start + body + after
    b = 3 + len(start)
    found = split_until_end(buf, b, "ul", len(buf))
    if found is None:
        return
    q, e, els, spans = found
    assert sc.element_end(buf, b, "ul", False) == (q, e)
    assert sc.element_end(buf, b, "ul", True) == (q, e)
    _, ref_els, ref_spans = _split(buf[b:q])
    assert (els, spans) == (ref_els, ref_spans)


EDITS_G = {
    "g": SortChildren((SortKey("attr", attr="data-p"),)),
    "h": ReplaceInner("H"),
}


@settings(max_examples=500, deadline=None)
@given(
    grid_bodies,
    st.sampled_from([b"<ul data-edge-slot=g>", b"<UL data-edge-slot=g class=x>"]),
    grid_bodies,
    st.lists(st.integers(0, 300), max_size=4),
    st.sampled_from([1 << 20, 30]),
)
def test_sort_slot_output_is_the_same_with_or_without_the_one_pass(body, start, after, cuts, cap):
    doc = b"<p>a</p>" + start + body + after

    def run(d):
        whole = rewrite_document(d, EDITS_G, max_slot_bytes=cap)
        rw = SlotRewriter(EDITS_G, max_slot_bytes=cap)
        out, prev = [], 0
        for p in sorted({min(c, len(d)) for c in cuts}) + [len(d)]:
            out.append(rw.feed(d[prev:p]))
            prev = p
        out.append(rw.finish())
        return whole, (b"".join(out), rw.outcomes)

    fast = run(doc)
    real = stream_mod.split_until_end
    try:
        stream_mod.split_until_end = lambda *a: None
        exact = run(doc)
    finally:
        stream_mod.split_until_end = real
    assert fast == exact


def test_one_pass_gives_way_when_a_child_holds_the_slot_tag_name():
    # "</ul>" inside a child (in an attribute value here): the one pass does
    # not decide, the exact path reads it as a value.
    doc = b'<ul data-edge-slot=g><li data-p=2><img alt="</ul>"></li><li data-p=1>a</li></ul>'
    body = doc.index(b">") + 1
    assert split_until_end(doc, body, "ul", len(doc)) is None
    out, outcomes = rewrite_document(doc, EDITS_G)
    assert out == b'<ul data-edge-slot=g><li data-p=1>a</li><li data-p=2><img alt="</ul>"></li></ul>'
    assert outcomes["g"] == "applied"
    # In the child's own start tag it is inside a tag for both: decided at once.
    doc = b'<ul data-edge-slot=g><li data-p=2 title="</ul>">b</li><li data-p=1>a</li></ul>'
    assert split_until_end(doc, body, "ul", len(doc))[:2] == (73, 78)
    assert rewrite_document(doc, EDITS_G)[0] == (
        b'<ul data-edge-slot=g><li data-p=1>a</li><li data-p=2 title="</ul>">b</li></ul>'
    )


# A <div> grid of <div> cards: children named like the slot, read in one pass.
DIV_PIECES = [
    b"<div data-p=2><div>b</div></div>", b"<DIV data-p=1>a</DIV >", b"<div data-p=3><div><div>x</div></div></div>",
    b"<div>", b"</div>", b"</DIV >", b"</div", b"<div/>", b"<div\n>", b"<diva>", b"</diva>", b"<!-- </div> -->",
    b"<!-- <div> -->", b"<!--", b"-->", b"<script>'</div>'</script>", b"<img data-p=0 alt='<div>'>",
    b'<div data-p=4 title="</div>">t</div>', b"<div title='<DIV>'>", b"<p data-p=5>a</p>", b"text ", b"\n", b"<",
    b"<textarea></div></textarea>", b"<template><div></template>", b"<div data-p=6><!--</div>--></div>",
    b"<span><div>s</div></span>", b"<div data-p=1", b"<plaintext>", b"<br>", b"<div data-p=7 title=\"",
]
div_bodies = st.lists(st.sampled_from(DIV_PIECES), max_size=10).map(b"".join)


@settings(max_examples=800, deadline=None)
@given(div_bodies, st.sampled_from([b"<div data-edge-slot=g>", b"<DIV data-edge-slot=g class=x>"]), div_bodies)
def test_split_until_end_agrees_on_children_named_like_the_slot(body, start, after):
    buf = b"<p>" + start + body + after
    b = 3 + len(start)
    found = split_until_end(buf, b, "div", len(buf))
    if found is None:
        return
    q, e, els, spans = found
    assert sc.element_end(buf, b, "div", False) == (q, e)
    assert sc.element_end(buf, b, "div", True) == (q, e)
    _, ref_els, ref_spans = _split(buf[b:q])
    assert (els, spans) == (ref_els, ref_spans)


def test_a_div_grid_of_div_cards_is_split_in_one_pass():
    doc = b"<div data-edge-slot=g><div data-p=2><div>b</div></div>\n<div data-p=1><div>a</div></div></div><p>after</p>"
    body = doc.index(b">") + 1
    q, e, els, _ = split_until_end(doc, body, "div", len(doc))
    assert doc[q:e] == b"</div>" and [doc[body + a : body + z] for a, z in els] == [
        b"<div data-p=2><div>b</div></div>", b"<div data-p=1><div>a</div></div>"
    ]
    assert rewrite_document(doc, EDITS_G)[0] == (
        b"<div data-edge-slot=g><div data-p=1><div>a</div></div>\n<div data-p=2><div>b</div></div></div><p>after</p>"
    )


@settings(max_examples=500, deadline=None)
@given(
    div_bodies,
    st.sampled_from([b"<div data-edge-slot=g>", b"<DIV data-edge-slot=g class=x>"]),
    div_bodies,
    st.lists(st.integers(0, 400), max_size=8),
    st.sampled_from([1 << 20, 40]),
)
def test_a_one_pass_resumed_chunk_by_chunk_gives_the_exact_paths_bytes(body, start, after, cuts, cap):
    doc = b"<p>a</p>" + start + body + after

    def run(d):
        rw = SlotRewriter(EDITS_G, max_slot_bytes=cap)
        out, prev = [], 0
        for p in sorted({min(c, len(d)) for c in cuts}) + [len(d)]:
            out.append(rw.feed(d[prev:p]))
            prev = p
        out.append(rw.finish())
        return b"".join(out), rw.outcomes

    fast = run(doc)
    real = stream_mod.split_until_end
    try:
        stream_mod.split_until_end = lambda *a: None
        exact = run(doc)
    finally:
        stream_mod.split_until_end = real
    assert fast == exact


def test_a_sort_slot_arriving_in_chunks_is_walked_once_and_resumed():
    from edgeproxy.rewrite.sort import NEED, OnePass

    cards = b"".join(b"<div data-p=%d><div>c%d</div></div>\n" % (9 - i, i) for i in range(10))
    doc = b"<div data-edge-slot=g>" + cards + b"</div>"
    body = doc.index(b">") + 1
    progress = OnePass()
    third = body + len(cards) // 3
    assert split_until_end(doc[:third], body, "div", len(doc), progress) == NEED
    assert 0 < progress.pos <= third - body and len(progress.els) >= 2
    q, e, els, _ = split_until_end(doc, body, "div", len(doc), progress)
    assert (q, e) == (len(doc) - 6, len(doc)) and len(els) == 10
    assert (els, q, e) == (_split(doc[body:q])[1], *sc.element_end(doc, body, "div", False))


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(list("0123456789.+-eE _\t\u0661\u0662x") + ["inf", "nan", "1" * 400]), max_size=8).map("".join))
def test_number_fast_path_reads_what_the_number_pattern_reads(text):
    import math

    from edgeproxy.rewrite.sort import _NUMBER, _number

    stripped = text.strip()
    expected = float(stripped) if _NUMBER.fullmatch(stripped) else None
    assert _number(text) == (expected if expected is None or math.isfinite(expected) else None)


@settings(max_examples=400, deadline=None)
@given(grid_bodies, grid_bodies, grid_bodies, st.booleans())
def test_sort_parts_in_a_larger_buffer_join_to_sort_children(before, body, after, one_pass):
    from edgeproxy.rewrite.sort import sort_parts

    edit = EDITS_G["g"]
    buf = bytearray(before + body + after)
    start, end = len(before), len(before) + len(body)
    children = None
    if one_pass:
        found = split_until_end(b"<ul>" + body + b"</ul>", 4, "ul", len(body) + 9)
        if found is None or found[0] != len(body):
            return
        children = found[2], found[3]
    elif after:
        return  # without the children, the body must run to the end of the buffer
    try:
        want = sort_children(bytes(body), edit)
    except SortError:
        with pytest.raises(SortError):
            sort_parts(buf, start, end, edit, "utf-8", children)
        return
    parts = sort_parts(buf, start, end, edit, "utf-8", children)
    assert (bytes(body) if parts is None else b"".join(parts)) == want
    del parts
    buf += b"x"  # no view of buf is left behind
