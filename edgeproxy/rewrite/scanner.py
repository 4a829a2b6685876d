"""Byte-level HTML scanning primitives for the slot rewriter.

Nothing here tokenises a whole page.  The rewriter looks for a few rare
constructs with ``bytes.find`` and compiled ``re`` patterns (both run in C)
and only looks closely at the bytes around them:

* the marker ``data-edge-slot`` (``MARKER``, found with ``bytes.find``);
* the *context openers* that change how the bytes after them are parsed:
  ``<!--`` and the raw-text / opaque elements of ``RAW_TEXT`` (``<script``,
  ``<style``, ``<textarea``, ``<title``, ``<template``, ...).  A marker inside
  one of them is not a slot;
* inside a slot, the start and end tags of the slot's own tag name, for
  depth counting.

A marker is only a slot when it is an attribute *name* of a real start tag.
That is checked with ``TOKENS``, a possessive regex that tokenises text and
tags (quote-aware, per the WHATWG tokenizer's attribute states) from the last
point known to be between tokens up to the marker: a short stretch, because
every context closer is such a point.

Positions are offsets into the buffer handed in.  Functions that may run out
of input return ``None`` ("need more bytes"); callers pass ``final=True`` once
no more input will come, and then an unterminated construct extends to EOF.

Known approximations (all fail safe: a slot may be missed, bytes are never
changed outside a real slot):

* an opener written literally inside an attribute value is recognised as such
  by a local check (the nearest ``<`` before it starts a tag that spans it);
  an attribute value containing both a quoted ``<`` and an opener can fool it;
* the script-data "double escaped" states (``<!--<script>`` inside a script)
  are not modelled: such a script ends at its first ``</script``;
* the marker attribute name must be written in lower case, as CONTRACT §1
  spells it, so that a page without slots costs exactly one ``bytes.find``;
  tag names, the slot's end tag and every other name are case-insensitive.
"""

from __future__ import annotations

import functools
import html
import re

MARKER = b"data-edge-slot"
MARKER_NAME = MARKER.decode()

# Elements whose content is not parsed as markup (WHATWG "raw text",
# "escapable raw text", and the elements browsers with scripting treat the
# same way), plus <template> whose content is opaque to us.
RAW_TEXT = (
    "script", "style", "textarea", "title", "template", "xmp",
    "noscript", "iframe", "noembed", "noframes", "plaintext",
)
VOID_ELEMENTS = frozenset(
    {
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link",
        "meta", "param", "source", "track", "wbr", "basefont", "bgsound",
        "frame", "keygen",
    }
)
# The longest opener ("<plaintext" + one delimiter): a search that found
# nothing may resume this many bytes before the end of the buffer.
LOOKBACK = 16

_WS = rb"\t\n\f\r "


def _ci(name: str) -> bytes:
    """``script`` -> ``[sS][cC]...``: case-insensitive without (?i) so sre keeps
    its literal-prefix fast path on the leading ``<``."""
    return b"".join(b"[%c%c]" % (c.lower().encode()[0], c.upper().encode()[0]) if c.isalpha() else re.escape(c.encode()) for c in name)


# The attribute states of a start (or end) tag, after the tag name.  Each
# iteration consumes at least one byte; possessive so a failed tail never
# backtracks.  A name cannot start with "=" unless no quote follows (the rare
# ``<a ="x">``), so an unterminated quoted value is never misread as names.
# Shaped for sre: one iteration per attribute (its leading spaces included),
# and ``="..."`` / ``=value`` without spaces tried before the general
# ``  =  value``.  It matches exactly what the plain form
# ``(?:SPACES|NAME(?:\s*=\s*VALUE)?|=...)*+`` matches (see
# tests/test_rewrite_scanner.py), about 17% faster on tag-dense markup.
_VALUE = rb"(?:\"[^\"]*+\"|'[^']*+'|[^\t\n\f\r >\"'][^\t\n\f\r >]*+|(?=>))"
_ATTRS = (
    rb"(?:[\t\n\f\r /]*+(?:"
    rb"[^\t\n\f\r />=]++"
    rb"(?:=\"[^\"]*+\"|=(?:[^\t\n\f\r >\"'][^\t\n\f\r >]*+|'[^']*+'|(?=>))|[\t\n\f\r ]*+=[\t\n\f\r ]*+" + _VALUE + rb")?"
    rb"|=(?![\t\n\f\r ]*+[\"'])[^\t\n\f\r />=]*+"
    rb"))*+[\t\n\f\r /]*+"
)
_RAW_ALT = b"|".join(_ci(n) for n in RAW_TEXT)
_RAW_SET = frozenset(RAW_TEXT)


def _trie(names, depth: int = 2) -> bytes:
    """An alternation matching any of ``names`` in any case, like
    ``|``-joined ``_ci`` names, but shaped as a trie whose first ``depth``
    levels are literal alternatives (``s`` and ``S`` separately): sre's
    branch rejects a literal alternative with one comparison, while a
    character class costs a call.  After a ``<`` in running markup (``<div``,
    ``<a``, ``</``) that makes a failed attempt much cheaper."""

    def pieces(c: str) -> list[bytes]:
        if c.isascii() and c.isalpha():
            return [c.lower().encode(), c.upper().encode()]
        return [_ci(c)]

    def build(rests: list[str], level: int) -> bytes:
        if level >= depth:
            return b"|".join(_ci(r) for r in rests)
        groups: dict[str, list[str]] = {}
        for r in rests:
            groups.setdefault(r[:1], []).append(r[1:])
        alts = []
        for c, tails in groups.items():
            if not c:
                alts.append(b"")
                continue
            sub = b"(?:" + build(tails, level + 1) + b")"
            alts += [p + sub for p in pieces(c)]
        return b"|".join(alts)

    return build(sorted(set(names)), 0)

# A start tag from its "<": group 1 is the tag name.  The match stops before
# the closing ">" (or where the input runs out); see ``tag_end``.
START_TAG = re.compile(rb"<([a-zA-Z][^\t\n\f\r />]*+)" + _ATTRS)
END_TAG = re.compile(rb"</([a-zA-Z][^\t\n\f\r />]*+)" + _ATTRS)
_START_OR_END_TAG = re.compile(rb"</?[a-zA-Z][^\t\n\f\r />]*+" + _ATTRS)
# One attribute inside a complete tag: group 1 name, group 2 raw value.
ATTR = re.compile(
    rb"([^\t\n\f\r />=][^\t\n\f\r />=]*+|=[^\t\n\f\r />=]*+)"
    rb"(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(\"[^\"]*+\"|'[^']*+'|[^\t\n\f\r >\"'][^\t\n\f\r >]*+|(?=>)))?"
)

# Text and complete tags, for verifying that a marker sits in a start tag.
# It deliberately has no raw-text alternative: a tag named like a raw-text
# element stops it (the caller has already skipped every real opener).
TOKENS = re.compile(
    rb"(?:[^<]++"
    rb"|<(?!(?:" + _RAW_ALT + rb")[\t\n\f\r />])[a-zA-Z][^\t\n\f\r />]*+" + _ATTRS + rb">"
    rb"|</[a-zA-Z][^\t\n\f\r />]*+" + _ATTRS + rb">"
    rb"|<!--(?:>|->|(?:[^-]++|-(?!-!?>))*+--!?>)"
    rb"|<!(?!--)[^>]*+>|<\?[^>]*+>|</(?:>|[^a-zA-Z>][^>]*+>)"
    rb"|<(?![a-zA-Z/!?])"
    rb")*+"
)

# The same without the raw-text guard, for stretches known to hold no opener
# (inside a slot body, between two hits of ``body_scanner``).
MARKUP = re.compile(
    rb"(?:[^<]++"
    rb"|<[a-zA-Z][^\t\n\f\r />]*+" + _ATTRS + rb">"
    rb"|</[a-zA-Z][^\t\n\f\r />]*+" + _ATTRS + rb">"
    rb"|<!(?!--)[^>]*+>|<\?[^>]*+>|</(?:>|[^a-zA-Z>][^>]*+>)"
    rb"|<(?![a-zA-Z/!?])"
    rb")*+"
)

# Context openers: "<!--" or "<" and a raw-text element name (see
# ``opener_kind``).  No capture groups and a literal trie (``_trie``): sre
# pays per "<" in the page, and this is about 25% cheaper per "<" than the
# same alternation of character classes with groups.
# The lookahead (the first letters, one class test) still saves ~7% on a page.
OPENER = re.compile(rb"<(?=[!sStTnNxXiIpP])(?:!--|(?:" + _trie(RAW_TEXT) + rb")(?=[\t\n\f\r />]))")
assert {n[0] for n in RAW_TEXT} == set("stnxip"), "update OPENER's first-letter lookahead"


def opener_kind(m: re.Match[bytes]) -> str:
    """``"!--"`` or the lower-case raw-text name of an ``OPENER`` match."""
    text = m.group()
    return "!--" if text[1] == 0x21 else text[1:].decode("latin-1").lower()
# The marker and its value, to skip markers of slots without an edit cheaply.
# The value group is possessive: once an "=" and a value are seen they are
# never dropped to make the match succeed.
MARKER_VALUE = re.compile(
    MARKER + rb"(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(\"[^\"]*+\"|'[^']*+'|[^\t\n\f\r >\"'][^\t\n\f\r >]*+))?+(?=[\t\n\f\r />])"
)
_WS_BYTES = b" \t\n\f\r"


def marker_value(buf: bytes | bytearray, m: int) -> str | None:
    """The value of a ``data-edge-slot`` attribute written at ``m`` if the
    bytes there already settle it, else ``None`` (unknown yet, or not
    readable without the tag's context).  ``""`` for a valueless attribute
    and for a longer attribute name (``data-edge-slot-x``)."""
    v = MARKER_VALUE.match(buf, m)
    after = m + len(MARKER)
    if v is None:
        nxt = buf[after : after + 1]
        return "" if nxt and nxt not in b" \t\n\f\r/>=" else None
    if v.group(1) is not None:
        return attr_value(v.group(1))
    # Valueless so far: settled only if something other than "=" follows.
    rest = bytes(buf[after : after + 64]).lstrip(_WS_BYTES)
    if rest and rest[:1] != b"=":
        return ""
    return None
_COMMENT_END = re.compile(rb"--!?>")


@functools.lru_cache(maxsize=256)
def closer(name: str) -> re.Pattern[bytes]:
    """The end tag opener of raw-text element ``name`` (``</script`` + delimiter)."""
    return re.compile(rb"</" + _ci(name) + rb"(?=[\t\n\f\r />])")


@functools.lru_cache(maxsize=256)
def body_scanner(name: str) -> re.Pattern[bytes]:
    """Openers plus start and end tags named ``name``; no capture groups (see
    ``OPENER``).  A hit is told apart by its bytes: ``<!--``, ``</name``, or
    ``<`` and a name, which is a raw-text opener if it names one of those
    (also when ``name`` does: a ``<script>`` in a script slot is raw text)."""
    return re.compile(
        rb"<(?:!--|(?:" + _trie([*RAW_TEXT, name]) + rb"|/(?:" + _trie([name]) + rb"))(?=[\t\n\f\r />]))"
    )


@functools.cache
def whole_element() -> re.Pattern[bytes]:
    """A whole element from its ``<``: where ``element_end`` would find its
    end tag, in one match, when its content is text, tags, comments,
    raw-text elements and same-name elements nested up to
    ``ELEMENT_NESTING`` deep.  Group ``own`` is its name (ASCII, not a
    raw-text or void element's: the pattern refuses those), group ``attrs``
    its start tag after the name, up to the ``>``.  No match (another name,
    deeper nesting, something incomplete) sends the caller to
    ``element_end``.  One pattern for every name (the own name is matched
    again, in any case, by backreference), compiled on first use."""
    own = rb"(?i:(?P=own))"
    # After the "<" (which sre then reads once): a token of MARKUP that is
    # not a start tag of a raw-text element or of the element's own name
    # nor its own end tag, or a whole comment or raw-text element (what
    # ``skip_context`` would skip, ``_WHOLE``).  They exclude each other, so
    # their order only sets the speed: the common ones first.
    after_lt = (
        rb"(?!(?:" + _trie(RAW_TEXT) + rb"|" + own + rb")[\t\n\f\r />])[a-zA-Z][^\t\n\f\r />]*+" + _ATTRS + rb">"
        rb"|/(?!" + own + rb"[\t\n\f\r />])[a-zA-Z][^\t\n\f\r />]*+" + _ATTRS + rb">"
        + b"".join(b"|" + pattern.pattern[1:] for pattern in _WHOLE.values())
        + rb"|!(?!--)[^>]*+>|\?[^>]*+>|/(?:>|[^a-zA-Z>][^>]*+>)|(?![a-zA-Z/!?])"
    )
    step = rb"[^<]++|<(?:" + after_lt + rb")"
    for _ in range(ELEMENT_NESTING):  # a nested element of the same name, whole
        step = (
            rb"[^<]++|<(?:" + after_lt + rb"|" + own + rb"(?=[\t\n\f\r />])" + _ATTRS + rb">(?:" + step + rb")*+"
            rb"</" + own + rb"(?=[\t\n\f\r />])" + _ATTRS + rb">)"
        )
    return re.compile(
        rb"<(?!(?:" + _trie([*RAW_TEXT, *VOID_ELEMENTS]) + rb")[\t\n\f\r />])"
        rb"(?P<own>[a-zA-Z][^\t\n\f\r />\x80-\xff]*+)(?=[\t\n\f\r />])(?P<attrs>" + _ATTRS + rb")>(?:" + step + rb")*+"
        rb"</" + own + rb"(?=[\t\n\f\r />])" + _ATTRS + rb">"
    )


def tag_end(buf: bytes | bytearray, start: int, pattern: re.Pattern[bytes] = START_TAG) -> int | None:
    """End offset (after ``>``) of the tag starting at ``start``, ``None`` if
    the tag is not complete in ``buf``.  ``start`` must be a tag's ``<``."""
    m = pattern.match(buf, start)
    if m is None:
        return None
    e = m.end()
    if e < len(buf) and buf[e] == 0x3E:  # ">"
        return e + 1
    return None


def inside_tag(buf: bytes | bytearray, lo: int, q: int) -> bool:
    """Whether offset ``q`` (a "<" found by a search) lies inside a tag that
    starts at the nearest "<" in ``[lo, q)``: e.g. ``<img alt="<!--">``.
    ``lo`` is a point between tokens."""
    l = buf.rfind(b"<", lo, q)
    if l < 0:
        return False
    m = _START_OR_END_TAG.match(buf, l)
    if m is None:
        if buf[l + 1 : l + 2] in (b"!", b"?", b"/"):  # a bogus comment: to its ">"
            return buf.find(b">", l, q) < 0
        return False
    # The tag runs at least to where the attribute grammar stopped; if that
    # is not its ">" it is unterminated (EOF or an open quote) and spans q.
    e = m.end()
    if e >= len(buf) or buf[e] != 0x3E:
        return True
    return e >= q


def _whole(name: str) -> re.Pattern[bytes]:
    """A complete raw-text element ``name`` from its ``<``: the start tag, the
    text up to the first ``</name`` + delimiter, and that end tag to its
    ``>`` (what ``skip_context`` finds in three steps)."""
    n = _ci(name)
    return re.compile(
        rb"<" + n + rb"(?=[\t\n\f\r />])" + _ATTRS + rb">"
        rb"(?:[^<]++|<(?!/" + n + rb"[\t\n\f\r />]))*+"
        rb"</" + n + _ATTRS + rb">"
    )


# Complete contexts in one match each: the common case of ``skip_context``.
_WHOLE = {name: _whole(name) for name in RAW_TEXT if name not in ("template", "plaintext")}
_WHOLE["!--"] = re.compile(rb"<!--(?:>|->|(?:[^-]++|-(?!-!?>))*+--!?>)")


# How many levels of same-name elements nested in an element
# ``whole_element`` reads in its one match (a product card: card > body >
# price); deeper ones go to ``element_end``.
ELEMENT_NESTING = 3


def skip_context(buf: bytes | bytearray, q: int, kind: str, final: bool) -> int | None:
    """End offset of the comment or raw-text element opened at ``q``.

    ``kind`` is ``"!--"`` or a lower-case ``RAW_TEXT`` name.  Returns ``None``
    when the closer has not arrived yet, ``len(buf)`` when ``final`` and the
    construct runs to EOF (as a browser would read it).
    """
    whole = _WHOLE.get(kind)
    if whole is not None:
        m = whole.match(buf, q)
        if m is not None:
            return m.end()
    # Incomplete (or a template): step by step.
    n = len(buf)
    if kind == "!--":
        # Abruptly closed "<!-->" and "<!--->" (WHATWG comment start states).
        if buf[q + 4 : q + 5] == b">":
            return q + 5
        if buf[q + 4 : q + 6] == b"->":
            return q + 6
        m = _COMMENT_END.search(buf, q + 4)
        if m is not None:
            return m.end()
        return n if final else None
    if kind == "plaintext":
        return n if final else None
    body = tag_end(buf, q)
    if body is None:
        return n if final else None
    if kind == "template":
        found = element_end(buf, body, "template", final)
        if found is None:
            return None
        return n if found[0] is None else found[1]
    m = closer(kind).search(buf, body)
    if m is None:
        return n if final else None
    e = tag_end(buf, m.start(), END_TAG)
    if e is None:
        return n if final else None
    return e


def element_end(
    buf: bytes | bytearray, body: int, name: str, final: bool
) -> tuple[int | None, int] | None:
    """Find the end tag matching an element ``name`` whose content starts at
    ``body`` (one-shot form of ``EndFinder``).  Returns ``(end_tag_start,
    end_tag_end)``, ``(None, len(buf))`` when ``final`` and unterminated, or
    ``None`` when more input is needed."""
    finder = EndFinder(name, body)
    r = finder.run(buf, final, len(buf) + 1)
    if r[0] == "end":
        return r[1], r[2]
    if r[0] == "need":
        return None
    return None, len(buf)


class EndFinder:
    """Resumable search for the end tag of an element named ``name`` whose
    content starts at ``start``.

    Counts nested start/end tags of the same name, skipping comments and
    raw-text elements; a self-closing ``<div/>`` opens a ``div`` as in HTML.
    ``run`` returns ``("end", end_tag_start, end_tag_end)``, ``("need",)``,
    ``("over",)`` once the end cannot start within ``cap`` bytes of
    ``start``, or ``("unterminated",)`` at EOF.  Between calls the buffer may
    grow, and may be shifted with ``shift``.
    """

    __slots__ = ("name", "rx", "start", "pos", "tok", "depth", "stuck", "stuck_end", "stuck_n")

    def __init__(self, name: str, start: int) -> None:
        self.name = name
        self.rx = body_scanner(name)
        self.start = start
        self.pos = start  # where the next search starts
        self.tok = start  # a point between tokens at or before pos
        self.depth = 1
        # Where tokenising last stopped short of a hit: a tag at ``stuck``
        # that had not ended before the hit, and where it ends in the whole
        # buffer (``stuck_end``, -1 if not within ``stuck_n`` bytes).  A later
        # hit before that end is inside the same tag without tokenising
        # again, so one unterminated quote does not make the search
        # quadratic.  (A tag that ends before some endpos ends at the same
        # place in the whole buffer, so the answer is the same.)
        self.stuck = -1
        self.stuck_end = -1
        self.stuck_n = -1

    def shift(self, n: int) -> None:
        self.start -= n
        self.pos -= n
        self.tok -= n
        self.stuck = -1

    def _markup_end(self, buf: bytes | bytearray, q: int) -> int:
        """``MARKUP.match(buf, self.tok, q).end()``, remembering a tag it stops at."""
        tok = self.tok
        if tok == self.stuck >= 0:
            if (q < self.stuck_end) if self.stuck_end >= 0 else (len(buf) == self.stuck_n):
                return tok
        t = MARKUP.match(buf, tok, q).end()
        if t != q:
            self.stuck = -1
            nxt = buf[t + 1 : t + 3]
            if nxt[:1].isalpha() or (nxt[:1] == b"/" and nxt[1:].isalpha()):
                self.stuck = t
                e = tag_end(buf, t, END_TAG if nxt[:1] == b"/" else START_TAG)
                self.stuck_end = -1 if e is None else e
                self.stuck_n = len(buf)
        return t

    def run(self, buf: bytes | bytearray, final: bool, cap: int) -> tuple:
        limit = self.start + cap
        rx = self.rx
        while True:
            m = rx.search(buf, self.pos)
            if m is None:
                if final:
                    return ("unterminated",)
                self.pos = max(self.pos, len(buf) - LOOKBACK)
                return ("over",) if self.pos > limit else ("need",)
            q = m.start()
            if q > limit:
                return ("over",)
            # A hit inside another tag (``<img alt="</div>">``) is not a tag:
            # tokenise from the last point between tokens to make sure.
            t = self._markup_end(buf, q)
            if t != q:
                self.tok = t
                self.pos = q + 1
                continue
            text = m.group()
            c = text[1]
            if c == 0x21:  # "<!--"
                kind = "!--"
            elif c == 0x2F:  # "</name": an end tag of the same name
                e = tag_end(buf, q, END_TAG)
                if e is None:
                    if final:
                        return ("unterminated",)
                    self.pos = q
                    return ("need",)
                self.depth -= 1
                if self.depth == 0:
                    return ("end", q, e)
                self.pos = self.tok = e
                continue
            else:
                kind = text[1:].decode("latin-1").lower()
            if kind != "!--" and kind not in _RAW_SET:  # a nested start tag of the same name
                e = tag_end(buf, q)
                if e is None:
                    if final:
                        return ("unterminated",)
                    self.pos = q
                    return ("need",)
                self.depth += 1
                self.pos = self.tok = e
                continue
            e = skip_context(buf, q, kind, final)
            if e is None:
                self.pos = q
                return ("need",)
            if e >= len(buf) and final:
                return ("unterminated",)
            self.pos = self.tok = e


def attributes(buf: bytes | bytearray, start: int, end: int) -> list[tuple[int, bytes, bytes | None]]:
    """``(name_offset, lower-cased name, raw value or None)`` for each
    attribute of the complete start tag ``buf[start:end]``."""
    m = START_TAG.match(buf, start, end)
    assert m is not None
    out = []
    for a in ATTR.finditer(buf, m.end(1), end - 1):
        out.append((a.start(1), a.group(1).lower(), a.group(2)))
    return out


def attr_value(raw: bytes | None, encoding: str = "latin-1") -> str:
    """The text of an attribute value: quotes removed, references decoded."""
    if raw is None:
        return ""
    if raw[:1] in (b'"', b"'"):
        raw = raw[1:-1]
    text = raw.decode(encoding, "replace")
    return html.unescape(text) if "&" in text else text


def start_tag(buf: bytes | bytearray, start: int) -> tuple[str, int] | None:
    """``(lower-cased name, end offset)`` of the complete start tag at ``start``."""
    m = START_TAG.match(buf, start)
    if m is None:
        return None
    e = m.end()
    if e < len(buf) and buf[e] == 0x3E:
        return m.group(1).decode("latin-1").lower(), e + 1
    return None


def tag_name(buf: bytes | bytearray, start: int) -> str:
    m = START_TAG.match(buf, start)
    assert m is not None
    return m.group(1).decode("latin-1").lower()


def slot_attribute(buf: bytes | bytearray, start: int, end: int, encoding: str = "latin-1") -> str | None:
    """The slot name of the start tag ``buf[start:end]``, or ``None`` if it
    has no ``data-edge-slot`` attribute (the first occurrence wins, as in
    HTML)."""
    for _, name, raw in attributes(buf, start, end):
        if name == MARKER:
            return attr_value(raw, encoding)
    return None


def is_self_closing(buf: bytes | bytearray, end: int) -> bool:
    return buf[end - 2 : end] == b"/>"
