"""Is a variant fragment well balanced HTML?

A fragment replaces a slot's inner HTML, so an unclosed ``<div>`` or a stray
``</section>`` would break the rest of the page.  This is a small tag-stack
scanner (no tree building, no fix-ups, unlike a browser parser that would
silently repair the fragment and hide the mistake):

- every non-void element needs its own end tag, in nesting order (strict:
  optional end tags like ``</li>``/``</p>`` are required too);
- void elements (``<br>``, ``<img>``…) take no end tag; ``<x/>`` is
  self-closed (SVG, MathML);
- comments, ``<!DOCTYPE>``/``<![CDATA[`` and ``<?…>`` are skipped and must be
  terminated; ``<script>``, ``<style>``, ``<textarea>``, ``<title>`` hold raw
  text up to their end tag;
- a ``<`` not followed by a tag name is text.

``check_balanced(text)`` raises ``BalanceError(offset, reason)`` at the first
problem; the offset points at the offending tag (for an unclosed element,
at its start tag).
"""

from __future__ import annotations

import re

VOID = frozenset(
    "area base br col embed hr img input keygen link meta param source track wbr".split()
)
RAW_TEXT = frozenset({"script", "style", "textarea", "title", "xmp"})

_START = re.compile(r"<([A-Za-z][A-Za-z0-9:_-]*)")
_END = re.compile(r"</([A-Za-z][A-Za-z0-9:_-]*)\s*>")
_SPACE = " \t\n\r\f"


class BalanceError(ValueError):
    """``reason`` may hold ``{related}``: the loader replaces it with the line
    of offset ``related`` (e.g. where the still-open element started)."""

    def __init__(self, offset: int, reason: str, related: int | None = None) -> None:
        self.offset, self.reason, self.related = offset, reason, related
        super().__init__(reason)


def _tag_end(text: str, i: int) -> tuple[int, bool] | None:
    """From just after a start tag's name: (offset after its ``>``, whether
    it is self-closed ``/>``), or ``None`` when the tag never ends.  A quote
    right after ``=`` opens an attribute value, which may contain ``>``."""
    n = len(text)
    while i < n:
        c = text[i]
        if c == ">":
            return i + 1, text[i - 1] == "/"
        i += 1
        if c == "=":
            while i < n and text[i] in _SPACE:
                i += 1
            if i < n and text[i] in "\"'":
                close = text.find(text[i], i + 1)
                if close < 0:
                    return None
                i = close + 1
    return None


def check_balanced(text: str) -> None:
    stack: list[tuple[str, int]] = []  # (tag name, offset of its start tag)
    pos = 0
    n = len(text)
    while True:
        lt = text.find("<", pos)
        if lt < 0 or lt >= n - 1:
            break
        if text.startswith("<!--", lt):
            close = text.find("-->", lt + 4)
            if close < 0:
                raise BalanceError(lt, "unterminated comment: <!-- has no -->")
            pos = close + 3
            continue
        if text.startswith("<!", lt) or text.startswith("<?", lt):
            close = text.find(">", lt + 2)
            if close < 0:
                raise BalanceError(lt, f"unterminated {text[lt:lt + 9]!r}: no closing >")
            pos = close + 1
            continue
        if text.startswith("</", lt):
            m = _END.match(text, lt)
            if m is None:
                if lt + 2 < n and text[lt + 2].isalpha():
                    raise BalanceError(lt, f"malformed end tag {text[lt:lt + 20].split(chr(10))[0]!r}")
                pos = lt + 1
                continue
            name = m.group(1).lower()
            if name in VOID:
                raise BalanceError(lt, f"unexpected </{name}>: <{name}> is a void element and takes no end tag")
            if not stack:
                raise BalanceError(lt, f"unexpected </{name}>: no element is open")
            top, top_at = stack[-1]
            if top != name:
                raise BalanceError(lt, f"unexpected </{name}>: <{top}> opened on line {{related}} is still open", top_at)
            stack.pop()
            pos = m.end()
            continue
        m = _START.match(text, lt)
        if m is None:
            pos = lt + 1  # a lone "<" is text
            continue
        name = m.group(1).lower()
        end_of_tag = _tag_end(text, m.end())
        if end_of_tag is None:
            raise BalanceError(lt, f"unterminated start tag <{name}: no closing >")
        pos, self_closed = end_of_tag
        if self_closed or name in VOID:
            continue
        if name in RAW_TEXT:
            end = re.compile(rf"</{name}[\s/>]", re.I).search(text, pos)
            if end is None:
                raise BalanceError(lt, f"unclosed <{name}>: no </{name}>")
            close = text.find(">", end.start())
            pos = (close + 1) if close >= 0 else n
            continue
        stack.append((name, lt))
    if stack:
        name, at = stack[-1]
        raise BalanceError(at, f"unclosed <{name}>: no </{name}> before the end of the fragment")
