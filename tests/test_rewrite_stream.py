"""edgeproxy.rewrite.stream: which markers are slots, what changes, what never does."""

from __future__ import annotations

import time

import pytest

from edgeproxy.model import Observe, ReplaceInner, SortChildren, SortKey
from edgeproxy.rewrite import SlotRewriter, rewrite_document
from edgeproxy.rewrite import native
from edgeproxy.rewrite import stream as stream_mod

from rewrite_impls import each_scanner  # noqa: F401  (the fixture, by name)

pytestmark = pytest.mark.usefixtures("each_scanner")

NEW = "<b>NEW</b>"
HERO = {"hero": ReplaceInner(NEW)}


def rewrite(doc: bytes, edits=HERO, **kw) -> tuple[bytes, dict[str, str]]:
    return rewrite_document(doc, edits, **kw)


def rewrite_chunked(doc: bytes, sizes, edits=HERO, **kw) -> tuple[bytes, dict[str, str]]:
    rw = SlotRewriter(edits, **kw)
    out, pos, i = [], 0, 0
    while pos < len(doc):
        n = sizes[i % len(sizes)]
        out.append(rw.feed(doc[pos : pos + n]))
        pos += n
        i += 1
    out.append(rw.finish())
    return b"".join(out), rw.outcomes


# ---------------------------------------------------------------------------
# Markers that are slots: the inner HTML is replaced, tags stay byte-for-byte.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "doc, expected",
    [
        # quoting and attribute order
        (b'<div data-edge-slot="hero">old</div>', b'<div data-edge-slot="hero"><b>NEW</b></div>'),
        (b"<div data-edge-slot='hero'>old</div>", b"<div data-edge-slot='hero'><b>NEW</b></div>"),
        (b"<div data-edge-slot=hero>old</div>", b"<div data-edge-slot=hero><b>NEW</b></div>"),
        (b'<div class=a id="b" data-edge-slot=hero>x</div>', b'<div class=a id="b" data-edge-slot=hero><b>NEW</b></div>'),
        (b'<div data-edge-slot = "hero" class=a>x</div>', b'<div data-edge-slot = "hero" class=a><b>NEW</b></div>'),
        (b'<div\n\tdata-edge-slot="hero"\n>x</div\n>', b'<div\n\tdata-edge-slot="hero"\n><b>NEW</b></div\n>'),
        (b'<div/data-edge-slot=hero>x</div>', b"<div/data-edge-slot=hero><b>NEW</b></div>"),
        # case-insensitive tag names, end tag with junk
        (b"<DIV data-edge-slot=hero>x</DIV>", b"<DIV data-edge-slot=hero><b>NEW</b></DIV>"),
        (b"<Section data-edge-slot=hero>x</sECTION >", b"<Section data-edge-slot=hero><b>NEW</b></sECTION >"),
        (b'<div data-edge-slot=hero>x</div class="y>z">!', b'<div data-edge-slot=hero><b>NEW</b></div class="y>z">!'),
        # quoted ">" and "<" in the slot's own start tag
        (b'<div title="a>b" data-edge-slot=hero>x</div>', b'<div title="a>b" data-edge-slot=hero><b>NEW</b></div>'),
        (b"<div title='<p>' data-edge-slot=hero>x</div>", b"<div title='<p>' data-edge-slot=hero><b>NEW</b></div>"),
        # the value with a character reference
        (b'<div data-edge-slot="h&#101;ro">x</div>', b'<div data-edge-slot="h&#101;ro"><b>NEW</b></div>'),
        # the first of duplicate attributes wins, as in HTML
        (b'<div data-edge-slot=hero data-edge-slot=other>x</div>', b"<div data-edge-slot=hero data-edge-slot=other><b>NEW</b></div>"),
        # empty slot
        (b"<div data-edge-slot=hero></div>", b"<div data-edge-slot=hero><b>NEW</b></div>"),
        # after an abruptly closed comment
        (b"<!--><div data-edge-slot=hero>x</div>", b"<!--><div data-edge-slot=hero><b>NEW</b></div>"),
        (b"<!---><div data-edge-slot=hero>x</div>", b"<!---><div data-edge-slot=hero><b>NEW</b></div>"),
        # after a closed script, style, comment, template
        (b"<script>1<2</script><div data-edge-slot=hero>x</div>", b"<script>1<2</script><div data-edge-slot=hero><b>NEW</b></div>"),
        (b"<!-- c --!><div data-edge-slot=hero>x</div>", b"<!-- c --!><div data-edge-slot=hero><b>NEW</b></div>"),
        (b"<template><template></template>t</template><p data-edge-slot=hero>x</p>", b"<template><template></template>t</template><p data-edge-slot=hero><b>NEW</b></p>"),
        # a "<" that opens no tag, and a tag name that merely starts like a raw-text one
        (b"a < b <div data-edge-slot=hero>x</div>", b"a < b <div data-edge-slot=hero><b>NEW</b></div>"),
        (b"<scripts></scripts><div data-edge-slot=hero>x</div>", b"<scripts></scripts><div data-edge-slot=hero><b>NEW</b></div>"),
    ],
)
def test_slot_inner_html_is_replaced_and_its_tags_kept(doc, expected):
    out, outcomes = rewrite(doc)
    assert out == expected
    assert outcomes == {"hero": "applied"}


# ---------------------------------------------------------------------------
# Markers that are not slots: the page comes out identical.
# ---------------------------------------------------------------------------
NOT_SLOTS = [
    # comments
    b'<!-- <div data-edge-slot="hero">x</div> -->',
    b"<!--<div data-edge-slot=hero>x</div>--!>",
    b"<!-- unterminated <div data-edge-slot=hero>x</div>",
    # raw text and opaque elements
    b'<script>document.write("<div data-edge-slot=hero>x</div>")</script>',
    b"<SCRIPT type=x>'<div data-edge-slot=hero>x</div>'</script >",
    b"<Script>'<div data-edge-slot=hero>x</div>'</sCrIpT>",
    b"<script>'</scriptx><div data-edge-slot=hero>x</div>'</script>",
    b"<style>/* <div data-edge-slot=hero>x</div> */</style>",
    b"<textarea><div data-edge-slot=hero>x</div></textarea>",
    b"<title><div data-edge-slot=hero>x</div></title>",
    b"<template><div data-edge-slot=hero>x</div></template>",
    b"<template><template></template><div data-edge-slot=hero>x</div></template>",
    b"<noscript><div data-edge-slot=hero>x</div></noscript>",
    b"<xmp><div data-edge-slot=hero>x</div></xmp>",
    b"<iframe><div data-edge-slot=hero>x</div></iframe>",
    b"<noembed><div data-edge-slot=hero>x</div></noembed>",
    b"<noframes><div data-edge-slot=hero>x</div></noframes>",
    b"<plaintext><div data-edge-slot=hero>x</div>",
    b"<script>never closed <div data-edge-slot=hero>x</div>",
    # a slot attribute on a raw-text element itself
    b"<textarea data-edge-slot=hero>x</textarea>",
    b"<script data-edge-slot=hero>x</script>",
    # attribute values
    b'<img alt="<div data-edge-slot=hero>x</div>"><div>y</div>',
    b"<img alt='<div data-edge-slot=hero>x</div>'>",
    b'<div class="data-edge-slot=hero">x</div>',
    b'<div title="x" class=data-edge-slot=hero>x</div>',
    b'<a title="<!--" href=x>a</a><img alt="<div data-edge-slot=hero>x</div>">',
    # text, end tags, bogus comments, doctype
    b"<p>data-edge-slot=hero</p>",
    b"data-edge-slot=hero",
    b"<p>x</p data-edge-slot=hero>y",
    b"<!data-edge-slot=hero>x",
    b"<?php data-edge-slot=hero ?>x",
    b"<!DOCTYPE html data-edge-slot=hero>x",
    # names that only contain the marker
    b'<div data-edge-slot-name="hero">x</div>',
    b'<div xdata-edge-slot="hero">x</div>',
    # a start tag cut off by EOF
    b"<div data-edge-slot=hero",
    b'<div data-edge-slot="hero',
]


@pytest.mark.parametrize("doc", NOT_SLOTS)
def test_marker_outside_a_start_tag_attribute_name_is_not_a_slot(doc):
    out, outcomes = rewrite(doc)
    assert out == doc
    assert outcomes == {"hero": "absent"}


@pytest.mark.parametrize("doc", NOT_SLOTS)
def test_marker_that_is_not_a_slot_is_ignored_however_chunked(doc):
    for i in range(len(doc) + 1):
        rw = SlotRewriter(HERO)
        assert rw.feed(doc[:i]) + rw.feed(doc[i:]) + rw.finish() == doc


# ---------------------------------------------------------------------------
# Finding the slot's end: nested tags, comments and raw text inside.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "inner",
    [
        b"<div>a</div><div><div>b</div></div>",
        b"<DIV>a</Div>",
        b"<!-- </div> -->",
        b"<!-- <div> -->",
        b"<script>'</div>'</script>",
        b"<style>a{}</div></style>",
        b"<textarea></div></textarea>",
        b"<template></div></template>",
        b'<img alt="</div>"><a title="<div>">x</a>',
        b"<divx></divx><div-a></div-a>",
        b"<div/>a</div>",  # a self-closing div opens a div in HTML
        b"text with a < and a </ and </>",
    ],
)
def test_slot_end_skips_nested_same_name_tags_comments_and_raw_text(inner):
    doc = b"<p>pre</p><div data-edge-slot=hero>" + inner + b"</div><p>post</p>"
    out, outcomes = rewrite(doc)
    assert out == b"<p>pre</p><div data-edge-slot=hero><b>NEW</b></div><p>post</p>"
    assert outcomes == {"hero": "applied"}


# ---------------------------------------------------------------------------
# Slots left alone, and the rest of the page still personalised.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "doc, outcome",
    [
        (b"<div data-edge-slot=hero>never closed", "unterminated"),
        (b"<div data-edge-slot=hero><div>inner</div>", "unterminated"),
        (b"<div data-edge-slot=hero><script>never closed</div>", "unterminated"),
        (b"<img data-edge-slot=hero src=x>", "void"),
        (b"<br data-edge-slot=hero>text</br>", "void"),
        (b"<div data-edge-slot='hero'/>text</div>", "void"),
    ],
)
def test_slot_that_cannot_be_edited_is_left_byte_for_byte(doc, outcome):
    out, outcomes = rewrite(doc)
    assert out == doc
    assert outcomes == {"hero": outcome}


def test_slot_over_the_size_cap_is_left_untouched_and_the_next_slot_rewritten():
    doc = b"<div data-edge-slot=hero>" + b"x" * 100 + b"</div><p data-edge-slot=banner>b</p>"
    edits = {"hero": ReplaceInner(NEW), "banner": ReplaceInner("B")}
    out, outcomes = rewrite(doc, edits, max_slot_bytes=50)
    assert out == b"<div data-edge-slot=hero>" + b"x" * 100 + b"</div><p data-edge-slot=banner>B</p>"
    assert outcomes == {"hero": "over-cap", "banner": "applied"}


def test_slot_body_exactly_at_the_cap_is_rewritten():
    doc = b"<div data-edge-slot=hero>" + b"x" * 50 + b"</div>"
    assert rewrite(doc, max_slot_bytes=50)[1] == {"hero": "applied"}
    assert rewrite(doc, max_slot_bytes=49)[1] == {"hero": "over-cap"}


def test_unterminated_slot_still_lets_a_later_slot_be_rewritten():
    doc = b"<div data-edge-slot=hero><p data-edge-slot=banner>b</p> and no end"
    edits = {"hero": ReplaceInner(NEW), "banner": ReplaceInner("B")}
    out, outcomes = rewrite(doc, edits)
    assert out == b"<div data-edge-slot=hero><p data-edge-slot=banner>B</p> and no end"
    assert outcomes == {"hero": "unterminated", "banner": "applied"}


def test_same_slot_name_twice_is_rewritten_each_time():
    doc = b"<div data-edge-slot=hero>a</div>|<span data-edge-slot='hero'>b</span>"
    out, outcomes = rewrite(doc)
    assert out == b"<div data-edge-slot=hero><b>NEW</b></div>|<span data-edge-slot='hero'><b>NEW</b></span>"
    assert outcomes == {"hero": "applied"}


def test_inner_slots_vanish_with_an_edited_outer_slot():
    doc = b"<div data-edge-slot=hero><p data-edge-slot=banner>b</p></div>"
    edits = {"hero": ReplaceInner(NEW), "banner": ReplaceInner("B")}
    out, outcomes = rewrite(doc, edits)
    assert out == b"<div data-edge-slot=hero><b>NEW</b></div>"
    assert outcomes == {"hero": "applied", "banner": "absent"}


def test_inner_slot_of_an_unedited_outer_slot_is_rewritten():
    doc = b"<div data-edge-slot=outer><div data-edge-slot=hero>x</div></div>"
    out, outcomes = rewrite(doc)
    assert out == b"<div data-edge-slot=outer><div data-edge-slot=hero><b>NEW</b></div></div>"


def test_inner_slots_of_a_sorted_slot_are_rewritten_before_sorting():
    doc = (
        b"<ul data-edge-slot=grid><li data-price=2><i data-edge-slot=hero>x</i></li>"
        b"<li data-price=1>a</li></ul>"
    )
    edits = {"grid": SortChildren((SortKey("attr", attr="data-price"),)), "hero": ReplaceInner(NEW)}
    out, outcomes = rewrite(doc, edits)
    assert out == (
        b"<ul data-edge-slot=grid><li data-price=1>a</li>"
        b"<li data-price=2><i data-edge-slot=hero><b>NEW</b></i></li></ul>"
    )
    assert outcomes == {"grid": "applied", "hero": "applied"}


def test_page_without_matching_edit_is_returned_unchanged_as_the_same_object():
    doc = b"<html><body><div class=x>no slots here</div></body></html>"
    out, outcomes = rewrite(doc)
    assert out is doc
    assert outcomes == {"hero": "absent"}


def test_slot_without_an_edit_is_left_alone():
    doc = b"<div data-edge-slot=other>x</div>"
    assert rewrite(doc) == (doc, {"hero": "absent"})


def test_no_edits_means_identical_output():
    doc = b"<div data-edge-slot=hero>x</div>"
    rw = SlotRewriter({})
    assert rw.feed(doc) + rw.finish() == doc
    assert rw.outcomes == {}


# ---------------------------------------------------------------------------
# Budget, charset, failure: the origin's bytes.
# ---------------------------------------------------------------------------
def test_passed_deadline_leaves_slots_untouched():
    doc = b"<div data-edge-slot=hero>x</div>"
    out, outcomes = rewrite(doc, deadline=time.perf_counter() - 1)
    assert out == doc
    assert outcomes == {"hero": "deadline"}


def test_future_deadline_lets_slots_be_rewritten():
    doc = b"<div data-edge-slot=hero>x</div>"
    assert rewrite(doc, deadline=time.perf_counter() + 60)[1] == {"hero": "applied"}


@pytest.mark.parametrize("charset", [None, "utf-16", "no-such-codec"])
def test_page_charset_that_cannot_be_rewritten_leaves_slots_untouched(charset):
    doc = b"<div data-edge-slot=hero>x</div>"
    assert rewrite(doc, charset=charset) == (doc, {"hero": "charset"})


def test_fragment_is_written_in_the_page_charset_with_references_for_the_rest():
    doc = b"<div data-edge-slot=hero>x</div>"
    out, _ = rewrite(doc, {"hero": ReplaceInner("caf\u00e9 \u20ac \u65e5")}, charset="iso-8859-15")
    assert out == b"<div data-edge-slot=hero>caf\xe9 \xa4 &#26085;</div>"


def test_exception_while_applying_an_edit_keeps_that_slot_and_rewrites_the_next(monkeypatch):
    calls = []

    def boom(html, charset):
        calls.append(html)
        if html == "bad":
            raise ValueError("boom")
        return html.encode()

    monkeypatch.setattr(stream_mod, "encode_fragment", boom)
    doc = b"<div data-edge-slot=hero>x</div><div data-edge-slot=banner>y</div>"
    out, outcomes = rewrite(doc, {"hero": ReplaceInner("bad"), "banner": ReplaceInner("B")})
    assert out == b"<div data-edge-slot=hero>x</div><div data-edge-slot=banner>B</div>"
    assert outcomes == {"hero": "failed", "banner": "applied"}


def test_unexpected_scanner_error_passes_the_rest_through_without_losing_bytes(monkeypatch):
    doc = b"<p>a</p><div data-edge-slot=hero>x</div><p>b</p>"
    rw = SlotRewriter(HERO)
    head = rw.feed(doc[:20])

    class Broken:
        """An end finder with a bug (either implementation's, or a crash)."""

        def __init__(self, name, start):
            self.name = name

        def run(self, *a):
            raise RuntimeError("scanner bug")

        def shift(self, n):
            pass

    monkeypatch.setattr(native, "EndFinder", Broken)
    rest = rw.feed(doc[20:]) + rw.feed(b"<p>c</p>") + rw.finish()
    assert head + rest == doc + b"<p>c</p>"
    assert rw.outcomes["hero"] == "failed"


def test_feed_after_finish_is_an_error_naming_the_order():
    rw = SlotRewriter(HERO)
    rw.finish()
    with pytest.raises(RuntimeError, match=r"Cannot call feed\(\) after finish\(\)"):
        rw.feed(b"x")


# ---------------------------------------------------------------------------
# Streaming: early bytes, holding only the slot, chunking never matters.
# ---------------------------------------------------------------------------
def test_bytes_without_a_marker_are_returned_as_soon_as_fed():
    rw = SlotRewriter(HERO)
    assert rw.feed(b"<html><head>") == b"<html><head>"
    assert rw.feed(b"<title>t</title></head><body><p>") == b"<title>t</title></head><body><p>"


def test_only_the_slot_body_is_held_until_its_end_tag_arrives():
    rw = SlotRewriter(HERO)
    assert rw.feed(b"<p>a</p><div data-edge-slot=hero>old ") == b"<p>a</p><div data-edge-slot=hero>"
    assert rw.feed(b"content <i>still</i> ") == b""
    assert rw.feed(b"</div><p>after</p>") == b"<b>NEW</b></div><p>after</p>"
    assert rw.finish() == b""
    assert rw.outcomes == {"hero": "applied"}


def test_marker_split_across_chunks_is_found():
    rw = SlotRewriter(HERO)
    out = rw.feed(b"<div data-edge-sl") + rw.feed(b"ot=hero>x</div>") + rw.finish()
    assert out == b"<div data-edge-slot=hero><b>NEW</b></div>"


CHUNKING_DOCS = [
    b"<p>a</p><div data-edge-slot=hero>old<div>n</div><!-- </div> --></div><p>b</p>",
    b"<!-- data-edge-slot=hero --><script>'<div data-edge-slot=hero>'</script><div data-edge-slot='hero' x=\"a>b\">o</div>",
    b"<div data-edge-slot=hero>never closed <span data-edge-slot=banner>x</span>",
    b"<img alt='<div data-edge-slot=hero>'><section data-edge-slot=banner><div data-edge-slot=hero>i</div></section>",
    b"<textarea data-edge-slot=hero>x</textarea><DIV data-edge-slot=hero>y</DIV >",
    b"<ul data-edge-slot=grid>\n<li data-price=3>c</li>\n<li data-price=1>a</li>\n</ul>",
    # regression: a marker value cut by a chunk boundary was read as complete
    b"<div data-edge-slot=other>x</div><div data-edge-slot = hero>y</div><i data-edge-slot>z</i><img data-edge-slot=hero src=v>",
]
CHUNKING_EDITS = {
    "hero": ReplaceInner(NEW),
    "banner": ReplaceInner("B"),
    "grid": SortChildren((SortKey("attr", attr="data-price"),)),
}


@pytest.mark.parametrize("doc", CHUNKING_DOCS)
def test_output_is_the_same_when_split_at_every_byte_offset(doc):
    whole = rewrite(doc, CHUNKING_EDITS)
    for i in range(len(doc) + 1):
        for j in (i, min(i + 7, len(doc))):
            rw = SlotRewriter(CHUNKING_EDITS)
            out = rw.feed(doc[:i]) + rw.feed(doc[i:j]) + rw.feed(doc[j:]) + rw.finish()
            assert (out, rw.outcomes) == whole, (i, j)


@pytest.mark.parametrize("doc", CHUNKING_DOCS)
def test_output_is_the_same_when_fed_one_byte_at_a_time(doc):
    assert rewrite_chunked(doc, [1], CHUNKING_EDITS) == rewrite(doc, CHUNKING_EDITS)


def test_slot_after_chunks_without_a_marker_is_found_wherever_they_split():
    # Markerless chunks are searched once as they arrive (not again at the
    # next scan): a marker right after them, straddling or not, is still found.
    doc = b"<p>" + b"a<!-- c -->b " * 30 + b"</p><div data-edge-slot=hero>old</div><p>z</p>"
    whole = rewrite(doc, CHUNKING_EDITS)
    assert whole[0].count(NEW.encode()) == 1
    m = doc.index(b"data-edge-slot")
    for cut in range(m - 20, m + 20):
        for size in (1, 5, 13, 64):
            rw = SlotRewriter(CHUNKING_EDITS)
            pieces = [doc[i : min(i + size, cut)] for i in range(0, cut, size)] + [doc[cut:]]
            out = b"".join(rw.feed(p) for p in pieces) + rw.finish()
            assert (out, rw.outcomes) == whole, (cut, size)


def test_long_page_streams_in_bounded_memory_and_finds_a_late_slot():
    filler = b"<div class=row><span>item</span><!-- c --></div>\n" * 40000  # ~2 MB
    doc = filler + b"<div data-edge-slot=hero>x</div>" + filler
    out, outcomes = rewrite_chunked(doc, [16384], HERO)
    assert out == filler + b"<div data-edge-slot=hero><b>NEW</b></div>" + filler
    assert outcomes == {"hero": "applied"}


def test_over_cap_slot_is_released_while_streaming_without_waiting_for_its_end():
    rw = SlotRewriter(HERO, max_slot_bytes=100)
    first = rw.feed(b"<div data-edge-slot=hero>" + b"x" * 300)
    assert first == b"<div data-edge-slot=hero>" + b"x" * 300
    assert rw.feed(b"</div>") + rw.finish() == b"</div>"
    assert rw.outcomes == {"hero": "over-cap"}


def test_slot_whose_children_cannot_be_sorted_is_left_alone():
    doc = b"<ul data-edge-slot=grid><li data-price=2>b<li data-price=1>a</ul>"
    edits = {"grid": SortChildren((SortKey("attr", attr="data-price"),))}
    assert rewrite(doc, edits) == (doc, {"grid": "unsortable"})


# ---------------------------------------------------------------------------
# Observe: the control arm's slot is reported, never changed
# ---------------------------------------------------------------------------
def test_observed_slot_is_reported_seen_and_left_byte_identical():
    page = b'<main><section data-edge-slot="hero" class=h>Default <b>hero</b></section></main>'
    out, outcomes = rewrite_document(page, {"hero": Observe()})
    assert out == page
    assert outcomes == {"hero": "seen"}


def test_observed_slot_missing_from_the_page_is_absent():
    page = b"<main><p>No slots here, only data-edge-slot talk.</p></main>"
    out, outcomes = rewrite_document(page, {"hero": Observe()})
    assert out == page
    assert outcomes == {"hero": "absent"}


def test_slot_nested_in_an_observed_slot_is_still_rewritten():
    page = b'<div data-edge-slot="outer"><p data-edge-slot="inner">old</p></div>'
    out, outcomes = rewrite_document(page, {"outer": Observe(), "inner": ReplaceInner("new")})
    assert out == b'<div data-edge-slot="outer"><p data-edge-slot="inner">new</p></div>'
    assert outcomes == {"outer": "seen", "inner": "applied"}


@pytest.mark.parametrize("chunk", [1 << 20, 70_000, 16_384, 4_093])
def test_large_page_with_slots_past_the_trim_size_streams_without_failing(chunk):
    # Output pieces are views of the buffer: none may still be alive when the
    # buffer is trimmed (stretches of 100 KB between and inside slots).
    filler = b"<p class=f>" + b"x" * 100 + b"</p>\n"
    fill = filler * (100_000 // len(filler))
    doc = (
        fill
        + b"<div data-edge-slot=hero>" + fill + b"</div>"
        + fill
        + b"<ul data-edge-slot=grid><li data-p=2>b</li><li data-p=1>a</li></ul>"
        + fill
        + b"<div data-edge-slot=banner>old</div>"
        + fill
    )
    edits = {
        "hero": ReplaceInner("H"),
        "banner": ReplaceInner("B"),
        "grid": SortChildren((SortKey("attr", attr="data-p"),)),
    }
    expected = (
        fill + b"<div data-edge-slot=hero>H</div>" + fill
        + b"<ul data-edge-slot=grid><li data-p=1>a</li><li data-p=2>b</li></ul>"
        + fill + b"<div data-edge-slot=banner>B</div>" + fill
    )
    rw = SlotRewriter(edits)
    out = b"".join(rw.feed(doc[i : i + chunk]) for i in range(0, len(doc), chunk)) + rw.finish()
    assert out == expected
    assert rw.outcomes == {"hero": "applied", "banner": "applied", "grid": "applied"}
    assert rewrite_document(doc, edits) == (expected, rw.outcomes)


def test_failure_after_output_was_queued_passes_the_rest_through(monkeypatch):
    # An error after a slot was rewritten (its output queued as buffer views):
    # everything is still sent once, in order.
    doc = b"<p>a</p><div data-edge-slot=hero>x</div><p>b</p><div data-edge-slot=banner>y</div><p>c</p>"
    real = stream_mod.SlotRewriter._scan
    calls = []

    def flaky(self, buf, final):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("scanner bug")
        return real(self, buf, final)

    monkeypatch.setattr(stream_mod.SlotRewriter, "_scan", flaky)
    rw = SlotRewriter({"hero": ReplaceInner("H"), "banner": ReplaceInner("B")})
    out = rw.feed(doc) + rw.finish()
    assert out == doc.replace(b">x<", b">H<")
    assert rw.outcomes == {"hero": "applied", "banner": "absent"}
