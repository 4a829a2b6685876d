# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The rewriter's byte loop in C: the same answers as ``scanner.py`` and
``sort._walk``, which stay the readable reference (``native.py`` picks one).

Only the loops are here: the end-tag search of a held slot (``EndFinder``,
with ``skip_context`` for comments and raw-text elements and
``element_end`` for ``<template>``) and the split of a sort container into
its top-level element children (``walk_children``).  What to do with what
they find (outcomes, sort keys, escaping, fragments) stays in Python.

Every pattern of ``scanner.py`` that the loops use is a function here, read
as sre reads it (possessive, so a left-to-right loop with no backtracking):

* ``attrs_end``: ``_ATTRS`` (the attribute states after a tag name);
* ``tag_end``: ``START_TAG`` / ``END_TAG`` and the ``>`` after them;
* ``markup_end``: ``MARKUP.match(buf, pos, endpos).end()``;
* ``tokens_end``: ``TOKENS.match(buf, pos, endpos).end()``;
* ``body_search``: ``body_scanner(name).search``.

Every index is checked against the length of the buffer it reads (the
buffer is not resized while a function runs: the GIL is held and nothing
here calls back into Python), so hostile input cannot read out of bounds.
Tag names with bytes above 0x7f are left to the pure module (``native.py``
sends them there), whose patterns treat them in a way not worth copying.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_CheckExact, PyByteArray_GET_SIZE
from libc.string cimport memchr
from libc.math cimport isfinite
from cpython.unicode cimport PyUnicode_Check

cdef extern from "Python.h":
    ctypedef struct PyObject
    double PyOS_string_to_double(const char* s, char** endptr, PyObject* overflow_exception) except? -1.0
    bint PyUnicode_IS_ASCII(object o)
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL

ctypedef unsigned char uchar

# What ``native.py`` expects of this module; a stale build is not used.
API = 5

# ``scanner.RAW_TEXT``, in the same order.
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
_STAY = frozenset({"script", "style", "template", "noscript"})
cdef tuple _RAW_BYTES = tuple(n.encode() for n in RAW_TEXT)
cdef int K_TEMPLATE = 4
cdef int K_PLAINTEXT = 10
# Hit kinds of ``body_search``: >= 0 is a RAW_TEXT index.
cdef int H_NONE = -4
cdef int H_COMMENT = -3
cdef int H_END = -2
cdef int H_START = -1
# ``scanner.LOOKBACK``.
cdef Py_ssize_t LOOKBACK = 16
# Nested <template> elements are followed by recursion; deeper than this
# raises RecursionError (the pure module's limit is Python's, ~300 levels),
# which the rewriter turns into a pass-through.
cdef int MAX_DEPTH = 400


# Byte classes, one table load per byte in the loops below.
cdef enum:
    C_WS = 1        # [\t\n\f\r ]
    C_DELIM = 2     # [\t\n\f\r />]: ends a tag name
    C_NAMESTOP = 4  # [\t\n\f\r />=]: ends an attribute name
    C_ALPHA = 8     # [a-zA-Z]
    C_VALSTOP = 16  # [\t\n\f\r >]: ends an unquoted attribute value
cdef uchar CLS[256]
# Bit i set: RAW_TEXT[i] starts with this byte (in either case).
cdef unsigned int RAW_FIRST[256]


cdef void _init_tables():
    cdef int c
    for c in range(256):
        CLS[c] = 0
        RAW_FIRST[c] = 0
    for c in b"\t\n\x0c\r ":
        CLS[c] |= C_WS | C_DELIM | C_NAMESTOP | C_VALSTOP
    for c in b"/>":
        CLS[c] |= C_DELIM | C_NAMESTOP
    CLS[61] |= C_NAMESTOP  # "="
    CLS[62] |= C_VALSTOP  # ">"
    for c in range(65, 91):
        CLS[c] |= C_ALPHA
        CLS[c + 32] |= C_ALPHA


_init_tables()


cdef inline bint is_ws(uchar c) noexcept nogil:
    return CLS[c] & C_WS


cdef inline bint is_alpha(uchar c) noexcept nogil:
    return CLS[c] & C_ALPHA


cdef inline uchar lower(uchar c) noexcept nogil:
    return c + 32 if c >= 65 and c <= 90 else c


cdef inline bint is_delim(uchar c) noexcept nogil:
    return CLS[c] & C_DELIM


cdef inline Py_ssize_t find_byte(const uchar* b, Py_ssize_t p, Py_ssize_t n, uchar c) noexcept nogil:
    """``buf.find(c, p, n)``."""
    if p < 0:
        p = 0
    if p >= n:
        return -1
    cdef const void* r = memchr(b + p, c, <size_t>(n - p))
    if r == NULL:
        return -1
    return <const uchar*>r - b


cdef const uchar* data_of(object buf, Py_ssize_t* n) except NULL:
    if PyBytes_CheckExact(buf):
        n[0] = PyBytes_GET_SIZE(buf)
        return <const uchar*>PyBytes_AS_STRING(buf)
    if PyByteArray_CheckExact(buf):
        n[0] = PyByteArray_GET_SIZE(buf)
        return <const uchar*>PyByteArray_AS_STRING(buf)
    raise TypeError(f"bytes or bytearray expected, not {type(buf).__name__}")


cdef Py_ssize_t attrs_end(const uchar* b, Py_ssize_t p, Py_ssize_t n) noexcept nogil:
    """``_ATTRS.match(buf, p, n).end()``."""
    cdef Py_ssize_t q, r
    cdef uchar c
    while True:
        while p < n and (CLS[b[p]] & C_DELIM) and b[p] != 62:  # [\t\n\f\r /]*+
            p += 1
        if p >= n:
            return p
        c = b[p]
        if c == 62:  # ">"
            return p
        if c == 61:  # "=(?![\t\n\f\r ]*+[\"'])[^\t\n\f\r />=]*+"
            r = p + 1
            while r < n and is_ws(b[r]):
                r += 1
            if r < n and (b[r] == 34 or b[r] == 39):
                return p
            p += 1
            while p < n and not (CLS[b[p]] & C_NAMESTOP):
                p += 1
            continue
        # A name: [^\t\n\f\r />=]++
        while p < n and not (CLS[b[p]] & C_NAMESTOP):
            p += 1
        # (?:[\t\n\f\r ]*+=[\t\n\f\r ]*+VALUE)?
        q = p
        while q < n and is_ws(b[q]):
            q += 1
        if q < n and b[q] == 61:
            q += 1
            while q < n and is_ws(b[q]):
                q += 1
            if q < n:
                c = b[q]
                if c == 34 or c == 39:
                    r = find_byte(b, q + 1, n, c)
                    if r >= 0:
                        p = r + 1
                elif c == 62:  # (?=>)
                    p = q
                else:  # [^\t\n\f\r >\"'][^\t\n\f\r >]*+
                    p = q + 1
                    while p < n and not (CLS[b[p]] & C_VALSTOP):
                        p += 1


cdef inline Py_ssize_t name_end(const uchar* b, Py_ssize_t p, Py_ssize_t n) noexcept nogil:
    """End of ``[a-zA-Z][^\\t\\n\\f\\r />]*+`` from ``p`` (a letter)."""
    p += 1
    while p < n and not is_delim(b[p]):
        p += 1
    return p


cdef Py_ssize_t tag_match(const uchar* b, Py_ssize_t p, Py_ssize_t n, bint end_tag, Py_ssize_t* nend) noexcept nogil:
    """``START_TAG.match(buf, p)`` (``END_TAG`` with ``end_tag``): its end, or
    -1 when there is no match; ``nend`` gets the end of the name group."""
    cdef Py_ssize_t s = p + 2 if end_tag else p + 1
    if p < 0 or s >= n or b[p] != 60 or (end_tag and b[p + 1] != 47) or not is_alpha(b[s]):
        return -1
    s = name_end(b, s, n)
    nend[0] = s
    return attrs_end(b, s, n)


cdef inline Py_ssize_t tag_end(const uchar* b, Py_ssize_t p, Py_ssize_t n, bint end_tag) noexcept nogil:
    """``scanner.tag_end``: after the ``>`` of the complete tag at ``p``, else -1."""
    cdef Py_ssize_t nend
    cdef Py_ssize_t e = tag_match(b, p, n, end_tag, &nend)
    if e >= 0 and e < n and b[e] == 62:
        return e + 1
    return -1


cdef inline Py_ssize_t end_tag_end(const uchar* b, Py_ssize_t p, Py_ssize_t n) noexcept nogil:
    """Past the "</" at ``p``: the end of an end tag, of "</>", or of a bogus
    comment "</...>"; -1 while it is not all in the buffer."""
    cdef Py_ssize_t r
    if p + 2 >= n:
        return -1
    if is_alpha(b[p + 2]):
        return tag_end(b, p, n, True)
    if b[p + 2] == 62:
        return p + 3
    r = find_byte(b, p + 3, n, 62)
    return -1 if r < 0 else r + 1


cdef Py_ssize_t markup_end(const uchar* b, Py_ssize_t p, Py_ssize_t n) noexcept nogil:
    """``MARKUP.match(buf, p, n).end()``: text and complete tags (no comments)."""
    cdef Py_ssize_t e, r
    cdef uchar d
    if p < 0:
        p = 0
    while p < n:
        if b[p] != 60:  # [^<]++
            r = find_byte(b, p, n, 60)
            p = n if r < 0 else r
            continue
        if p + 1 >= n:  # "<(?![a-zA-Z/!?])" at the end
            return n
        d = b[p + 1]
        if is_alpha(d):
            e = tag_end(b, p, n, False)
            if e < 0:
                return p
            p = e
        elif d == 47:  # "/"
            e = end_tag_end(b, p, n)
            if e < 0:
                return p
            p = e
        elif d == 33:  # "<!(?!--)[^>]*+>"
            if p + 3 < n and b[p + 2] == 45 and b[p + 3] == 45:
                return p
            r = find_byte(b, p + 2, n, 62)
            if r < 0:
                return p
            p = r + 1
        elif d == 63:  # "<\?[^>]*+>"
            r = find_byte(b, p + 2, n, 62)
            if r < 0:
                return p
            p = r + 1
        else:
            p += 1
    return p


cdef inline bint name_at(const uchar* b, Py_ssize_t p, Py_ssize_t n, const uchar* name, Py_ssize_t k) noexcept nogil:
    """``name`` (lower-case ASCII) at ``p`` in any case, then a delimiter."""
    cdef Py_ssize_t j
    if p + k >= n:
        return False
    for j in range(k):
        if lower(b[p + j]) != name[j]:
            return False
    return is_delim(b[p + k])


cdef Py_ssize_t body_search(const uchar* b, Py_ssize_t p, Py_ssize_t n, const uchar* name, Py_ssize_t k,
                            const uchar** raw, Py_ssize_t* rawlen, int* kind) noexcept nogil:
    """``body_scanner(name).search(buf, p)``: the hit's offset (``kind`` says
    what it is: ``H_COMMENT``, ``H_END``, ``H_START`` or a RAW_TEXT index), or
    -1."""
    cdef int r
    cdef unsigned int bits
    cdef uchar c
    while True:
        p = find_byte(b, p, n, 60)
        if p < 0:
            return -1
        if p + 1 < n:
            c = b[p + 1]
            if c == 33:
                if p + 3 < n and b[p + 2] == 45 and b[p + 3] == 45:
                    kind[0] = H_COMMENT
                    return p
            elif c == 47:
                if name_at(b, p + 2, n, name, k):
                    kind[0] = H_END
                    return p
            else:
                bits = RAW_FIRST[c]
                r = 0
                while bits:
                    if (bits & 1) and name_at(b, p + 1, n, raw[r], rawlen[r]):
                        kind[0] = r
                        return p
                    bits >>= 1
                    r += 1
                if name_at(b, p + 1, n, name, k):
                    kind[0] = H_START
                    return p
        p += 1


cdef Py_ssize_t ci_find(const uchar* b, Py_ssize_t p, Py_ssize_t n, const uchar* pat, Py_ssize_t k) noexcept nogil:
    """``bytes(buf[p:n]).lower().find(pat)`` (+ p), for a lower-case ``pat``."""
    cdef Py_ssize_t j
    cdef bint ok
    while p + k <= n:
        ok = True
        for j in range(k):
            if lower(b[p + j]) != pat[j]:
                ok = False
                break
        if ok:
            return p
        p += 1
    return -1


cdef class _Raw:
    """The RAW_TEXT names as C arrays, for ``body_search``."""
    cdef const uchar* names[11]
    cdef Py_ssize_t lens[11]

    def __cinit__(self):
        cdef int i
        cdef uchar c
        for i in range(11):
            self.names[i] = <const uchar*>PyBytes_AS_STRING(_RAW_BYTES[i])
            self.lens[i] = PyBytes_GET_SIZE(_RAW_BYTES[i])
            c = self.names[i][0]
            RAW_FIRST[c] |= 1u << i
            RAW_FIRST[c - 32] |= 1u << i


cdef _Raw RAW = _Raw()


cdef Py_ssize_t closer_end(const uchar* b, Py_ssize_t p, Py_ssize_t n, const uchar* name, Py_ssize_t k) noexcept nogil:
    """Offset of the first ``</name`` + delimiter at or after ``p``, or -1."""
    while True:
        p = find_byte(b, p, n, 60)
        if p < 0:
            return -1
        if p + 1 < n and b[p + 1] == 47 and name_at(b, p + 2, n, name, k):
            return p
        p += 1


# Results of the core loop.
cdef int R_END = 0
cdef int R_NEED = 1
cdef int R_OVER = 2
cdef int R_UNTERMINATED = 3


cdef struct Finder:
    const uchar* name
    Py_ssize_t k
    Py_ssize_t start
    Py_ssize_t pos
    Py_ssize_t tok
    Py_ssize_t depth
    # Where ``markup_end`` last stopped short of a hit (a tag at ``stuck``
    # that did not end before the hit) and where that tag does end in the
    # whole buffer (``stuck_end``, -1 if not within ``stuck_n`` bytes): hits
    # before ``stuck_end`` are inside it without tokenising again, so a tag
    # with an unterminated quote does not make the search quadratic.
    Py_ssize_t stuck
    Py_ssize_t stuck_end
    Py_ssize_t stuck_n


cdef inline void finder_init(Finder* f, const uchar* name, Py_ssize_t k, Py_ssize_t start) noexcept nogil:
    f.name = name
    f.k = k
    f.start = f.pos = f.tok = start
    f.depth = 1
    f.stuck = -1
    f.stuck_end = -1
    f.stuck_n = -1


cdef inline Py_ssize_t still_stuck(Finder* f, Py_ssize_t q, Py_ssize_t n) noexcept nogil:
    """``markup_end(b, f.tok, q)`` when the memo above answers it, else -1."""
    if f.stuck < 0 or f.tok != f.stuck:
        return -1
    if f.stuck_end >= 0:
        return f.stuck if q < f.stuck_end else -1
    return f.stuck if n == f.stuck_n else -1


cdef inline void remember_stuck(Finder* f, const uchar* b, Py_ssize_t t, Py_ssize_t n) noexcept nogil:
    """``markup_end`` stopped at ``t``: remember where that tag ends, if it
    is a tag (a start or end tag whose end, given more bytes, is
    ``tag_end``: a match that ends before some endpos ends there in the
    whole buffer too, so a hit before that end cannot end it)."""
    f.stuck = -1
    if t + 2 < n and b[t] == 60 and (is_alpha(b[t + 1]) or (b[t + 1] == 47 and is_alpha(b[t + 2]))):
        f.stuck = t
        f.stuck_end = tag_end(b, t, n, b[t + 1] == 47)
        f.stuck_n = n


cdef Py_ssize_t skip_context_c(const uchar* b, Py_ssize_t n, Py_ssize_t q, int kind, bint final, int level) except -2:
    """``scanner.skip_context``; ``kind`` is ``H_COMMENT`` or a RAW_TEXT
    index.  -1 for ``None`` (the closer has not arrived)."""
    cdef Py_ssize_t body, r, e, a0, a1
    cdef int res
    cdef Finder f
    if kind == H_COMMENT:
        if q + 4 < n and b[q + 4] == 62:
            return q + 5
        if q + 5 < n and b[q + 4] == 45 and b[q + 5] == 62:
            return q + 6
        r = q + 4
        while True:  # "--!?>"
            r = find_byte(b, r, n, 45)
            if r < 0:
                break
            if r + 2 < n and b[r + 1] == 45 and b[r + 2] == 62:
                return r + 3
            if r + 3 < n and b[r + 1] == 45 and b[r + 2] == 33 and b[r + 3] == 62:
                return r + 4
            r += 1
        return n if final else -1
    if kind == K_PLAINTEXT:
        return n if final else -1
    body = tag_end(b, q, n, False)
    if body < 0:
        return n if final else -1
    if kind == K_TEMPLATE:
        if level >= MAX_DEPTH:
            raise RecursionError("too many nested <template> elements")
        finder_init(&f, RAW.names[K_TEMPLATE], RAW.lens[K_TEMPLATE], body)
        res = run_c(&f, b, n, final, n + 1, level + 1, &a0, &a1)
        if res == R_NEED:
            return -1
        if res == R_END:
            return a1
        return n
    r = closer_end(b, body, n, RAW.names[kind], RAW.lens[kind])
    if r < 0:
        return n if final else -1
    e = tag_end(b, r, n, True)
    if e < 0:
        return n if final else -1
    return e


cdef int run_c(Finder* f, const uchar* b, Py_ssize_t n, bint final, Py_ssize_t cap, int level,
               Py_ssize_t* out0, Py_ssize_t* out1) except -1:
    """``scanner.EndFinder.run`` on the state ``f``."""
    cdef Py_ssize_t limit = f.start + cap
    cdef Py_ssize_t q, t, e
    cdef int kind
    if f.pos < 0:
        f.pos = 0
    if f.tok < 0:
        f.tok = 0
    while True:
        q = body_search(b, f.pos, n, f.name, f.k, RAW.names, RAW.lens, &kind)
        if q < 0:
            if final:
                return R_UNTERMINATED
            if n - LOOKBACK > f.pos:
                f.pos = n - LOOKBACK
            return R_OVER if f.pos > limit else R_NEED
        if q > limit:
            return R_OVER
        # A hit inside another tag is not a tag: tokenise from the last
        # point between tokens to make sure.
        t = still_stuck(f, q, n)
        if t < 0:
            t = markup_end(b, f.tok, q)
            if t != q:
                remember_stuck(f, b, t, n)
        if t != q:
            f.tok = t
            f.pos = q + 1
            continue
        if kind == H_END:
            e = tag_end(b, q, n, True)
            if e < 0:
                if final:
                    return R_UNTERMINATED
                f.pos = q
                return R_NEED
            f.depth -= 1
            if f.depth == 0:
                out0[0] = q
                out1[0] = e
                return R_END
            f.pos = f.tok = e
            continue
        if kind == H_START:  # a nested start tag of the same name
            e = tag_end(b, q, n, False)
            if e < 0:
                if final:
                    return R_UNTERMINATED
                f.pos = q
                return R_NEED
            f.depth += 1
            f.pos = f.tok = e
            continue
        e = skip_context_c(b, n, q, kind, final, level)
        if e < 0:
            f.pos = q
            return R_NEED
        if e >= n and final:
            return R_UNTERMINATED
        f.pos = f.tok = e


cdef bytes ascii_name(str name):
    if not name.isascii():
        raise ValueError(f"tag name {name!r} is not ASCII: use scanner.EndFinder")
    return name.lower().encode("ascii")


cdef class EndFinder:
    """``scanner.EndFinder`` in C: the same constructor, attributes,
    ``shift`` and ``run`` results, for an ASCII ``name``."""

    cdef readonly str name
    cdef bytes _lname
    cdef Finder f

    def __init__(self, str name, Py_ssize_t start):
        self.name = name
        self._lname = ascii_name(name)
        finder_init(&self.f, <const uchar*>PyBytes_AS_STRING(self._lname), PyBytes_GET_SIZE(self._lname), start)

    @property
    def start(self):
        return self.f.start

    @property
    def pos(self):
        return self.f.pos

    @property
    def tok(self):
        return self.f.tok

    @property
    def depth(self):
        return self.f.depth

    def shift(self, Py_ssize_t n):
        self.f.start -= n
        self.f.pos -= n
        self.f.tok -= n
        self.f.stuck = -1

    def run(self, buf, bint final, Py_ssize_t cap):
        cdef Py_ssize_t n, a0 = 0, a1 = 0
        cdef const uchar* b = data_of(buf, &n)
        cdef int r = run_c(&self.f, b, n, final, cap, 0, &a0, &a1)
        if r == R_END:
            return ("end", a0, a1)
        if r == R_NEED:
            return ("need",)
        if r == R_OVER:
            return ("over",)
        return ("unterminated",)


cdef int kind_of(str kind) except -2:
    if kind == "!--":
        return H_COMMENT
    return RAW_TEXT.index(kind)


def skip_context(buf, Py_ssize_t q, str kind, bint final):
    """``scanner.skip_context``."""
    cdef Py_ssize_t n
    cdef const uchar* b = data_of(buf, &n)
    if q < 0 or q >= n:
        raise ValueError("q must be the offset of an opener in buf")
    cdef Py_ssize_t e = skip_context_c(b, n, q, kind_of(kind), final, 0)
    return None if e < 0 else e


cdef int element_end_c(const uchar* b, Py_ssize_t n, Py_ssize_t body, const uchar* name, Py_ssize_t k, bint final,
                       Py_ssize_t* q, Py_ssize_t* e) except -1:
    cdef Finder f
    finder_init(&f, name, k, body)
    return run_c(&f, b, n, final, n + 1, 0, q, e)


def element_end(buf, Py_ssize_t body, str name, bint final):
    """``scanner.element_end`` for an ASCII ``name``."""
    cdef Py_ssize_t n, q = 0, e = 0
    cdef const uchar* b = data_of(buf, &n)
    cdef bytes lname = ascii_name(name)
    cdef int r = element_end_c(b, n, body, <const uchar*>PyBytes_AS_STRING(lname), len(lname), final, &q, &e)
    if r == R_END:
        return q, e
    if r == R_NEED:
        return None
    return None, n


def walk_children(buf, Py_ssize_t base, str stop):
    """``sort._walk`` as data: ``("ok", elements, spans, end_tag)``, or
    ``("need", offset, elements, spans)`` (``_Need``: resume at ``offset``),
    ``("unknown",)`` (``_Unknown``), ``("stray", offset)``,
    ``("unterminated", offset)``, ``("no-end", name, offset)`` (the
    ``SortError``\\ s, offsets as ``_walk`` words them), or ``("pure",)``
    when a tag name is not ASCII (run ``sort._walk`` instead)."""
    cdef Py_ssize_t n
    cdef const uchar* b = data_of(buf, &n)
    cdef bint final = stop is None
    cdef bytes opener = b"", closer = b""
    cdef const uchar* sname = NULL
    cdef Py_ssize_t sk = 0
    if stop is not None:
        if not stop.isascii():
            return ("pure",)
        opener = b"<" + stop.encode("ascii")
        closer = b"</" + stop.encode("ascii")
        sname = <const uchar*>PyBytes_AS_STRING(opener) + 1
        sk = len(opener) - 1
    cdef list els = [], spans = []
    cdef object end_tag = None
    cdef Py_ssize_t pos = base, lt, gt, nend, end, el_end, fq, fe, j
    cdef uchar nxt
    cdef int r, kind
    cdef bytes bname
    cdef str name
    if pos < 0:
        pos = 0
    while True:
        lt = find_byte(b, pos, n, 60)
        if lt < 0:
            if not final:
                return ("need", pos, els, spans)
            break
        if lt + 1 >= n:
            if not final:
                return ("need", lt, els, spans)
            pos = lt + 1
            continue
        nxt = b[lt + 1]
        if nxt == 33 and lt + 3 < n and b[lt + 2] == 45 and b[lt + 3] == 45:  # <!--
            pos = skip_context_c(b, n, lt, H_COMMENT, final, 0)
            if pos < 0 or (not final and pos >= n):
                return ("need", lt, els, spans)
            continue
        if nxt == 33 or nxt == 63:  # <! <?
            gt = find_byte(b, lt, n, 62)
            if gt < 0 and not final:
                return ("need", lt, els, spans)
            pos = n if gt < 0 else gt + 1
            continue
        if nxt == 47:  # </
            if lt + 2 < n and is_alpha(b[lt + 2]):
                if stop is not None:
                    gt = tag_match(b, lt, n, True, &nend)
                    if gt >= n or b[gt] != 62:  # not complete yet
                        return ("need", lt, els, spans)
                    if nend - lt - 2 == sk and ci_find(b, lt + 2, nend, sname, sk) == lt + 2:
                        end_tag = (lt, gt + 1)
                        break
                    return ("unknown",)
                return ("stray", lt)
            gt = find_byte(b, lt, n, 62)
            if gt < 0 and not final:
                return ("need", lt, els, spans)
            pos = n if gt < 0 else gt + 1
            continue
        if not is_alpha(nxt):
            pos = lt + 1
            continue
        gt = tag_match(b, lt, n, False, &nend)
        if gt >= n or b[gt] != 62:
            if not final:
                return ("need", lt, els, spans)
            return ("unterminated", lt - base)
        for j in range(lt + 1, nend):
            if b[j] >= 128:
                return ("pure",)
        bname = (<const char*>b)[lt + 1 : nend].lower()
        name = bname.decode("ascii")
        end = gt + 1
        if stop is not None and name == stop and name in RAW_TEXT:
            return ("unknown",)
        if name in RAW_TEXT:
            kind = RAW_TEXT.index(name)
            if not final and kind == K_PLAINTEXT:
                return ("unknown",)
            pos = skip_context_c(b, n, lt, kind, final, 0)
            if pos < 0 or (not final and pos >= n):
                return ("need", lt, els, spans)
            if name in _STAY or kind == K_PLAINTEXT:
                continue
            el_end = pos
        elif name in VOID_ELEMENTS:
            el_end = end
        else:
            r = element_end_c(b, n, end, <const uchar*>PyBytes_AS_STRING(bname), len(bname), final, &fq, &fe)
            if r != R_END:
                if not final:
                    return ("need", lt, els, spans)
                return ("no-end", name, lt - base)
            el_end = fe
        if stop is not None and name != stop:
            # The exact path would have read this child with the parent's
            # end finder, which reacts to <stop> and </stop> only.
            if ci_find(b, end, el_end, <const uchar*>PyBytes_AS_STRING(opener), len(opener)) >= 0:
                return ("unknown",)
            if ci_find(b, end, el_end, <const uchar*>PyBytes_AS_STRING(closer), len(closer)) >= 0:
                return ("unknown",)
        els.append((lt, el_end))
        spans.append((nend, gt))
        pos = el_end
    return ("ok", els, spans, end_tag)


def attr_values(buf, list spans, tuple names, tuple keys, bint ascii_same):
    """For each ``(lo, hi)`` attribute span of a start tag (``walk_children``'s
    spans), a dict ``{key: value}`` of the attributes ``names`` (lower-case
    bytes; ``keys`` are their dict keys, in the same order) it has, the first
    occurrence winning: what ``sort._attrs`` reads with
    ``ATTR.findall(buf, lo, hi)``.

    A value is the raw bytes as written (quotes included, ``b""`` for none),
    for ``scanner.attr_value`` to decode; or, when ``ascii_same`` (the page
    encoding decodes every ASCII byte to itself) and the value is ASCII with
    no ``&`` (nothing to decode or unescape), already its text.  Returns
    ``(dicts, all_text)``, ``all_text`` when no raw bytes are left."""
    cdef Py_ssize_t n, lo, hi, p, ns, ne, q, vs, ve, r, j, i, k = len(names)
    cdef const uchar* b = data_of(buf, &n)
    cdef list out = []
    cdef dict row
    cdef bytes want
    cdef const uchar* w
    cdef Py_ssize_t wl
    cdef uchar c
    cdef bint text
    cdef bint all_text = True
    cdef unsigned int done
    if k != len(keys) or k > 32:
        raise ValueError("names and keys must be two tuples of the same length, at most 32")
    for span in spans:
        lo, hi = span
        if lo < 0:
            lo = 0
        if hi > n:
            hi = n
        row = {}
        done = 0
        p = lo
        while p < hi and len(row) < k:
            c = b[p]
            if is_delim(c):
                p += 1
                continue
            # ([^\t\n\f\r />=][^\t\n\f\r />=]*+|=[^\t\n\f\r />=]*+)
            ns = p
            p += 1
            while p < hi and not (CLS[b[p]] & C_NAMESTOP):
                p += 1
            ne = p
            vs = ve = -1
            # (?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(VALUE))?
            q = p
            while q < hi and is_ws(b[q]):
                q += 1
            if q < hi and b[q] == 61:
                q += 1
                while q < hi and is_ws(b[q]):
                    q += 1
                if q < hi:
                    c = b[q]
                    if c == 34 or c == 39:
                        r = find_byte(b, q + 1, hi, c)
                        if r >= 0:
                            vs, ve = q, r + 1
                    elif c == 62:  # (?=>): an empty value
                        vs = ve = q
                    else:
                        r = q + 1
                        while r < hi and not (CLS[b[r]] & C_VALSTOP):
                            r += 1
                        vs, ve = q, r
            if vs >= 0:
                p = ve
            for i in range(k):
                if done & (1u << i):
                    continue
                want = names[i]
                w = <const uchar*>PyBytes_AS_STRING(want)
                wl = PyBytes_GET_SIZE(want)
                if wl != ne - ns:
                    continue
                for j in range(wl):
                    if lower(b[ns + j]) != w[j]:
                        break
                else:
                    done |= 1u << i
                    if vs < 0:
                        row[keys[i]] = ""
                        break
                    if ve > vs and (b[vs] == 34 or b[vs] == 39):
                        q, r = vs + 1, ve - 1
                    else:
                        q, r = vs, ve
                    text = ascii_same
                    j = q
                    while text and j < r:
                        c = b[j]
                        text = c < 128 and c != 38 and c != 27  # not "&", not ESC
                        j += 1
                    if text:
                        row[keys[i]] = (<const char*>b)[q:r].decode("ascii")
                    else:
                        row[keys[i]] = (<const char*>b)[vs:ve]
                        all_text = False
                    break
        out.append(row)
    return out, all_text


cdef Py_ssize_t opener_search(const uchar* b, Py_ssize_t p, Py_ssize_t lim, int* kind) noexcept nogil:
    """``scanner.OPENER.search(buf, p, lim)``: ``<!--`` or ``<`` and a
    RAW_TEXT name and a delimiter, all before ``lim``; -1 if none."""
    cdef int r
    cdef unsigned int bits
    cdef uchar c
    while True:
        p = find_byte(b, p, lim, 60)
        if p < 0:
            return -1
        if p + 1 < lim:
            c = b[p + 1]
            if c == 33:
                if p + 3 < lim and b[p + 2] == 45 and b[p + 3] == 45:
                    kind[0] = H_COMMENT
                    return p
            else:
                bits = RAW_FIRST[c]
                r = 0
                while bits:
                    if (bits & 1) and name_at(b, p + 1, lim, RAW.names[r], RAW.lens[r]):
                        kind[0] = r
                        return p
                    bits >>= 1
                    r += 1
        p += 1


cdef bint inside_tag_c(const uchar* b, Py_ssize_t n, Py_ssize_t lo, Py_ssize_t q) noexcept nogil:
    """``scanner.inside_tag``."""
    cdef Py_ssize_t l = q - 1, e, nend
    if lo < 0:
        lo = 0
    while l >= lo and b[l] != 60:
        l -= 1
    if l < lo:
        return False
    e = tag_match(b, l, n, l + 1 < n and b[l + 1] == 47, &nend)
    if e < 0:
        if l + 1 < n and (b[l + 1] == 33 or b[l + 1] == 63 or b[l + 1] == 47):
            return find_byte(b, l, q, 62) < 0
        return False
    if e >= n or b[e] != 62:
        return True
    return e >= q


def contexts_until(buf, Py_ssize_t pos, Py_ssize_t opos, Py_ssize_t limit, bint final):
    """``SlotRewriter._contexts_until`` on its ``_pos`` and ``_opos``:
    ``(state, pos, opos)``, ``state`` one of ``"clear"``, ``"past"``,
    ``"need"``, ``"dead"``."""
    cdef Py_ssize_t n, q, e
    cdef int kind
    cdef const uchar* b = data_of(buf, &n)
    if limit > n:
        limit = n
    while True:
        q = opener_search(b, opos, limit, &kind)
        if q < 0:
            return ("clear", pos, opos)
        if inside_tag_c(b, n, pos, q):
            opos = q + 1
            continue
        if kind == K_PLAINTEXT:
            return ("dead", pos, opos)
        e = skip_context_c(b, n, q, kind, final, 0)
        if e < 0:
            return ("need", q, q)
        pos = opos = e
        if e > limit:
            return ("past", pos, opos)


cdef Py_ssize_t comment_token_end(const uchar* b, Py_ssize_t p, Py_ssize_t n) noexcept nogil:
    """After ``TOKENS``' comment alternative at ``p`` (a ``<!--``):
    ``<!--(?:>|->|(?:[^-]++|-(?!-!?>))*+--!?>)``; -1 when it does not match
    before ``n``."""
    cdef Py_ssize_t q
    if p + 4 < n and b[p + 4] == 62:  # <!-->
        return p + 5
    if p + 5 < n and b[p + 4] == 45 and b[p + 5] == 62:  # <!--->
        return p + 6
    q = p + 4
    while True:
        # The loop stops at the first "-" followed by "->" or "-!>".
        q = find_byte(b, q, n, 45)
        if q < 0:
            return -1
        if q + 2 < n and b[q + 1] == 45:
            if b[q + 2] == 62:
                return q + 3
            if b[q + 2] == 33 and q + 3 < n and b[q + 3] == 62:
                return q + 4
        q += 1


cdef Py_ssize_t tokens_end_c(const uchar* b, Py_ssize_t p, Py_ssize_t n) noexcept nogil:
    """``markup_end`` with ``TOKENS``' two differences: a comment is a
    token, and a start tag named like a raw-text element (then a delimiter)
    stops the match."""
    cdef Py_ssize_t e, r
    cdef uchar d
    cdef unsigned int bits
    cdef int k
    while p < n:
        if b[p] != 60:  # [^<]++
            r = find_byte(b, p, n, 60)
            p = n if r < 0 else r
            continue
        if p + 1 >= n:  # "<(?![a-zA-Z/!?])" at the end
            return n
        d = b[p + 1]
        if is_alpha(d):
            bits = RAW_FIRST[d]
            k = 0
            while bits:
                if (bits & 1) and name_at(b, p + 1, n, RAW.names[k], RAW.lens[k]):
                    return p
                bits >>= 1
                k += 1
            e = tag_end(b, p, n, False)
            if e < 0:
                return p
            p = e
        elif d == 47:  # "/"
            e = end_tag_end(b, p, n)
            if e < 0:
                return p
            p = e
        elif d == 33:
            if p + 3 < n and b[p + 2] == 45 and b[p + 3] == 45:
                e = comment_token_end(b, p, n)
                if e < 0:
                    return p
                p = e
                continue
            r = find_byte(b, p + 2, n, 62)  # "<!(?!--)[^>]*+>"
            if r < 0:
                return p
            p = r + 1
        elif d == 63:  # "<\\?[^>]*+>"
            r = find_byte(b, p + 2, n, 62)
            if r < 0:
                return p
            p = r + 1
        else:
            p += 1
    return p


def tokens_end(buf, Py_ssize_t pos, Py_ssize_t endpos):
    """``scanner.TOKENS.match(buf, pos, endpos).end()`` (offsets clamped as
    sre clamps them): how far text and complete tags run from ``pos``, for
    telling a marker inside a start tag from one in text."""
    cdef Py_ssize_t n
    cdef const uchar* b = data_of(buf, &n)
    if pos < 0:
        pos = 0
    elif pos > n:
        pos = n
    if endpos > n:
        endpos = n
    if endpos <= pos:
        return pos
    return tokens_end_c(b, pos, endpos)


cdef inline bint is_py_space(uchar c) noexcept nogil:
    """``str.isspace`` of an ASCII character."""
    return c == 32 or (9 <= c <= 13) or (28 <= c <= 31)


cdef inline bint is_digit(uchar c) noexcept nogil:
    return 48 <= c <= 57


cdef int plain_number(const uchar* s, Py_ssize_t n, double* out) except -2:
    """``sort._number`` of the ASCII text ``s[:n]``: 1 and ``out`` for a
    finite number, 0 for none.  The text, stripped, must fully match
    ``[+-]?(?:\\d+(?:\\.\\d*)?|\\.\\d+)(?:[eE][+-]?\\d+)?`` (the digits are ASCII here);
    ``float()`` reads it as ``PyOS_string_to_double`` does."""
    cdef Py_ssize_t a = 0, b = n, p, d
    cdef char buf[72]
    cdef double x
    while a < b and is_py_space(s[a]):
        a += 1
    while b > a and is_py_space(s[b - 1]):
        b -= 1
    p = a
    if p < b and (s[p] == 43 or s[p] == 45):
        p += 1
    d = p
    while p < b and is_digit(s[p]):
        p += 1
    if p > d:
        if p < b and s[p] == 46:
            p += 1
            while p < b and is_digit(s[p]):
                p += 1
    else:
        if not (p < b and s[p] == 46):
            return 0
        p += 1
        d = p
        while p < b and is_digit(s[p]):
            p += 1
        if p == d:
            return 0
    if p < b and (s[p] == 101 or s[p] == 69):
        p += 1
        if p < b and (s[p] == 43 or s[p] == 45):
            p += 1
        d = p
        while p < b and is_digit(s[p]):
            p += 1
        if p == d:
            return 0
    if p != b:
        return 0
    if b - a >= 72:
        return -1  # long: let float() read it
    for p in range(b - a):
        buf[p] = <char>s[a + p]
    buf[b - a] = 0
    x = PyOS_string_to_double(buf, NULL, NULL)
    if not isfinite(x):
        return 0
    out[0] = x
    return 1


def attr_key(list values, bint descending):
    """``sort._attr_key(values, descending)`` when at least one value is a
    number and every value is ASCII text or ``None``; else ``None`` (the
    pure function answers: text keys, other scripts' digits)."""
    cdef Py_ssize_t i, n = len(values), size
    cdef const char* s
    cdef double x
    cdef int r
    cdef list nums = [None] * n
    cdef bint any_number = False
    cdef object v
    for i in range(n):
        v = values[i]
        if v is None:
            continue
        if not PyUnicode_Check(v) or not PyUnicode_IS_ASCII(v):
            return None
        s = PyUnicode_AsUTF8AndSize(v, &size)
        r = plain_number(<const uchar*>s, size, &x)
        if r < 0:
            return None
        if r:
            nums[i] = -x if descending else x
            any_number = True
    if not any_number:
        return None
    return [(1,) if x_ is None else (0, x_) for x_ in nums]
