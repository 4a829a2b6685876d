"""Property tests: on random HTML-ish documents with the marker in every
context, the rewriter never raises, changes only the bodies of real edited
slots, and gives the same output however the input is chunked or encoded."""

from __future__ import annotations

import gzip

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy.model import ReplaceInner
from edgeproxy.rewrite import SlotRewriter, decoder_for, encoder_for, rewrite_document

from rewrite_impls import each_scanner  # noqa: F401  (the fixture, by name)

pytestmark = pytest.mark.usefixtures("each_scanner")

EDITS = {"a": ReplaceInner("<b>A</b>"), "b": ReplaceInner("B\u00e9")}
NEW = {name: edit.html.encode() for name, edit in EDITS.items()}

# Complete constructs that contain the marker but are not slots, or are
# ordinary markup; none of them leaves a context or a tag open.
NOISE = [
    b'<!-- <div data-edge-slot="a">x</div> -->',
    b"<!--<div data-edge-slot=b>--!>",
    b"<!-->",
    b"<script>var s = \"<div data-edge-slot='a'>x</div>\"; if (a<b) {}</script>",
    b"<SCRIPT type=text/template><div data-edge-slot=b>x</div></script >",
    b'<style>.x{content:"<div data-edge-slot=a>"}</style>',
    b'<textarea><div data-edge-slot="a"></textarea>',
    b"<title>data-edge-slot=a</title>",
    b"<template><div data-edge-slot=a><template></template></div></template>",
    b"<noscript><div data-edge-slot=b>n</div></noscript>",
    b'<img alt="<div data-edge-slot=a>x</div>" src=y>',
    b"<p title='data-edge-slot=\"a\"' class=data-edge-slot=b>data-edge-slot=\"a\"</p>",
    b'<a href="/x?a<b" title=">">link</a>',
    b"<div class=card><span>x</span></div>",
    b"<br><hr/><img src=x>",
    b"<!DOCTYPE html>",
    b"<?xml data-edge-slot=a?>",
    b"</span data-edge-slot=a>",
    b"<img data-edge-slot=a src=void>",
    b'<span data-edge-slot="b"/>x</span>',  # self-closing: left alone (it opens a span)
    b"a < b",
    b"caf\xc3\xa9 \xe2\x82\xac",
]
text = st.text(alphabet="ab c\n>=\"'/-!\u00e9", max_size=12).map(lambda s: s.encode())
noise = st.one_of(st.sampled_from(NOISE), text)


def slot_tag(name: str, quote: str, extra: str, tag: str = "div") -> bytes:
    return f"<{tag} {extra}data-edge-slot={quote}{name}{quote}>".encode()


@st.composite
def slot(draw, depth: int):
    name = draw(st.sampled_from(["a", "b", "c"]))  # "c" has no edit
    quote = draw(st.sampled_from(['"', "'", ""]))
    extra = draw(st.sampled_from(["", 'class="x" ', "id=y title='>' "]))
    tag = draw(st.sampled_from(["div", "DIV"]))
    body = draw(segments(depth + 1))
    end = draw(st.sampled_from([b"</div>", b"</DIV >", b"</div\n>"]))
    return ("slot", name, slot_tag(name, quote, extra, tag), body, end)


@st.composite
def nested_div(draw, depth: int):
    return ("slot", None, b"<div>", draw(segments(depth + 1)), b"</div>")


def segments(depth: int = 0):
    if depth >= 3:
        return st.lists(noise.map(lambda b: ("noise", b)), max_size=3)
    return st.lists(
        st.one_of(noise.map(lambda b: ("noise", b)), slot(depth), nested_div(depth)),
        max_size=5 if depth == 0 else 3,
    )


def original(segs) -> bytes:
    out = []
    for s in segs:
        if s[0] == "noise":
            out.append(s[1])
        else:
            out += [s[2], original(s[3]), s[4]]
    return b"".join(out)


def expected(segs, cap: int) -> bytes:
    """What the page must look like: only real edited slot bodies within the
    cap are replaced; an unedited (or over-cap) slot is ordinary markup."""
    out = []
    for s in segs:
        if s[0] == "noise":
            out.append(s[1])
            continue
        _, name, start, body, end = s
        if name in EDITS and len(original(body)) <= cap:
            out += [start, NEW[name], end]
        else:
            out += [start, expected(body, cap), end]
    return b"".join(out)


@st.composite
def documents(draw):
    segs = draw(segments())
    # Optionally an unterminated slot: it stays as is, and what follows it
    # (its would-be body) is still personalised.
    tail = []
    if draw(st.booleans()):
        tail = [("open", draw(segments()))]
    return segs, tail


def build(doc_spec, cap: int) -> tuple[bytes, bytes]:
    segs, tail = doc_spec
    src, exp = original(segs), expected(segs, cap)
    for _, rest in tail:
        start = b"<section data-edge-slot=a>"
        src += start + original(rest)
        exp += start + expected(rest, cap)
    return src, exp


def feed_in(rw: SlotRewriter, doc: bytes, cuts: list[int]) -> bytes:
    points = sorted({min(c, len(doc)) for c in cuts})
    out, prev = [], 0
    for p in points + [len(doc)]:
        out.append(rw.feed(doc[prev:p]))
        prev = p
    out.append(rw.finish())
    return b"".join(out)


@settings(max_examples=150, deadline=None)
@given(documents(), st.lists(st.integers(0, 2000), max_size=8), st.sampled_from([1 << 20, 40, 10]))
def test_only_real_edited_slot_bodies_change_however_chunked(doc_spec, cuts, cap):
    src, exp = build(doc_spec, cap)
    whole, outcomes = rewrite_document(src, EDITS, max_slot_bytes=cap)
    assert whole == exp
    rw = SlotRewriter(EDITS, max_slot_bytes=cap)
    assert feed_in(rw, src, cuts) == exp
    assert rw.outcomes == outcomes


@settings(max_examples=40, deadline=None)
@given(documents(), st.sampled_from(["gzip", "br"]), st.lists(st.integers(1, 300), min_size=1, max_size=6))
def test_decode_rewrite_encode_round_trip_matches_the_plain_rewrite(doc_spec, coding, sizes):
    src, exp = build(doc_spec, 1 << 20)
    body = gzip.compress(src) if coding == "gzip" else brotli.compress(src)
    dec, enc, rw = decoder_for(coding), encoder_for(coding), SlotRewriter(EDITS)
    wire, pos, i = [], 0, 0
    while pos < len(body):
        n = sizes[i % len(sizes)]
        wire.append(enc.compress(rw.feed(dec.decompress(body[pos : pos + n]))))
        pos, i = pos + n, i + 1
    wire.append(enc.compress(rw.feed(dec.flush()) + rw.finish()))
    wire.append(enc.flush())
    d = decoder_for(coding)
    assert d.decompress(b"".join(wire)) + d.flush() == exp


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
def test_arbitrary_bytes_never_raise_and_chunking_never_matters(data, cuts):
    doc = data.replace(b"Z", b"<div data-edge-slot=a>").replace(b"Y", b"</div>")
    whole, _ = rewrite_document(doc, EDITS)
    assert feed_in(SlotRewriter(EDITS), doc, cuts) == whole
    assert doc.find(b"data-edge-slot") >= 0 or whole == doc
