"""edgeproxy.rewrite.scanner: the tuned patterns give exactly what the plain
ones give.

``OPENER`` and ``body_scanner`` are literal tries without capture groups
(cheaper per ``<`` for sre); the hit's kind is read from its bytes.  The
references below are the plain alternations with groups they replaced; both
are run on random markup-ish bytes, whole and fed in pieces, and must agree
hit for hit and call for call.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy.rewrite import native
from edgeproxy.rewrite import scanner as sc

from rewrite_impls import each_scanner  # noqa: F401  (the fixture, by name)

pytestmark = pytest.mark.usefixtures("each_scanner")

_D = rb"(?=[\t\n\f\r />])"
REF_OPENER = re.compile(rb"<(?=[!sStTnNxXiIpP])(?:(!--)|(" + sc._RAW_ALT + rb")" + _D + rb")")


def ref_body_scanner(name: str) -> re.Pattern[bytes]:
    n = sc._ci(name)
    return re.compile(rb"<(?:(!--)|(" + sc._RAW_ALT + rb")" + _D + rb"|(" + n + rb")" + _D + rb"|/(" + n + rb")" + _D + rb")")


class ReferenceEndFinder:
    """``EndFinder`` as it was, on the plain pattern with groups."""

    def __init__(self, name: str, start: int) -> None:
        self.rx = ref_body_scanner(name)
        self.start = self.pos = self.tok = start
        self.depth = 1

    def run(self, buf, final: bool, cap: int) -> tuple:
        limit = self.start + cap
        while True:
            m = self.rx.search(buf, self.pos)
            if m is None:
                if final:
                    return ("unterminated",)
                self.pos = max(self.pos, len(buf) - sc.LOOKBACK)
                return ("over",) if self.pos > limit else ("need",)
            q = m.start()
            if q > limit:
                return ("over",)
            t = sc.MARKUP.match(buf, self.tok, q).end()
            if t != q:
                self.tok = t
                self.pos = q + 1
                continue
            if m.group(3) is not None or m.group(4) is not None:
                e = sc.tag_end(buf, q, sc.START_TAG if m.group(3) is not None else sc.END_TAG)
                if e is None:
                    if final:
                        return ("unterminated",)
                    self.pos = q
                    return ("need",)
                self.depth += 1 if m.group(3) is not None else -1
                if self.depth == 0:
                    return ("end", q, e)
                self.pos = self.tok = e
                continue
            kind = "!--" if m.group(1) is not None else m.group(2).decode().lower()
            e = sc.skip_context(buf, q, kind, final)
            if e is None:
                self.pos = q
                return ("need",)
            if e >= len(buf) and final:
                return ("unterminated",)
            self.pos = self.tok = e


# Pieces that move the end finder of a <li>: same-name tags in every case and
# with every delimiter, lookalikes, comments, raw text, tags hiding "</li>" in
# attribute values, bogus comments, lone "<" (also as the last byte fed).
PIECES = [
    b"<li>", b"<LI class=x>", b"<li/>", b"</li>", b"</LI >", b"</li\n>", b"</li", b"<li",
    b"<lix>", b"</lix>", b"<l>", b"</l>", b"<a href=/x>", b"</a>", b"<b>x</b>",
    b"<!-- </li> -->", b"<!-->", b"<!--->", b"<!--", b"-->", b"--!>",
    b"<script>x = '</li>';</script>", b"<ScRiPt>", b"</script>", b"<style>", b"</style >",
    b"<textarea></li></textarea>", b"<title>", b"</title>", b"<template><li></template>",
    b'<img alt="</li>">', b"<img alt='<li>' src=x>", b"<a title=x</li>", b'<a b="', b"<a b='x>'>",
    b"<!x>", b"<?x>", b"</ >", b"</>", b"<", b"<<", b"< ", b"a<b", b">", b'"', b"'", b"=",
    b"text", b"\n", b"<br>", b"<div =x>", b'<div ="y">', b"<p a=b/>", b"<plaintext>",
]
docs = st.lists(st.sampled_from(PIECES), max_size=14).map(b"".join)


def drive(finder, doc: bytes, cuts: list[int], cap: int) -> list[tuple]:
    """Feed ``doc`` in pieces (as the rewriter does: run after each growth,
    stop at the first answer other than "need"), then once with final."""
    results = []
    for p in sorted({min(c, len(doc)) for c in cuts}):
        r = finder.run(doc[:p], False, cap)
        results.append(r)
        if r[0] != "need":
            return results
    results.append(finder.run(doc, True, cap))
    return results


@settings(max_examples=600, deadline=None)
@given(docs, st.lists(st.integers(0, 200), max_size=6), st.sampled_from([1 << 20, 30, 5, 0]))
def test_end_finder_agrees_with_the_plain_loop(doc, cuts, cap):
    a = drive(native.EndFinder("li", 0), doc, cuts, cap)
    b = drive(ReferenceEndFinder("li", 0), doc, cuts, cap)
    assert a == b


@settings(max_examples=300, deadline=None)
@given(docs, st.integers(0, 40))
def test_end_finder_agrees_byte_by_byte(doc, start):
    cuts = list(range(len(doc) + 1))
    start = min(start, len(doc))
    assert drive(native.EndFinder("li", start), doc, cuts, 1 << 20) == drive(ReferenceEndFinder("li", start), doc, cuts, 1 << 20)


@pytest.mark.parametrize(
    "doc, expected",
    [
        # A "<" as the last byte fed may still become "</li>".
        (b"<b>x</b><", None),
        (b"<b>x</b></li>", (8, 13)),
        # "</li>" inside an attribute value, a comment, raw text: not the end.
        (b'<img alt="</li>"></li>', (17, 22)),
        (b"<a title=x</li>y</a></li>", (20, 25)),
        (b"<!-- </li> --></li>", (14, 19)),
        (b"<sCrIpT>'</li>'</script></LI >", (24, 30)),
        # nested same-name elements, any case
        (b"<LI><li/></li></Li></li>", (19, 24)),
    ],
)
def test_element_end(doc, expected):
    if expected is None:
        assert sc.element_end(doc, 0, "li", False) is None
        assert sc.element_end(doc + b"/li>", 0, "li", False) == (8, 13)
    else:
        assert sc.element_end(doc, 0, "li", True) == expected


# Openers and tag names in every case, lookalikes (a longer name, a missing
# delimiter), names sharing prefixes with raw-text names.
OPENER_PIECES = [
    b"<!--", b"<!-", b"<!", b"<script>", b"<SCRIPT ", b"<ScRiPt/", b"<scripts>", b"<script", b"<scrip>",
    b"<style\n", b"<sTyLe>", b"<span>", b"<s>", b"<S>", b"<textarea>", b"<TEXTAREA\t", b"<template>",
    b"<Template>", b"<title>", b"<TiTlE>", b"<tr>", b"<t>", b"<xmp>", b"<XMP>", b"<x>", b"<noscript>",
    b"<NOEMBED>", b"<noframes>", b"<nav>", b"<iframe>", b"<IFRAME>", b"<img>", b"<i>", b"<plaintext>",
    b"<PLAINTEXT>", b"<p>", b"<pre>", b"</script>", b"</li>", b"</LI>", b"<li>", b"<Li\f", b"<lix>",
    b"</lix>", b"<a-b>", b"</a-b\r>", b"<\xe9>", b"</\xe9>", b"<", b"x", b" ", b"<<",
]
opener_docs = st.lists(st.sampled_from(OPENER_PIECES), max_size=20).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(opener_docs)
def test_opener_finds_what_the_plain_pattern_finds(doc):
    got = [(m.start(), sc.opener_kind(m)) for m in sc.OPENER.finditer(doc)]
    want = [(m.start(), "!--" if m.group(1) else m.group(2).decode().lower()) for m in REF_OPENER.finditer(doc)]
    assert got == want


def _kind(name: str, text: bytes) -> str:
    """How ``EndFinder`` reads a ``body_scanner`` hit."""
    if text[1] == 0x21:
        return "!--"
    if text[1] == 0x2F:
        return "end"
    word = text[1:].decode("latin-1").lower()
    return word if word in sc._RAW_SET else "start"


@settings(max_examples=500, deadline=None)
@given(opener_docs, st.sampled_from(["li", "a-b", "s", "script", "template", "t", "p", "\xe9", "noscript"]))
def test_body_scanner_finds_what_the_plain_pattern_finds(doc, name):
    got = [(m.start(), _kind(name, m.group())) for m in sc.body_scanner(name).finditer(doc)]
    want = []
    for m in ref_body_scanner(name).finditer(doc):
        if m.group(1):
            kind = "!--"
        elif m.group(2):
            kind = m.group(2).decode().lower()
        else:
            kind = "start" if m.group(3) else "end"
        want.append((m.start(), kind))
    assert got == want


# Elements as a sort container's children hold them: nested same-name
# elements (deeper than ``ELEMENT_NESTING`` too), end tags in any case,
# lookalikes in attribute values, comments and raw text, voids.
ELEMENT_PIECES = [
    b"<div>", b"<DIV class='x>'>", b"<div/>", b"</div>", b"</DiV >", b"<li>", b"</li>", b"<LI\t>", b"</li\n>",
    b"<a href=x>", b"</a>", b"<img alt=\"</div>\">", b"<br>", b"<input>", b"</ >", b"<!-- </div> -->", b"<!-->",
    b"<script>'</div>'</script>", b"<style></li></style>", b"<template><div></template>", b"<textarea></div>",
    b"<\xe9>", b"</\xe9>", b"<div\xe9>", b"</div\xe9>", b"<!x>", b"<?x>", b"<", b"x", b"\"", b"'", b"=",
    b"<title>", b"</title>", b"<plaintext>", b"<svg><path d='</div>'/></svg>",
]
element_docs = st.lists(st.sampled_from(ELEMENT_PIECES), max_size=24).map(b"".join)


@settings(max_examples=1500, deadline=None)
@given(element_docs, st.booleans())
def test_whole_element_ends_where_element_end_does(doc, final):
    for m in sc.START_TAG.finditer(doc):
        whole = sc.whole_element().match(doc, m.start())
        if whole is None:
            continue
        name = m.group(1).decode("latin-1").lower()
        assert name.isascii() and name not in sc.RAW_TEXT and name not in sc.VOID_ELEMENTS
        assert whole.group("own").decode().lower() == name
        assert whole.span("attrs") == (m.end(1), m.end())
        assert sc.element_end(doc, m.end() + 1, name, final)[1] == whole.end()


@settings(max_examples=300, deadline=None)
@given(opener_docs, st.sampled_from(["li", "script", "template", "s"]), st.lists(st.integers(0, 200), max_size=4))
def test_end_finder_agrees_with_the_plain_loop_for_any_name(doc, name, cuts):
    assert drive(native.EndFinder(name, 0), doc, cuts, 1 << 20) == drive(ReferenceEndFinder(name, 0), doc, cuts, 1 << 20)


# The attribute grammar as first written (one iteration per space run or
# attribute, plain optional value).  ``sc._ATTRS`` is reshaped for speed and
# must consume exactly the same bytes from any point, whatever the input's end.
PLAIN_ATTRS = re.compile(
    rb"(?:[\t\n\f\r /]++"
    rb"|[^\t\n\f\r />=][^\t\n\f\r />=]*+"
    rb"(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(?:\"[^\"]*+\"|'[^']*+'|[^\t\n\f\r >\"'][^\t\n\f\r >]*+|(?=>)))?"
    rb"|=(?![\t\n\f\r ]*+[\"'])[^\t\n\f\r />=]*+"
    rb")*+"
)
ATTRS = re.compile(sc._ATTRS)
ATTR_PIECES = [
    b" ", b"  ", b"\t", b"\n", b"/", b"//", b"a", b"data-x", b"=", b"==", b'"', b"'", b'"v"', b"'v'",
    b'="x"', b"='y'", b"=z", b" = ", b'= "q w"', b"=>", b"= >", b">", b"<", b"a=b=c", b'x"y', b"&amp;",
    b"\xe9", b"\f", b"\r",
]
attr_docs = st.lists(st.sampled_from(ATTR_PIECES), max_size=16).map(b"".join)


@settings(max_examples=1500, deadline=None)
@given(attr_docs, st.data())
def test_attribute_grammar_consumes_what_the_plain_form_consumes(doc, data):
    pos = data.draw(st.integers(0, len(doc)))
    endpos = data.draw(st.integers(pos, len(doc)))
    assert ATTRS.match(doc, pos, endpos).end() == PLAIN_ATTRS.match(doc, pos, endpos).end()


@pytest.mark.parametrize(
    "tag, end",
    [
        (b'<a b="x>y" c>', 13),
        (b"<a b = 'x' >", 12),
        (b'<a ="x">', None),  # "=" then a quote: not a name, the tag stops there
        (b"<a =x>", 6),
        (b'<a b="x>', None),  # unterminated quote
        (b"<a b=>", 6),
        (b"<a b= >", 7),
        (b'<a x"y=1 / >', 12),
        (b"<a b=c=d e>", 11),
    ],
)
def test_start_tag_ends(tag, end):
    assert sc.tag_end(tag, 0) == end


def ref_skip_context(buf, q: int, kind: str, final: bool):
    """``skip_context`` step by step, as first written."""
    n = len(buf)
    if kind == "!--":
        if buf[q + 4 : q + 5] == b">":
            return q + 5
        if buf[q + 4 : q + 6] == b"->":
            return q + 6
        m = re.compile(rb"--!?>").search(buf, q + 4)
        if m is not None:
            return m.end()
        return n if final else None
    if kind == "plaintext":
        return n if final else None
    body = sc.tag_end(buf, q)
    if body is None:
        return n if final else None
    if kind == "template":
        found = sc.element_end(buf, body, "template", final)
        if found is None:
            return None
        return n if found[0] is None else found[1]
    m = sc.closer(kind).search(buf, body)
    if m is None:
        return n if final else None
    e = sc.tag_end(buf, m.start(), sc.END_TAG)
    if e is None:
        return n if final else None
    return e


CONTEXT_PIECES = [
    b"-", b"--", b"-->", b"--!>", b"->", b">", b"!", b"<", b"</", b"x", b" ", b'"', b"'", b"=",
    b"</script>", b"</SCRIPT >", b"</script", b"</scripts>", b"</script a='>'>", b"</script x=\"",
    b"</style>", b"</StYlE\n>", b"</textarea>", b"</title>", b"</template>", b"<template>", b"</noscript>",
    b"</xmp/>", b"</iframe>", b"</noembed>", b"</noframes>", b"<!--", b"<script>",
]
OPENINGS = [
    ("!--", b"<!--"), ("script", b"<script>"), ("script", b"<SCRIPT type='a>b'>"), ("script", b"<script"),
    ("script", b'<script src="x'), ("style", b"<style media=x>"), ("textarea", b"<TextArea>"),
    ("title", b"<title/>"), ("template", b"<template>"), ("noscript", b"<noscript>"), ("xmp", b"<xmp>"),
    ("iframe", b"<iframe src=x>"), ("noembed", b"<noembed>"), ("noframes", b"<noframes>"),
    ("plaintext", b"<plaintext>"),
]


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(OPENINGS),
    st.lists(st.sampled_from(CONTEXT_PIECES), max_size=10).map(b"".join),
    st.binary(max_size=3),
    st.booleans(),
)
def test_skip_context_agrees_with_the_step_by_step_form(opening, rest, before, final):
    kind, opener = opening
    buf = before + opener + rest
    q = len(before)
    assert sc.skip_context(buf, q, kind, final) == ref_skip_context(buf, q, kind, final)
    assert sc.skip_context(bytearray(buf), q, kind, final) == ref_skip_context(buf, q, kind, final)


def ref_inside_tag(buf, lo: int, q: int) -> bool:
    """``inside_tag`` as first written."""
    l = buf.rfind(b"<", lo, q)
    if l < 0:
        return False
    nxt = buf[l + 1 : l + 2]
    if nxt.isalpha():
        m = sc.START_TAG.match(buf, l)
    elif nxt == b"/" and buf[l + 2 : l + 3].isalpha():
        m = sc.END_TAG.match(buf, l)
    elif nxt in (b"!", b"?", b"/"):
        return buf.find(b">", l, q) < 0
    else:
        return False
    e = m.end()
    if e >= len(buf) or buf[e] != 0x3E:
        return True
    return e >= q


INSIDE_PIECES = [
    b"<a", b"<a b=c>", b"</div>", b"</div", b"<", b"<<", b">", b" ", b"x", b"=", b'"', b"'", b'"a>b"', b"'<'",
    b"<!x", b"<?x", b"</ ", b"</>", b"</1>", b"<img alt=", b" = ", b"/", b"<1", b"\n", b"<\xe9", b"</\xe9",
]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(INSIDE_PIECES), max_size=12).map(b"".join), st.sampled_from([b"<!--", b"<script>"]), st.binary(max_size=4))
def test_inside_tag_agrees_with_the_plain_form(before, opener, after):
    buf = before + opener + after
    q = len(before)
    for lo in range(0, q + 1):
        assert sc.inside_tag(buf, lo, q) == ref_inside_tag(buf, lo, q)
