"""Reorder a slot's element children without re-serialising anything.

The slot's inner bytes are split into top-level *element children* (exact
byte extents, from the start tag to the matching end tag, nested same-name
tags and comments included) and the *separators* between them (whitespace,
text, comments, and ``<script>``/``<style>``/``<template>`` blocks, which are
not visual children and stay where they are).  The elements are permuted
among the element positions; every separator keeps its position::

    sep0 EL0 sep1 EL1 sep2 EL2 sep3   ->   sep0 EL2 sep1 EL0 sep2 EL1 sep3

Keys (CONTRACT §2), applied in order, ties keeping the origin's order:

* ``affinity``: children whose ``data-category`` (one or several
  space-separated categories) is in the visitor's affinity tuple first, the
  strongest (earliest in the tuple) first;
* ``attr``: by that attribute, ascending or descending.  If any child's value
  is a number the key is numeric, and values that are not numbers sort after
  the numbers; otherwise values compare as case-folded text.  A missing
  attribute always sorts last;
* ``pin``: the children whose ``data-sku`` is listed first, in the given order.

A body that is not a clean list of elements (a stray end tag, an element
whose end tag is omitted, such as ``<li>`` without ``</li>``) raises
``SortError``: the rewriter then leaves the slot as the origin sent it.
"""

from __future__ import annotations

import functools
import itertools
import math
import re

from ..errors import RewriteError
from ..model import SortChildren, SortKey
from . import native
from . import scanner as sc

# Children that are not moved: they keep their place among the separators.
_STAY = frozenset({"script", "style", "template", "noscript"})
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class SortError(RewriteError):
    """The slot's children cannot be reordered byte-faithfully."""


def split_children(inner: bytes) -> tuple[list[bytes], list[tuple[int, int]]]:
    """``(separators, elements)``: ``len(separators) == len(elements) + 1``;
    each element is a ``(start, end)`` extent into ``inner``."""
    seps, els, _ = _split(inner)
    return seps, els


def _split(inner: bytes) -> tuple[list[bytes], list[tuple[int, int]], list[tuple[int, int]]]:
    """``split_children`` plus, for each element, the span of its start tag
    that holds the attributes (from the end of the tag name to the ``>``), so
    that the tag is matched only once."""
    els, spans, _ = _walk(inner, 0, None)
    return _separators(inner, els), els, spans


def _separators(inner: bytes, els: list[tuple[int, int]]) -> list[bytes]:
    seps, prev = [], 0
    for start, end in els:
        seps.append(inner[prev:start])
        prev = end
    seps.append(inner[prev:])
    return seps


class _Unknown(Exception):
    """``split_until_end`` cannot tell in one pass: take the exact path."""


class _Need(_Unknown):
    """The walk needs more bytes; it can resume at ``pos`` with ``els`` and
    ``spans`` found so far (absolute offsets)."""

    def __init__(self, pos: int, els: list, spans: list) -> None:
        self.pos, self.els, self.spans = pos, els, spans


#: ``split_until_end``'s answer when the walk waits for more of the body.
NEED = "need"
# A resumed walk that stops at the same child this many times in a row gives
# way to the end finder (which resumes where it stopped): a child larger
# than a few chunks is not re-read on every chunk.
_STALLS = 3


class OnePass:
    """``split_until_end``'s progress through a slot body arriving in chunks
    (offsets relative to the body)."""

    __slots__ = ("pos", "els", "spans", "stalls")

    def __init__(self) -> None:
        self.pos = 0
        self.els: list[tuple[int, int]] = []
        self.spans: list[tuple[int, int]] = []
        self.stalls = 0


def split_until_end(
    buf: bytes | bytearray, body: int, name: str, limit: int, progress: OnePass | None = None
) -> tuple[int, int, list[tuple[int, int]], list[tuple[int, int]]] | str | None:
    """For a slot ``<name>`` whose content starts at ``body``: its end tag and
    its children in one pass, instead of ``EndFinder`` then
    ``split_children`` over the same bytes.  Returns ``(end_tag_start,
    end_tag_end, elements, spans)`` (extents relative to ``body``), or
    ``None`` whenever the answer might differ from that exact path: the end
    tag not in ``buf`` yet or starting past ``limit``, a child of another
    name that holds ``<name`` or ``</name`` in any case (even inside an
    attribute or a comment), a child named ``name`` when that is a raw-text
    element, anything ``split_children`` would refuse.

    A child named ``name`` (a ``<div>`` grid of ``<div>`` cards) is read by
    an end finder for ``name`` that starts at its content: exactly what the
    slot's end finder does from there at depth 2, so the two agree on where
    it ends.

    With ``progress`` (kept by the caller between calls, for a body that
    arrives in chunks), a walk that runs out of bytes returns ``NEED`` and
    resumes where it stopped on the next call, instead of ``None``; it
    gives way (``None``) once the buffer runs past ``limit`` or it stalls
    on one child."""
    start = body if progress is None else body + progress.pos
    try:
        els, spans, end = _walk(buf, start, name, body)
    except _Need as need:
        if progress is None or len(buf) > limit:
            return None
        pos = need.pos - body
        progress.stalls = progress.stalls + 1 if pos == progress.pos else 0
        if progress.stalls >= _STALLS:
            return None
        progress.pos = pos
        progress.els += need.els
        progress.spans += need.spans
        return NEED
    except (_Unknown, SortError):
        return None
    q, e = end
    if q > limit:
        return None
    if progress is not None and progress.els:
        els, spans = progress.els + els, progress.spans + spans
    return q, e, els, spans


def _walk(buf, base: int, stop: str | None, origin: int = 0):
    """``_walk_pure``, by the compiled loop when it is active (``native``),
    with the elements' and spans' offsets relative to ``origin``."""
    walk = native.walk_children
    if walk is None:
        return _relative(_walk_pure, buf, base, stop, origin)
    r = walk(buf, base, stop, origin)
    what = r[0]
    if what == "ok":
        return r[1], r[2], r[3]
    if what == "need":
        raise _Need(r[1], r[2], r[3])
    if what == "unknown":
        raise _Unknown
    if what == "stray":
        raise SortError(f"stray end tag at offset {r[1]} of the slot body")
    if what == "unterminated":
        raise SortError(f"unterminated start tag at offset {r[1]} of the slot body")
    if what == "no-end":
        raise SortError(f"<{r[1]}> at offset {r[2]} of the slot body has no end tag")
    return _relative(_walk_pure, buf, base, stop, origin)  # "pure": a tag name the compiled loop leaves to the reference


def _relative(walk, buf, base: int, stop: str | None, origin: int):
    """``walk(buf, base, stop)`` with the extents made relative to ``origin``."""
    if not origin:
        return walk(buf, base, stop)
    try:
        els, spans, end = walk(buf, base, stop)
    except _Need as need:
        need.els = [(a - origin, b - origin) for a, b in need.els]
        need.spans = [(a - origin, b - origin) for a, b in need.spans]
        raise
    return [(a - origin, b - origin) for a, b in els], [(a - origin, b - origin) for a, b in spans], end


def _walk_pure(buf, base: int, stop: str | None):
    """Element children of the content starting at ``buf[base]``: their
    extents, the attribute spans of their start tags, and (with ``stop``, the
    parent's name) the parent's end tag, which ends the walk.  Without
    ``stop`` the content is all of ``buf`` from ``base``, and complete.

    With ``stop``, ``_Need`` says where the walk stopped for want of bytes:
    the start of a top-level construct, after which a walk resumed there
    with more bytes answers as one from ``base`` would (every decision
    before it was taken on bytes that are already there)."""
    els: list[tuple[int, int]] = []
    spans: list[tuple[int, int]] = []
    start_tag = sc.START_TAG.match
    whole_element = sc.whole_element().match
    final = stop is None
    if stop is not None:
        opener = b"<" + stop.encode("latin-1")
        closer = b"</" + stop.encode("latin-1")
    end_tag = None
    pos = base
    n = len(buf)
    while True:
        lt = buf.find(b"<", pos)
        if lt < 0:
            if not final:
                raise _Need(pos, els, spans)
            break
        nxt = buf[lt + 1 : lt + 2]
        if buf.startswith(b"<!--", lt):
            pos = sc.skip_context(buf, lt, "!--", final)
            if pos is None or (not final and pos >= n):
                raise _Need(lt, els, spans)
            continue
        if nxt in (b"!", b"?"):
            gt = buf.find(b">", lt)
            if gt < 0 and not final:
                raise _Need(lt, els, spans)
            pos = n if gt < 0 else gt + 1
            continue
        if nxt == b"/":
            if buf[lt + 2 : lt + 3].isalpha():
                if stop is not None:
                    m = sc.END_TAG.match(buf, lt)
                    gt = m.end()
                    if gt >= n or buf[gt] != 0x3E:  # not complete yet
                        raise _Need(lt, els, spans)
                    if m.group(1).decode("latin-1").lower() == stop:
                        end_tag = (lt, gt + 1)
                        break
                    raise _Unknown
                raise SortError(f"stray end tag at offset {lt} of the slot body")
            gt = buf.find(b">", lt)
            if gt < 0 and not final:
                raise _Need(lt, els, spans)
            pos = n if gt < 0 else gt + 1
            continue
        if not nxt.isalpha():
            if not nxt and not final:
                raise _Need(lt, els, spans)
            pos = lt + 1
            continue
        whole = whole_element(buf, lt)
        if whole is not None:  # the common case: a child element in one match
            name = whole.group("own").decode("ascii").lower()
            end, el_end = whole.end("attrs") + 1, whole.end()
            if stop is not None and name != stop:
                child = bytes(buf[end:el_end]).lower()
                if child.find(opener) >= 0 or child.find(closer) >= 0:
                    raise _Unknown
            els.append((lt, el_end))
            spans.append(whole.span("attrs"))
            pos = el_end
            continue
        m = start_tag(buf, lt)  # never None: "<" and a letter start a tag
        gt = m.end()
        if gt >= n or buf[gt] != 0x3E:  # ">"
            if not final:
                raise _Need(lt, els, spans)
            raise SortError(f"unterminated start tag at offset {lt - base} of the slot body")
        name = m.group(1).decode("latin-1").lower()
        end = gt + 1
        if name == stop and name in sc.RAW_TEXT:
            raise _Unknown
        if name in sc.RAW_TEXT:
            if not final and name == "plaintext":
                raise _Unknown
            pos = sc.skip_context(buf, lt, name, final)
            if pos is None or (not final and pos >= n):
                raise _Need(lt, els, spans)
            if name in _STAY or name == "plaintext":
                continue
            el_end = pos
        elif name in sc.VOID_ELEMENTS:
            el_end = end
        else:
            found = sc.element_end(buf, end, name, final)
            if found is None or found[0] is None:
                if not final:
                    raise _Need(lt, els, spans)
                raise SortError(f"<{name}> at offset {lt - base} of the slot body has no end tag")
            el_end = found[1]
        if stop is not None and name != stop:
            # The exact path would have read this child with the parent's
            # end finder, which reacts to <stop> and </stop> only.
            child = bytes(buf[end:el_end]).lower()
            if child.find(opener) >= 0 or child.find(closer) >= 0:  # (`in` formats a TypeError first)
                raise _Unknown
        els.append((lt, el_end))
        spans.append((m.end(1), gt))
        pos = el_end
    return els, spans, end_tag


def _attrs(inner: bytes, span: tuple[int, int], wanted: dict[bytes, str], encoding: str) -> dict[str, str]:
    """The ``wanted`` attributes (lower-case name -> key) of a start tag whose
    attributes are ``inner[span[0]:span[1]]`` (first occurrence wins, as in
    HTML); only those are decoded."""
    out: dict[str, str] = {}
    get = wanted.get
    for name, raw in sc.ATTR.findall(inner, span[0], span[1]):
        key = get(name)
        if key is None and not name.islower():  # upper case, or no letters ("=x")
            key = get(name.lower())
        if key is not None and key not in out:
            out[key] = sc.attr_value(raw, encoding)
    return out


def _all_attrs(inner: bytes, spans, wanted: dict[bytes, str], encoding: str) -> list[dict[str, str]]:
    """``_attrs`` of every span, the byte work by the compiled loop when it
    is active (``native``): it hands back the text of plain ASCII values and
    the raw bytes of the others, decoded here as ``_attrs`` does."""
    values = native.attr_values
    if values is None:
        return [_attrs(inner, span, wanted, encoding) for span in spans]
    rows, all_text = values(inner, spans, tuple(wanted), tuple(wanted.values()), _ascii_same(encoding))
    if not all_text:
        text = sc.attr_value
        for row in rows:
            for key, raw in row.items():
                if type(raw) is bytes:
                    row[key] = text(raw, encoding)
    return rows


@functools.lru_cache(maxsize=64)
def _ascii_same(encoding: str) -> bool:
    """Whether ``encoding`` decodes each ASCII byte but ESC to the same
    character (not UTF-7, HZ, ...), so a value of such bytes is its own
    text."""
    try:
        return all(bytes([c]).decode(encoding) == chr(c) for c in range(128) if c != 0x1B)
    except (LookupError, UnicodeDecodeError):
        return False


def _number(text: str) -> float | None:
    text = text.strip()
    # Plain decimals ("12", "12.50", ".5") skip the regex: str.isdecimal
    # is the regex's \d (Unicode Nd), which float() reads too.
    head, dot, tail = text.partition(".")
    plain = (head.isdecimal() or (dot and not head and tail)) and (not tail or tail.isdecimal())
    if not plain and not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _rank_key(values: list[str | None], order: tuple[str, ...]) -> list[tuple]:
    ranks: dict[str, int] = {}
    for i, v in enumerate(order):
        ranks.setdefault(v, i)
    miss = len(order)
    known: dict[str | None, tuple] = {}  # a grid repeats a few categories
    out = []
    for v in values:
        key = known.get(v)
        if key is None:
            toks = v.split() if v else ()
            if len(toks) == 1:
                key = (ranks.get(toks[0], miss),)
            else:
                key = (min((ranks.get(tok, miss) for tok in toks), default=miss),)
            known[v] = key
        out.append(key)
    return out


def _attr_key(values: list[str | None], descending: bool) -> list[tuple]:
    """``_attr_key_pure``, by the compiled loop when it is active and the
    values are numbers in ASCII (``native``)."""
    compiled = native.attr_key
    if compiled is not None:
        keys = compiled(values, descending)
        if keys is not None:
            return keys
    return _attr_key_pure(values, descending)


def _attr_key_pure(values: list[str | None], descending: bool) -> list[tuple]:
    numbers = [None if v is None else _number(v) for v in values]
    out: list[tuple] = []
    if any(x is not None for x in numbers):
        for x in numbers:
            out.append((1,) if x is None else (0, -x if descending else x))
        return out
    for v in values:
        if v is None:
            out.append((1,))
        elif descending:
            # Reverse text order with a key that still sorts ascending: negated
            # code points, and a terminator above every negated code point so
            # "ab" comes after "abc".
            out.append((0, tuple(-ord(c) for c in v.casefold()) + (1,)))
        else:
            out.append((0, v.casefold()))
    return out


def _keys(key: SortKey, attrs: list[dict[str, str]], affinity: tuple[str, ...]) -> list[tuple]:
    if key.kind == "affinity":
        return _rank_key([a.get("data-category") for a in attrs], affinity)
    if key.kind == "pin":
        return _rank_key([a.get("data-sku", "").strip() or None for a in attrs], key.skus)
    if key.kind == "attr":
        name = key.attr.lower()
        return _attr_key([a.get(name) for a in attrs], key.descending)
    raise SortError(f"unknown sort key kind {key.kind!r}")


def _wanted(keys: tuple[SortKey, ...]):
    for key in keys:
        if key.kind == "affinity":
            yield b"data-category"
        elif key.kind == "pin":
            yield b"data-sku"
        elif key.kind == "attr":
            yield key.attr.lower().encode("latin-1", "replace")


def _specs(edit: SortChildren) -> tuple | None:
    """``edit.keys`` as ``native.sort_body`` takes them, or ``None`` when it
    cannot (an attribute name that is not ASCII)."""
    out = []
    for key in edit.keys:
        if key.kind == "affinity":
            out.append((0, b"data-category", False, _ascii_entries(edit.affinity)))
        elif key.kind == "pin":
            out.append((0, b"data-sku", False, _ascii_entries(key.skus)))
        elif key.kind == "attr" and key.attr.isascii():
            out.append((1, key.attr.lower().encode("ascii"), key.descending, ()))
        else:
            return None
    return tuple(out)


def _ascii_entries(order: tuple[str, ...]) -> tuple[bytes | None, ...]:
    """The entries of a rank order as ASCII bytes; ``None`` for one that is
    not ASCII (no ASCII word equals it)."""
    return tuple(v.encode("ascii") if v.isascii() else None for v in order)


def sort_children(inner: bytes, edit: SortChildren, encoding: str = "utf-8", *, children=None) -> bytes:
    """``inner`` with its element children reordered by ``edit.keys``.

    ``children`` is ``(elements, spans)`` from ``split_until_end`` when the
    caller already has them."""
    parts = sort_parts(inner, 0, len(inner), edit, encoding, children)
    return inner if parts is None else b"".join(parts)


def sort_parts(buf, start: int, end: int, edit: SortChildren, encoding: str = "utf-8", children=None):
    """``sort_children`` of ``buf[start:end]`` as the pieces of its answer,
    separators and elements in their new order, each a view of ``buf``; or
    ``None`` when the order does not change.  The streaming rewriter sends
    the pieces as they are: the body is neither copied out of its buffer
    nor joined before the page is.

    ``children`` (extents relative to ``start``) are required unless the
    body runs to the end of ``buf``.  The views are made last, once nothing
    can raise: a view left alive in a traceback would pin ``buf``."""
    if children is None:
        if end != len(buf):
            buf, start, end = bytes(memoryview(buf)[start:end]), 0, end - start
        els, spans, _ = _walk(buf, start, None, start)
    else:
        els, spans = children
    if len(els) < 2 or not edit.keys:
        return None
    compiled = native.sort_body
    if compiled is not None:
        specs = _specs(edit)
        done = None if specs is None else compiled(buf, start, end, els, spans, specs, _ascii_same(encoding))
        if done is not None:
            return None if done is True else [done]
    if start:
        spans = [(a + start, b + start) for a, b in spans]
    wanted = {name: name.decode("latin-1") for name in _wanted(edit.keys)}
    attrs = _all_attrs(buf, spans, wanted, encoding)
    # By (key 1, key 2, ..., origin index): one stable sort per key, the
    # last key first, compares flat keys rather than tuples of them.
    origin = list(range(len(els)))
    order = origin[:]
    for key in reversed(edit.keys):
        order.sort(key=_keys(key, attrs, edit.affinity).__getitem__)
    if order == origin:
        return None
    # The separators keep their places: separator k runs from the end of
    # element k-1 to the start of element k (offsets relative to start).
    cuts = [0, *itertools.chain.from_iterable(els), end - start]
    view = memoryview(buf)[start:end]
    parts = [view[cuts[0] : cuts[1]]]
    for slot, i in enumerate(order):
        parts.append(view[cuts[2 * i + 1] : cuts[2 * i + 2]])
        parts.append(view[cuts[2 * slot + 2] : cuts[2 * slot + 3]])
    return parts
