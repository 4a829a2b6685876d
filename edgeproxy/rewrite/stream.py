"""The streaming slot rewriter: origin HTML bytes in, personalised bytes out.

``SlotRewriter(edits)`` is fed the decoded body chunk by chunk and returns
what may be sent on at once::

    rw = SlotRewriter({"hero": ReplaceInner("<h1>Hi</h1>")}, deadline=t0 + budget)
    for chunk in body:
        send(rw.feed(chunk))
    send(rw.finish())
    rw.outcomes            # {"hero": "applied"}

What holds:

* **Fidelity.**  Only the inner bytes of a slot with an edit change; its
  start and end tags and every other byte come out exactly as they went in.
  With no applicable edit the output equals the input.
* **Latency.**  Bytes are returned as soon as they are known not to be the
  inside of an edited slot: a page without the marker is one marker search
  per chunk (``native.find_marker``), not copied, and each chunk comes back
  unchanged in the same call.  Only an edited slot's body is held, until its
  end tag arrives.
* **Chunking does not matter.**  The output is the same however the input is
  split (markers, tags and comments may straddle chunks), except for the
  ``deadline``, which is a clock.
* **Fail open.**  A slot that cannot be rewritten keeps the origin's bytes and
  gets an outcome saying why; an unexpected exception anywhere turns the rest
  of the stream into a pass-through of the origin's bytes, none lost, none
  repeated (logged on ``edgeproxy.rewrite``; a held slot counts as ``failed``).

Outcomes (``outcomes[slot_name]``, one per edited slot name; a name seen
several times is ``"applied"`` if any occurrence was, else the last reason):

=================  ==========================================================
``applied``        the edit was applied
``seen``           an ``Observe`` slot is on the page (left as it was)
``absent``         no such slot on the page (or only inside an edited slot)
``unterminated``   the slot's end tag never came (malformed HTML, EOF)
``over-cap``       the slot's body is larger than ``max_slot_bytes``
``void``           a void or self-closing element has no inner HTML to edit
``deadline``       the time budget had run out: left as the origin sent it
``charset``        the page charset is not one a fragment can be written in
``unsortable``     the slot's children are not a clean list of elements
``failed``         an unexpected error; the slot keeps the origin's bytes
=================  ==========================================================

A slot left alone for any reason is then read as ordinary markup, so slots
nested inside it can still be edited; the slots inside an edited
``ReplaceInner`` slot vanish with its content, while those inside a
``SortChildren`` slot are rewritten before the children are reordered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from ..errors import RewriteError
from ..model import Edit, Observe, ReplaceInner, SortChildren
from ..settings import DEFAULT_MAX_SLOT_BYTES
from . import native
from . import scanner as sc
from .charset import encode_fragment, rewritable
from .sort import NEED, OnePass, SortError, sort_children, sort_parts, split_until_end

log = logging.getLogger("edgeproxy.rewrite")

APPLIED = "applied"
ABSENT = "absent"
UNTERMINATED = "unterminated"
OVER_CAP = "over-cap"
VOID = "void"
DEADLINE = "deadline"
CHARSET = "charset"
UNSORTABLE = "unsortable"
FAILED = "failed"
SEEN = "seen"
OUTCOMES = (APPLIED, SEEN, ABSENT, UNTERMINATED, OVER_CAP, VOID, DEADLINE, CHARSET, UNSORTABLE, FAILED)

# Bytes already sent but not yet scanned for contexts are kept (as history for
# a later marker's check) up to this size before they are scanned and dropped.
HISTORY_BYTES = 1024 * 1024
# Consumed bytes are dropped from the buffer in steps of at least this size.
_TRIM_BYTES = 64 * 1024
# Chunks kept aside (``SlotRewriter._lazy``) are copied into the buffer in
# steps of about this size: the buffer grows by large steps (it grew by each
# chunk, copying itself), and the memory held stays about what it was.
_LAZY_BYTES = 256 * 1024
_TAIL = len(sc.MARKER) - 1


class _Held:
    """An edited slot whose start tag has been seen; its body is held."""

    __slots__ = ("name", "edit", "tag", "body", "finder", "one_pass", "children")

    def __init__(self, name: str, edit: Edit, tag: int, body: int, finder: sc.EndFinder) -> None:
        self.name, self.edit, self.tag, self.body, self.finder = name, edit, tag, body, finder
        # A sort slot first tries to find its end and its children in one
        # pass (``split_until_end``), resumed as its body arrives, until it
        # answers or gives way to the end finder; ``children`` is what it
        # found.
        self.one_pass = OnePass() if isinstance(edit, SortChildren) and finder.name.isascii() else None
        self.children = None


class SlotRewriter:
    """Apply ``edits`` (slot name -> ``Edit``) to an HTML byte stream.

    ``charset`` is the page's Python codec name (see ``charset.page_charset``);
    ``None`` means the page cannot be rewritten safely (UTF-16, unknown): every
    edited slot then passes through with outcome ``"charset"``.
    ``deadline`` is a ``time.perf_counter()`` value after which slots are left
    as the origin sent them.  Call ``feed`` for each chunk, then ``finish``
    once; ``outcomes`` is complete after ``finish``.
    """

    def __init__(
        self,
        edits: Mapping[str, Edit],
        *,
        charset: str | None = "utf-8",
        max_slot_bytes: int = DEFAULT_MAX_SLOT_BYTES,
        deadline: float | None = None,
    ) -> None:
        self._edits = dict(edits)
        self._charset = rewritable(charset)
        self._cap = max_slot_bytes
        self._deadline = deadline
        self.outcomes: dict[str, str] = {}

        self._buf = bytearray()
        self._base = 0  # absolute offset of _buf[0]
        # Offsets into _buf:
        self._emitted = 0  # input before this has been output
        self._pos = 0  # between tokens, in the data state: scanning resumes here
        self._opos = 0  # next context-opener search starts here (>= _pos)
        self._mpos = 0  # next marker search starts here
        self._slot: _Held | None = None
        self._eager = False  # scan on the next feed (a marker's start tag is incomplete)
        self._pass = not self._edits  # pass everything through from now on
        self._skip: set[int] = set()  # absolute start-tag offsets of slots left alone
        # Pieces of output, joined by ``_drain``: fragments and zero-copy
        # views of ``_buf``.  Empty between calls, so no view outlives the
        # call that made it (a live view would stop ``_buf`` from resizing).
        self._out: list[bytes | memoryview] = []
        # Chunks that come after ``_buf``, sent and searched, not copied into
        # it yet (``_settle`` does, when a marker asks for the history, or
        # every ``_LAZY_BYTES``): a page without markers is copied at most
        # once, by large steps, whatever its chunking (growing ``_buf`` by
        # small chunks cost more than the marker search).  ``_lazy_tail`` is
        # the last ``_TAIL`` bytes they end with.
        self._lazy: list[bytes] = []
        self._lazy_n = 0
        self._lazy_tail = b""
        self._fragments: dict[str, bytes] = {}
        self._finished = False

    # -- public -------------------------------------------------------------
    @property
    def deadline(self) -> float | None:
        """The ``perf_counter`` value after which slots are left alone; the
        caller may move it between feeds (e.g. not to count time spent
        waiting for the origin's next chunk)."""
        return self._deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self._deadline = value

    def feed(self, chunk: bytes) -> bytes:
        """Take the next chunk of the body; return the bytes ready to send."""
        if self._finished:
            raise RuntimeError("Cannot call feed() after finish()")
        if not chunk:
            return b""
        if self._pass:
            return self._drain() + bytes(chunk)
        try:
            if not self._eager and self._slot is None and self._emitted == len(self._buf) + self._lazy_n:
                # Fast path: everything before the chunk is sent; no marker
                # in it nor across its boundary.
                if type(chunk) is not bytes:
                    chunk = bytes(chunk)
                last = self._last_bytes()
                if native.find_marker(chunk) < 0 and native.find_marker(last + chunk[:_TAIL]) < 0:
                    n0 = self._emitted
                    n1 = n0 + len(chunk)
                    # Nothing before the chunk waits to be searched: the
                    # next search starts where this one ended (in
                    # ``finish``, that was a second find over the whole page).
                    if self._mpos >= n0 - _TAIL:
                        self._mpos = max(self._mpos, n1 - _TAIL)
                    self._lazy.append(chunk)
                    self._lazy_n += len(chunk)
                    self._lazy_tail = chunk[-_TAIL:] if len(chunk) >= _TAIL else (last + chunk)[-_TAIL:]
                    self._emitted = n1
                    if self._lazy_n > _LAZY_BYTES:
                        self._settle()
                        if n1 - self._pos > HISTORY_BYTES:
                            self._compact()
                    return chunk
            self._settle()
            buf = self._buf
            if not self._eager and self._slot is None:
                # Some bytes wait to be sent, or the chunk holds a marker:
                # search from the last ``_TAIL`` bytes before it (``_trim``
                # keeps them in ``_buf``), a marker may straddle.
                n0 = len(buf)
                lo = n0 - _TAIL if n0 > _TAIL else 0
                buf += chunk
                m = native.find_marker(buf, lo)
                if m < 0:
                    if self._mpos >= lo:
                        self._mpos = max(self._mpos, len(buf) - _TAIL)
                    if len(buf) - self._pos > HISTORY_BYTES:
                        self._compact()
                    return self._drain()
                if self._mpos >= lo:
                    self._mpos = max(self._mpos, m)
                return self._process(final=False)
            buf += chunk
            return self._process(final=False)
        except Exception:
            log.exception("rewriter error: the rest of the page passes through as the origin sent it")
            return self._fail_open()

    def finish(self) -> bytes:
        """Signal the end of the body; return the remaining bytes."""
        if self._finished:
            return b""
        self._finished = True
        try:
            if self._lazy and self._mpos >= self._emitted - _TAIL:
                out = b""  # all sent and searched: nothing for _process to do
            else:
                self._settle()
                out = self._drain() if self._pass else self._process(final=True)
        except Exception:
            log.exception("rewriter error: the rest of the page passes through as the origin sent it")
            out = self._fail_open()
        for name in self._edits:
            self.outcomes.setdefault(name, ABSENT)
        return out

    def stop(self, outcome: str = OVER_CAP) -> bytes:
        """Stop rewriting: a slot being held goes out as the origin sent it
        (with ``outcome``), and every later byte passes through unchanged.

        Used when the page turns out larger than the rewrite size cap part
        way through a body of unknown length.  Returns the bytes to send.
        """
        self._settle()
        if self._pass:
            return self._drain()
        if self._slot is not None:
            self._note(self._slot.name, outcome)
            self._slot = None
        out = self._fail_open()
        return out

    # -- the scan -----------------------------------------------------------
    def _process(self, final: bool) -> bytes:
        buf = self._buf
        while not self._pass:
            slot = self._slot
            if slot is None:
                if not self._scan(buf, final):
                    break
                continue
            if slot.one_pass is not None:
                found = split_until_end(buf, slot.body, slot.finder.name, slot.body + self._cap, slot.one_pass)
                if found == NEED and not final:
                    break
                slot.one_pass = None
                if found is not None and found != NEED:
                    self._slot = None
                    slot.children = found[2], found[3]
                    self._close(buf, slot, found[0], found[1])
                    continue
            r = slot.finder.run(buf, final, self._cap)
            if r[0] == "need":
                break
            self._slot = None
            if r[0] == "end":
                self._close(buf, slot, r[1], r[2])
            else:
                self._leave(slot, OVER_CAP if r[0] == "over" else UNTERMINATED)
        return self._drain()

    def _scan(self, buf: bytearray, final: bool) -> bool:
        """Advance through the data state to the next edited slot.  True when
        a slot is now held, False when the buffer is exhausted (or more bytes
        are needed)."""
        self._eager = False
        compiled = native.next_slot
        if compiled is not None:  # the loop below, in one call per slot attribute
            edits = self._edits
            while True:
                r = compiled(buf, self._pos, self._opos, self._mpos, final, edits)
                self._pos, self._opos, self._mpos = r[1], r[2], r[3]
                state = r[0]
                if state == "slot":
                    if self._hold(buf, r[6], r[4], r[5], r[7]):
                        return True
                    continue
                if state == "dead":
                    self._pass = True
                elif state == "eager":
                    self._eager = True
                return False
        while True:
            m = native.find_marker(buf, max(self._mpos, self._pos))
            if m < 0:
                self._mpos = max(self._mpos, len(buf) - _TAIL)
                return False
            value = sc.marker_value(buf, m)
            if value is not None and value not in self._edits:
                # A marker of a slot without an edit needs no context check:
                # leaving that slot alone is a no-op wherever it is.
                self._mpos = m + 1
                continue
            state = self._contexts_until(buf, m, final)
            if state == "need":
                return False
            if state == "dead":
                self._pass = True
                return False
            if state == "past":  # the marker is inside a comment or raw text
                self._mpos = max(self._mpos, self._pos)
                continue
            # No context opens before the marker: is it an attribute name?
            t = _tokens_end(buf, self._pos, m)
            if t == m:  # in text
                self._pos = self._opos = m
                self._mpos = m + 1
                continue
            if not buf[t + 1 : t + 2].isalpha():  # in an end tag or a bogus comment
                self._pos, self._opos, self._mpos = t, m, m + 1
                continue
            e = sc.tag_end(buf, t)
            if e is None:
                if final:  # a start tag cut off by EOF is not a tag
                    self._mpos = len(buf)
                    return False
                self._pos = t
                self._eager = True  # the start tag is still arriving
                return False
            if e <= m:  # a tag the token pattern refused (e.g. a raw-text name): not a slot
                self._pos, self._opos, self._mpos = t, m, m + 1
                continue
            self._pos = self._opos = self._mpos = e
            name = sc.slot_attribute(buf, t, e)
            if name is not None and self._hold(buf, name, t, e):
                return True

    def _contexts_until(self, buf: bytearray, limit: int, final: bool) -> str:
        """Skip every comment / raw-text element that opens before ``limit``.

        Returns ``"clear"`` (none left), ``"past"`` (the last one ends after
        ``limit``), ``"need"`` (one is not closed yet; ``_pos`` is its opener),
        or ``"dead"`` (``<plaintext>``: the rest of the page is text).
        """
        compiled = native.contexts_until
        if compiled is not None:
            state, self._pos, self._opos = compiled(buf, self._pos, self._opos, limit, final)
            return state
        search, inside_tag, skip_context = sc.OPENER.search, sc.inside_tag, sc.skip_context
        pos = self._pos
        while True:
            o = search(buf, self._opos, limit)
            if o is None:
                return "clear"
            q = o.start()
            if inside_tag(buf, pos, q):
                self._opos = q + 1
                continue
            text = o.group()
            kind = "!--" if text[1] == 0x21 else text[1:].decode("latin-1").lower()
            if kind == "plaintext":
                return "dead"
            e = skip_context(buf, q, kind, final)
            if e is None:
                self._pos = self._opos = q
                return "need"
            self._pos = self._opos = pos = e
            if e > limit:
                return "past"

    def _hold(self, buf: bytearray, name: str, t: int, e: int, tag: str | None = None) -> bool:
        edit = self._edits.get(name)
        if edit is None or self._base + t in self._skip:
            return False
        if isinstance(edit, Observe):
            # Only its presence matters; its content is scanned as ordinary
            # markup, so slots nested in it are still edited.
            self._note(name, SEEN)
            return False
        if tag is None:
            tag = sc.tag_name(buf, t)
        if tag in sc.VOID_ELEMENTS or sc.is_self_closing(buf, e):
            self._note(name, VOID)
            return False
        if self._charset is None:
            self._note(name, CHARSET)
            return False
        if self._deadline is not None and time.perf_counter() > self._deadline:
            self._note(name, DEADLINE)
            return False
        self._slot = _Held(name, edit, t, e, native.EndFinder(tag, e))
        return True

    def _close(self, buf: bytearray, slot: _Held, q: int, e: int) -> None:
        """The held slot's end tag is ``buf[q:e]``: apply the edit."""
        if self._deadline is not None and time.perf_counter() > self._deadline:
            self._leave(slot, DEADLINE)
            return
        try:
            new = self._apply(slot.name, slot.edit, buf, slot.body, q, slot.children)
        except SortError:
            self._leave(slot, UNSORTABLE)
            return
        except Exception:
            self._leave(slot, FAILED)
            return
        self._out.append(memoryview(buf)[self._emitted : slot.body])
        if type(new) is list:  # views of buf (``sort_parts``)
            self._out += new
        else:
            self._out.append(new)
        self._emitted = q
        self._pos = self._opos = self._mpos = e
        self._note(slot.name, APPLIED)

    def _leave(self, slot: _Held, outcome: str) -> None:
        """Leave ``slot`` as the origin sent it and read its body as markup."""
        self._note(slot.name, outcome)
        self._skip.add(self._base + slot.tag)
        self._pos = self._opos = self._mpos = slot.body

    def _apply(self, name: str, edit: Edit, buf: bytearray, body: int, q: int, children=None) -> bytes | list:
        """The new content of the slot whose content is ``buf[body:q]``: bytes,
        or a list of pieces (views of ``buf``) to send in order."""
        if isinstance(edit, ReplaceInner):
            frag = self._fragments.get(name)
            if frag is None:
                frag = self._fragments[name] = encode_fragment(edit.html, self._charset)
            return frag
        if isinstance(edit, SortChildren):
            encoding = self._charset or "latin-1"
            others = {k: v for k, v in self._edits.items() if k != name}
            if others and native.find_marker(buf, body, q) >= 0:
                inner, inner_outcomes = rewrite_document(
                    bytes(memoryview(buf)[body:q]), others, charset=self._charset, max_slot_bytes=self._cap,
                    deadline=self._deadline,
                )
                for k, v in inner_outcomes.items():
                    if v != ABSENT:
                        self._note(k, v)
                # The extents were of the bytes before.
                return sort_children(inner, edit, encoding=encoding)
            parts = sort_parts(buf, body, q, edit, encoding, children)
            return [memoryview(buf)[body:q]] if parts is None else parts
        raise RewriteError(f"unknown edit {edit!r} for slot {name!r}")

    def _note(self, name: str, outcome: str) -> None:
        if self.outcomes.get(name) != APPLIED:
            self.outcomes[name] = outcome

    # -- buffer management --------------------------------------------------
    def _last_bytes(self) -> bytes:
        """The last ``_TAIL`` bytes fed (fewer at the start)."""
        if self._lazy:
            return self._lazy_tail
        return bytes(self._buf[-_TAIL:])

    def _settle(self) -> None:
        """Copy the lazily kept chunks into ``_buf``."""
        if self._lazy:
            self._buf += b"".join(self._lazy)
            self._lazy.clear()
            self._lazy_n = 0
            self._lazy_tail = b""

    def _drain(self) -> bytes:
        """Output everything that is ready, then drop consumed bytes."""
        buf = self._buf
        limit = self._slot.body if self._slot is not None else len(buf)
        if limit > self._emitted:
            self._out.append(memoryview(buf)[self._emitted : limit])
            self._emitted = limit
        out = b"".join(self._out) if len(self._out) != 1 else bytes(self._out[0])
        self._out = []  # releases the views before _trim resizes the buffer
        self._trim()
        return out

    def _trim(self) -> None:
        keep = min(self._pos, self._emitted)
        if self._slot is not None:
            keep = min(keep, self._slot.tag)
        # The last bytes stay, for the fast path's search across the next
        # chunk's boundary.
        keep = min(keep, len(self._buf) - _TAIL)
        if self._pass:
            keep = self._emitted
        if keep < _TRIM_BYTES and not self._pass:
            return
        if keep <= 0:
            return
        del self._buf[:keep]
        self._base += keep
        self._emitted -= keep
        self._pos -= keep
        self._opos = max(self._opos - keep, 0)
        self._mpos = max(self._mpos - keep, 0)
        if self._slot is not None:
            s = self._slot
            s.tag -= keep
            s.body -= keep
            s.finder.shift(keep)

    def _compact(self) -> None:
        """Scan history that no marker asked for, so it can be dropped."""
        buf = self._buf
        state = self._contexts_until(buf, len(buf), False)
        if state == "dead":
            self._pass = True
            return
        if state == "clear":
            self._opos = max(self._opos, len(buf) - sc.LOOKBACK)
            self._pos = _tokens_end(buf, self._pos, self._opos)
        self._mpos = max(self._mpos, len(buf) - _TAIL)
        self._trim()

    def _fail_open(self) -> bytes:
        """An unexpected error: from here on, the origin's bytes pass through."""
        self._settle()
        if self._slot is not None:
            self._note(self._slot.name, FAILED)
            self._slot = None
        self._pass = True
        out = b"".join(self._out) + bytes(self._buf[self._emitted :])
        self._out = []
        self._emitted = len(self._buf)
        self._buf.clear()
        self._base += self._emitted
        self._emitted = self._pos = self._opos = self._mpos = 0
        return out


def _tokens_end(buf: bytearray, pos: int, endpos: int) -> int:
    """``TOKENS.match(buf, pos, endpos).end()``, by the compiled loop when it
    is active (``native``)."""
    compiled = native.tokens_end
    if compiled is not None:
        return compiled(buf, pos, endpos)
    return sc.TOKENS.match(buf, pos, endpos).end()


def rewrite_document(body: bytes, edits: Mapping[str, Edit], **kw) -> tuple[bytes, dict[str, str]]:
    """Rewrite a whole body at once; returns ``(bytes, outcomes)``.

    Takes the keyword arguments of ``SlotRewriter``.  A body without the
    marker is returned as is (the same object) after one marker search.
    """
    if not edits or native.find_marker(body) < 0:
        return body, {name: ABSENT for name in edits}
    rw = SlotRewriter(edits, **kw)
    out = rw.feed(body)
    out += rw.finish()
    return out, rw.outcomes
