# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The rewriter's byte loop in C: the same answers as ``scanner.py`` and
``sort._walk``, which stay the readable reference (``native.py`` picks one).

Only the loops are here: the marker search (``find_marker``, by
``memmem``) and the scan from a marker to the slot's start tag
(``next_slot``: the marker's value, the comments and raw-text elements
before it, the token run, the slot attribute); the end-tag search of a held
slot (``EndFinder``: ``fast_run`` reads the tags in one pass, with
``skip_context`` for comments and raw-text elements and ``element_end`` for
``<template>``); the split of a sort container into its top-level element
children (``walk_children``) and its new body once sorted (``sort_body``:
the key attributes, the keys, a stable merge sort, one copy).  What to do
with what they find (outcomes, which edit, escaping, fragments) stays in
Python.

Every pattern of ``scanner.py`` that the loops use is a function here, read
as sre reads it (possessive, so a left-to-right loop with no backtracking):

* ``attrs_end``: ``_ATTRS`` (the attribute states after a tag name);
* ``tag_end``: ``START_TAG`` / ``END_TAG`` and the ``>`` after them;
* ``markup_end``: ``MARKUP.match(buf, pos, endpos).end()``;
* ``tokens_end``: ``TOKENS.match(buf, pos, endpos).end()``;
* ``body_search``: ``body_scanner(name).search``.

Every index is checked against the length of the buffer it reads, so
hostile input cannot read out of bounds.  The buffer is not resized while a
loop runs: the GIL is held, and where a call may run Python code (decoding a
value with ``html.unescape``, an allocation that starts a collection) the
pointer is fetched again and the length checked (``same_buffer``).
Tag names with bytes above 0x7f are left to the pure module (``native.py``
sends them there), whose patterns treat them in a way not worth copying.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_CheckExact, PyByteArray_GET_SIZE
from libc.string cimport memchr, memcpy
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.math cimport isfinite
from cpython.unicode cimport PyUnicode_Check

cdef extern from "Python.h":
    ctypedef struct PyObject
    double PyOS_string_to_double(const char* s, char** endptr, PyObject* overflow_exception) except? -1.0
    bint PyUnicode_IS_ASCII(object o)
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL

cdef extern from *:
    """
    #include <string.h>
    #if defined(_WIN32)
    /* No memmem: the first byte by memchr, the rest by memcmp. */
    static void *edge_memmem(const void *h, size_t hn, const void *nd, size_t nn) {
        const char *p = (const char *)h, *end = p + hn;
        if (nn == 0) return (void *)p;
        while ((size_t)(end - p) >= nn) {
            p = (const char *)memchr(p, *(const char *)nd, (size_t)(end - p) - nn + 1);
            if (p == NULL) return NULL;
            if (memcmp(p, nd, nn) == 0) return (void *)p;
            p++;
        }
        return NULL;
    }
    #else
    #define edge_memmem memmem
    #endif
    """
    void* edge_memmem(const void* h, size_t hn, const void* nd, size_t nn) nogil

ctypedef unsigned char uchar

from html import unescape as _unescape

# What ``native.py`` expects of this module; a stale build is not used.
API = 6

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
cdef tuple _RAW_BYTES = tuple(n.encode() for n in RAW_TEXT)
cdef int K_SCRIPT = 0
cdef int K_STYLE = 1
cdef int K_TEMPLATE = 4
cdef int K_NOSCRIPT = 6
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


cdef const uchar* same_buffer(object buf, Py_ssize_t n) except NULL:
    """``buf``'s bytes again after a call that may have run Python code (and
    so let another thread run): the same length, or an error rather than a
    read out of bounds."""
    cdef Py_ssize_t now
    cdef const uchar* b = data_of(buf, &now)
    if now != n:
        raise RuntimeError("the buffer changed size while it was being scanned")
    return b


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


cdef bint holds_tag_name(const uchar* b, Py_ssize_t p, Py_ssize_t n, const uchar* name, Py_ssize_t k) noexcept nogil:
    """``b[p:n]``, lower-cased, holds ``"<" + name`` or ``"</" + name``
    (``name`` lower-case): the two ``find``\\ s of ``sort._walk_pure`` in one
    pass."""
    while True:
        p = find_byte(b, p, n - k, 60)
        if p < 0:
            return False
        if same_ci(b + p + 1, name, k):
            return True
        if b[p + 1] == 47 and p + 2 + k <= n and same_ci(b + p + 2, name, k):
            return True
        p += 1


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

cdef tuple _VOID_BYTES = tuple(sorted(v.encode() for v in VOID_ELEMENTS))


cdef class _Void:
    """``VOID_ELEMENTS`` as C arrays, for ``is_void``."""
    cdef const uchar* names[18]
    cdef Py_ssize_t lens[18]

    def __cinit__(self):
        cdef int i
        assert len(_VOID_BYTES) == 18
        for i in range(18):
            self.names[i] = <const uchar*>PyBytes_AS_STRING(_VOID_BYTES[i])
            self.lens[i] = PyBytes_GET_SIZE(_VOID_BYTES[i])


cdef _Void VOID = _Void()


cdef bint is_void(const uchar* b, Py_ssize_t s, Py_ssize_t e) noexcept:
    """The tag name ``b[s:e]`` (any case) is one of ``VOID_ELEMENTS``."""
    cdef int i
    for i in range(18):
        if VOID.lens[i] == e - s and same_ci(b + s, VOID.names[i], e - s):
            return True
    return False


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


cdef inline bint same_ci(const uchar* s, const uchar* name, Py_ssize_t k) noexcept nogil:
    """``s[:k]`` is the lower-case ASCII ``name`` in any case."""
    cdef Py_ssize_t j
    for j in range(k):
        if lower(s[j]) != name[j]:
            return False
    return True


cdef inline int raw_kind(const uchar* b, Py_ssize_t s, Py_ssize_t e) noexcept nogil:
    """The RAW_TEXT index of the tag name ``b[s:e]`` (any case), else H_NONE."""
    cdef unsigned int bits = RAW_FIRST[b[s]]
    cdef int r = 0
    while bits:
        if (bits & 1) and RAW.lens[r] == e - s and same_ci(b + s, RAW.names[r], e - s):
            return r
        bits >>= 1
        r += 1
    return H_NONE


cdef int R_HANDOFF = 4


cdef int fast_run(Finder* f, const uchar* b, Py_ssize_t n, bint final, Py_ssize_t limit, int level,
                  Py_ssize_t* out0, Py_ssize_t* out1) except -1:
    """``run_c`` from ``f.pos``, a point between tokens, in one pass: each
    ``<`` is read once, as the token it starts (a tag is skipped whole by
    ``tag_end``), instead of ``body_search`` finding the next hit and
    ``markup_end`` re-reading every tag before it to check that the hit is
    not inside one.  The hits it meets are exactly the ones the two-pass loop
    would find to be real, in the same order, so it answers as that loop
    does; it hands back (``R_HANDOFF``, ``f.pos == f.tok`` at a point
    between tokens) whenever the two-pass loop's answer could depend on a
    hit *inside* a token: a token not complete in the buffer, one that runs
    past ``limit`` (the two-pass loop answers ``"over"`` at the first hit past
    ``limit``, wherever it is), or the end of the buffer.  It hands back the
    state the two-pass loop has after the last real hit (``hit``), whose
    ``pos`` decides ``"over"`` when no hit follows: the stretch after it is
    read again by that loop, so no more than once."""
    cdef Py_ssize_t p = f.pos, hit = f.pos, lt, ne, e, r
    cdef int kind
    cdef uchar c
    while True:
        lt = find_byte(b, p, n, 60)
        if lt < 0 or lt > limit or lt + 3 >= n:
            break
        c = b[lt + 1]
        if is_alpha(c):
            ne = name_end(b, lt + 1, n)
            if ne >= n:
                p = lt
                break
            kind = raw_kind(b, lt + 1, ne)
            if kind >= 0:  # a raw-text element or <template>: skipped
                e = skip_context_c(b, n, lt, kind, final, level)
                if e < 0:
                    f.pos = f.tok = lt
                    f.stuck = -1
                    return R_NEED
                if e >= n and final:
                    return R_UNTERMINATED
                p = hit = e
                continue
            e = attrs_end(b, ne, n)
            e = e + 1 if e < n and b[e] == 62 else -1
            if ne - lt - 1 == f.k and same_ci(b + lt + 1, f.name, f.k):  # a nested start tag of the name
                if e < 0:
                    if final:
                        return R_UNTERMINATED
                    f.pos = f.tok = lt
                    f.stuck = -1
                    return R_NEED
                f.depth += 1
                p = hit = e
                continue
            if e < 0 or e > limit:
                p = lt
                break
            p = e
            continue
        if c == 47:  # "</"
            if is_alpha(b[lt + 2]):
                e = tag_end(b, lt, n, True)
                ne = name_end(b, lt + 2, n)
                if ne < n and ne - lt - 2 == f.k and same_ci(b + lt + 2, f.name, f.k):  # the end tag of the name
                    if e < 0:
                        if final:
                            return R_UNTERMINATED
                        f.pos = f.tok = lt
                        f.stuck = -1
                        return R_NEED
                    f.depth -= 1
                    if f.depth == 0:
                        out0[0] = lt
                        out1[0] = e
                        return R_END
                    p = hit = e
                    continue
            else:
                e = end_tag_end(b, lt, n)
            if e < 0 or e > limit:
                p = lt
                break
            p = e
            continue
        if c == 33 and b[lt + 2] == 45 and b[lt + 3] == 45:  # "<!--"
            e = skip_context_c(b, n, lt, H_COMMENT, final, level)
            if e < 0:
                f.pos = f.tok = lt
                f.stuck = -1
                return R_NEED
            if e >= n and final:
                return R_UNTERMINATED
            p = hit = e
            continue
        if c == 33 or c == 63:  # "<!...>", "<?...>"
            r = find_byte(b, lt + 2, n, 62)
            if r < 0 or r >= limit:
                p = lt
                break
            p = r + 1
            continue
        p = lt + 1  # a "<" in text
    f.pos = f.tok = hit
    f.stuck = -1
    return R_HANDOFF


cdef int run_c(Finder* f, const uchar* b, Py_ssize_t n, bint final, Py_ssize_t cap, int level,
               Py_ssize_t* out0, Py_ssize_t* out1) except -1:
    """``scanner.EndFinder.run`` on the state ``f``: ``fast_run`` from a
    point between tokens, the two-pass loop below (``body_search``, then
    ``markup_end`` to check the hit) where it hands back."""
    cdef Py_ssize_t limit = f.start + cap
    cdef Py_ssize_t q, t, e
    cdef int kind
    if f.pos < 0:
        f.pos = 0
    if f.tok < 0:
        f.tok = 0
    while True:
        if f.pos == f.tok:
            kind = fast_run(f, b, n, final, limit, level, out0, out1)
            if kind != R_HANDOFF:
                return kind
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


def walk_children(buf, Py_ssize_t base, str stop, Py_ssize_t origin=0):
    """``sort._walk`` as data: ``("ok", elements, spans, end_tag)``, or
    ``("need", offset, elements, spans)`` (``_Need``: resume at ``offset``),
    ``("unknown",)`` (``_Unknown``), ``("stray", offset)``,
    ``("unterminated", offset)``, ``("no-end", name, offset)`` (the
    ``SortError``\\ s, offsets as ``_walk`` words them), or ``("pure",)``
    when a tag name is not ASCII (run ``sort._walk`` instead).  The
    elements' and spans' offsets are relative to ``origin``; the others
    are not."""
    cdef Py_ssize_t n
    cdef const uchar* b = data_of(buf, &n)
    cdef bint final = stop is None
    cdef bytes opener = b""
    cdef const uchar* sname = NULL
    cdef Py_ssize_t sk = 0
    if stop is not None:
        if not stop.isascii():
            return ("pure",)
        opener = b"<" + stop.encode("ascii")
        sname = <const uchar*>PyBytes_AS_STRING(opener) + 1
        sk = len(opener) - 1
    cdef list els = [], spans = []
    cdef object end_tag = None
    cdef Py_ssize_t pos = base, lt, gt, nend, end, el_end, fq, fe, j
    cdef uchar nxt
    cdef int r, kind
    cdef bytes bname
    cdef Py_ssize_t nl
    cdef bint is_stop
    cdef uchar lname[64]
    cdef const uchar* lptr
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
                    if nend - lt - 2 == sk and same_ci(b + lt + 2, sname, sk):
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
        # The child's name, classified in C: no str per child.
        nl = nend - lt - 1
        end = gt + 1
        kind = raw_kind(b, lt + 1, nend)
        is_stop = sk > 0 and nl == sk and same_ci(b + lt + 1, sname, sk)
        if is_stop and kind >= 0:
            return ("unknown",)
        if kind >= 0:
            if not final and kind == K_PLAINTEXT:
                return ("unknown",)
            pos = skip_context_c(b, n, lt, kind, final, 0)
            if pos < 0 or (not final and pos >= n):
                return ("need", lt, els, spans)
            if kind == K_SCRIPT or kind == K_STYLE or kind == K_TEMPLATE or kind == K_NOSCRIPT or kind == K_PLAINTEXT:
                continue
            el_end = pos
        elif is_void(b, lt + 1, nend):
            el_end = end
        else:
            if nl <= 64:
                for j in range(nl):
                    lname[j] = lower(b[lt + 1 + j])
                lptr = lname
            else:
                bname = (<const char*>b)[lt + 1 : nend].lower()
                lptr = <const uchar*>PyBytes_AS_STRING(bname)
            r = element_end_c(b, n, end, lptr, nl, final, &fq, &fe)
            if r != R_END:
                if not final:
                    return ("need", lt, els, spans)
                return ("no-end", (<const char*>b)[lt + 1 : nend].lower().decode("ascii"), lt - base)
            el_end = fe
        if stop is not None and not is_stop:
            # The exact path would have read this child with the parent's
            # end finder, which reacts to <stop> and </stop> only.
            if holds_tag_name(b, end, el_end, sname, sk):
                return ("unknown",)
        els.append((lt - origin, el_end - origin))
        spans.append((nend - origin, gt - origin))
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


cdef bytes MARKER = b"data-edge-slot"


def find_marker(buf, Py_ssize_t start=0, Py_ssize_t end=-1):
    """``buf.find(b"data-edge-slot", start, end)`` (``end`` -1: the end of
    ``buf``; offsets clamped as ``find`` clamps non-negative ones), by the C
    library's ``memmem``: on HTML, which holds many ``data-`` attributes,
    about 4x faster than ``bytes.find``."""
    cdef Py_ssize_t n
    cdef const uchar* b
    cdef const void* r
    if not (PyBytes_CheckExact(buf) or PyByteArray_CheckExact(buf)):
        return buf.find(MARKER, start, len(buf) if end < 0 else end)
    b = data_of(buf, &n)
    if end < 0 or end > n:
        end = n
    if start < 0:
        start = 0
    if end - start < 14:
        return -1
    r = edge_memmem(b + start, <size_t>(end - start), <const char*>MARKER, 14)
    if r == NULL:
        return -1
    return <const uchar*>r - b



cdef Py_ssize_t attr_at(const uchar* b, Py_ssize_t p, Py_ssize_t hi, Py_ssize_t* ns, Py_ssize_t* ne,
                        Py_ssize_t* vs, Py_ssize_t* ve) noexcept nogil:
    """One ``scanner.ATTR`` match in a start tag's attribute span, from ``p``
    (not a delimiter): the name ``[ns, ne)`` and the raw value ``[vs, ve)``
    (-1, -1 for none); returns where the next one may start."""
    cdef Py_ssize_t q, r
    cdef uchar c
    ns[0] = p
    p += 1
    while p < hi and not (CLS[b[p]] & C_NAMESTOP):
        p += 1
    ne[0] = p
    vs[0] = ve[0] = -1
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
                    vs[0], ve[0] = q, r + 1
            elif c == 62:  # (?=>): an empty value
                vs[0] = ve[0] = q
            else:
                r = q + 1
                while r < hi and not (CLS[b[r]] & C_VALSTOP):
                    r += 1
                vs[0], ve[0] = q, r
    if vs[0] >= 0:
        p = ve[0]
    return p


cdef struct SortKeyC:
    int kind              # 0: a rank among ``order`` (affinity, pin); 1: a number
    bint descending
    const uchar* name     # the attribute, lower-case
    Py_ssize_t name_len
    Py_ssize_t n_order


cdef inline bint rank_space(uchar c) noexcept nogil:
    """``str.split()``'s whitespace, for an ASCII character."""
    return c == 32 or (9 <= c <= 13) or (28 <= c <= 31)


cdef int cmp_rows(const double* keys, Py_ssize_t nk, Py_ssize_t i, Py_ssize_t j) noexcept nogil:
    """Compare children ``i`` and ``j`` by their key rows (class, value per
    key), then by origin index: the stable order."""
    cdef Py_ssize_t k
    cdef const double* a = keys + i * 2 * nk
    cdef const double* c = keys + j * 2 * nk
    for k in range(2 * nk):
        if a[k] < c[k]:
            return -1
        if a[k] > c[k]:
            return 1
    return -1 if i < j else (1 if i > j else 0)


cdef void merge_sort(Py_ssize_t* idx, Py_ssize_t* tmp, Py_ssize_t n, const double* keys, Py_ssize_t nk) noexcept nogil:
    """Bottom-up merge sort of ``idx`` by ``cmp_rows`` (stable, n log n)."""
    cdef Py_ssize_t width = 1, lo, mid, hi, a, b, o
    cdef Py_ssize_t* src = idx
    cdef Py_ssize_t* dst = tmp
    cdef Py_ssize_t* t
    while width < n:
        lo = 0
        while lo < n:
            mid = lo + width if lo + width < n else n
            hi = lo + 2 * width if lo + 2 * width < n else n
            a, b, o = lo, mid, lo
            while a < mid and b < hi:
                if cmp_rows(keys, nk, src[b], src[a]) < 0:
                    dst[o] = src[b]
                    b += 1
                else:
                    dst[o] = src[a]
                    a += 1
                o += 1
            while a < mid:
                dst[o] = src[a]
                a += 1
                o += 1
            while b < hi:
                dst[o] = src[b]
                b += 1
                o += 1
            lo = hi
        t = src
        src = dst
        dst = t
        width *= 2
    if src != idx:
        memcpy(idx, src, n * sizeof(Py_ssize_t))


def sort_body(buf, Py_ssize_t start, Py_ssize_t end, list els, list spans, tuple specs, bint ascii_same):
    """``sort.sort_parts`` of ``buf[start:end]`` with its children known
    (``els`` and ``spans``, offsets relative to ``start``), in one call: the
    sort-key attributes read from the spans, the keys built, a stable sort,
    the new body copied out.  Returns the new body (bytes), ``True`` when the
    order does not change, or ``None`` when the pure code must answer (a
    value that is not plain ASCII text, a text-valued ``attr`` key, a long
    ``order``).

    ``specs`` holds one ``(kind, name, descending, order)`` per sort key:
    kind 0 ranks the children by their attribute ``name``'s space-separated
    words among ``order`` (ASCII bytes, ``None`` for an entry that is not),
    the lowest rank of its words, ``len(order)`` for none (``sort._rank_key``:
    ``affinity``, ``pin``); kind 1 sorts by the attribute as a number, or
    after the numbers (``sort._attr_key``), reversed when ``descending``."""
    cdef Py_ssize_t n, m = len(els), nk = len(specs), i, j, k, w, p, lo, hi, ns, ne, vs, ve, size
    cdef Py_ssize_t a0, a1, prev, tw, tl, best, r, va, vb
    cdef const uchar* b = data_of(buf, &n)
    cdef const uchar* t
    cdef SortKeyC keyc[8]
    cdef list orders = []
    cdef tuple spec, order
    cdef object entry
    cdef double x
    cdef int got
    cdef bint any_number, changed
    cdef unsigned int done
    cdef double* keys = NULL
    cdef Py_ssize_t* idx = NULL
    cdef Py_ssize_t* cut = NULL
    cdef bytes out
    cdef char* o
    if nk == 0 or nk > 8 or m < 2 or len(spans) != m or start < 0 or end > n or start > end or not ascii_same:
        return None
    for k in range(nk):
        spec = specs[k]
        name = spec[1]
        if not PyBytes_CheckExact(name):
            return None
        keyc[k].kind = spec[0]
        keyc[k].descending = spec[2]
        keyc[k].name = <const uchar*>PyBytes_AS_STRING(name)
        keyc[k].name_len = PyBytes_GET_SIZE(name)
        order = spec[3]
        keyc[k].n_order = len(order)
        if keyc[k].n_order > 256:
            return None
        orders.append(order)
    keys = <double*>PyMem_Malloc(m * 2 * nk * sizeof(double))
    idx = <Py_ssize_t*>PyMem_Malloc(2 * m * sizeof(Py_ssize_t))
    cut = <Py_ssize_t*>PyMem_Malloc((2 * m + 2) * sizeof(Py_ssize_t))
    if keys == NULL or idx == NULL or cut == NULL:
        PyMem_Free(keys)
        PyMem_Free(idx)
        PyMem_Free(cut)
        raise MemoryError()
    try:
        # The element extents, checked: in order, inside the body.
        cut[0] = 0
        prev = 0
        for i in range(m):
            a0, a1 = els[i]
            if a0 < prev or a1 < a0 or a1 > end - start:
                raise ValueError("elements out of order or outside the body")
            cut[2 * i + 1] = a0
            cut[2 * i + 2] = a1
            prev = a1
        cut[2 * m + 1] = end - start
        # Each child's keys: (class, value) per key, class 1 sorting last.
        for i in range(m):
            lo, hi = spans[i]
            lo += start
            hi += start
            if lo < 0:
                lo = 0
            if hi > n:
                hi = n
            done = 0
            for k in range(nk):
                keys[(i * nk + k) * 2] = 1.0  # missing
                keys[(i * nk + k) * 2 + 1] = 0.0
            p = lo
            while p < hi and done != (1u << nk) - 1:
                if is_delim(b[p]):
                    p += 1
                    continue
                p = attr_at(b, p, hi, &ns, &ne, &vs, &ve)
                for k in range(nk):
                    if done & (1u << k) or keyc[k].name_len != ne - ns or not same_ci(b + ns, keyc[k].name, ne - ns):
                        continue
                    done |= 1u << k
                    va, vb = vs, ve
                    if va < 0:
                        va = vb = ns  # valueless: ""
                    elif vb > va and (b[va] == 34 or b[va] == 39):
                        va += 1
                        vb -= 1
                    for j in range(va, vb):
                        if b[j] >= 128 or b[j] == 38 or b[j] == 27:
                            return None  # not plain text: the pure code decodes it
                    if keyc[k].kind == 0:
                        # The lowest rank among the value's words.
                        order = orders[k]
                        best = keyc[k].n_order
                        j = va
                        while j < vb:
                            while j < vb and rank_space(b[j]):
                                j += 1
                            tw = j
                            while j < vb and not rank_space(b[j]):
                                j += 1
                            tl = j - tw
                            if tl == 0:
                                break
                            for r in range(best):
                                entry = order[r]
                                if entry is not None and PyBytes_GET_SIZE(entry) == tl:
                                    t = <const uchar*>PyBytes_AS_STRING(entry)
                                    w = 0
                                    while w < tl and t[w] == b[tw + w]:
                                        w += 1
                                    if w == tl:
                                        best = r
                                        break
                        keys[(i * nk + k) * 2] = 0.0
                        keys[(i * nk + k) * 2 + 1] = best
                    else:
                        got = plain_number(b + va, vb - va, &x)
                        if got < 0:
                            return None
                        if got:
                            keys[(i * nk + k) * 2] = 0.0
                            keys[(i * nk + k) * 2 + 1] = -x if keyc[k].descending else x
        # A rank key of a child without the attribute ranks last (class 0,
        # rank len(order)); an attr key with no number at all is text.
        for k in range(nk):
            if keyc[k].kind == 0:
                for i in range(m):
                    if keys[(i * nk + k) * 2] == 1.0:
                        keys[(i * nk + k) * 2] = 0.0
                        keys[(i * nk + k) * 2 + 1] = keyc[k].n_order
            else:
                any_number = False
                for i in range(m):
                    if keys[(i * nk + k) * 2] == 0.0:
                        any_number = True
                        break
                if not any_number:
                    return None
        for i in range(m):
            idx[i] = i
        merge_sort(idx, idx + m, m, keys, nk)
        changed = False
        for i in range(m):
            if idx[i] != i:
                changed = True
                break
        if not changed:
            return True
        out = PyBytes_FromStringAndSize(NULL, end - start)
        b = same_buffer(buf, n)  # (an allocation may run a collection)
        o = PyBytes_AS_STRING(out)
        memcpy(o, b + start, cut[1])
        w = cut[1]
        for k in range(m):
            i = idx[k]
            size = cut[2 * i + 2] - cut[2 * i + 1]
            memcpy(o + w, b + start + cut[2 * i + 1], size)
            w += size
            size = cut[2 * k + 3] - cut[2 * k + 2]
            memcpy(o + w, b + start + cut[2 * k + 2], size)
            w += size
        return out
    finally:
        PyMem_Free(keys)
        PyMem_Free(idx)
        PyMem_Free(cut)



cdef object text_of(const uchar* b, Py_ssize_t vs, Py_ssize_t ve):
    """``scanner.attr_value(raw)`` (latin-1) of the raw value ``b[vs:ve]``:
    quotes removed, references decoded."""
    cdef Py_ssize_t j
    cdef bint plain = True
    if ve > vs and (b[vs] == 34 or b[vs] == 39):
        vs += 1
        ve -= 1
    for j in range(vs, ve):
        if b[j] >= 128 or b[j] == 38:
            plain = False
            break
    text = (<const char*>b)[vs:ve].decode("ascii" if plain else "latin-1")
    if not plain and "&" in text:
        text = _unescape(text)
    return text


cdef object marker_value_c(const uchar* b, Py_ssize_t n, Py_ssize_t m):
    """``scanner.marker_value(buf, m)``: ``MARKER_VALUE.match`` read by hand
    (the optional value group is possessive: once an ``=`` and a value are
    read, the lookahead after them decides)."""
    cdef Py_ssize_t after = m + 14, q, r, gs = -1, ge = -1, lim
    cdef uchar c
    q = after
    while q < n and is_ws(b[q]):
        q += 1
    if q < n and b[q] == 61:  # (?:[ws]*+=[ws]*+(VALUE))?+
        q += 1
        while q < n and is_ws(b[q]):
            q += 1
        if q < n:
            c = b[q]
            if c == 34 or c == 39:
                r = find_byte(b, q + 1, n, c)
                if r >= 0:
                    gs, ge = q, r + 1
            elif not (CLS[c] & C_VALSTOP):
                r = q + 1
                while r < n and not (CLS[b[r]] & C_VALSTOP):
                    r += 1
                gs, ge = q, r
    if gs >= 0:
        if ge < n and is_delim(b[ge]):  # (?=[\t\n\f\r />])
            return text_of(b, gs, ge)
        matched = False
    else:
        matched = after < n and is_delim(b[after])
    if not matched:
        # Not the attribute itself: "" when a longer name follows.
        if after < n and not (is_delim(b[after]) or b[after] == 61):
            return ""
        return None
    # Valueless so far: settled only if something other than "=" follows.
    lim = after + 64 if after + 64 < n else n
    q = after
    while q < lim and (b[q] == 32 or b[q] == 9 or b[q] == 10 or b[q] == 12 or b[q] == 13):
        q += 1
    if q < lim and b[q] != 61:
        return ""
    return None


def marker_value(buf, Py_ssize_t m):
    """``scanner.marker_value``."""
    cdef Py_ssize_t n
    cdef const uchar* b = data_of(buf, &n)
    if m < 0 or m + 14 > n:
        raise ValueError("m must be the offset of a marker in buf")
    return marker_value_c(b, n, m)


cdef object slot_attribute_c(const uchar* b, Py_ssize_t lo, Py_ssize_t hi):
    """``scanner.slot_attribute`` of a start tag whose attributes are
    ``b[lo:hi]`` (``hi`` before its ``>``)."""
    cdef Py_ssize_t p = lo, ns, ne, vs, ve
    while p < hi:
        if is_delim(b[p]):
            p += 1
            continue
        p = attr_at(b, p, hi, &ns, &ne, &vs, &ve)
        if ne - ns == 14 and same_ci(b + ns, <const uchar*>PyBytes_AS_STRING(MARKER), 14):
            return "" if vs < 0 else text_of(b, vs, ve)
    return None


def next_slot(buf, Py_ssize_t pos, Py_ssize_t opos, Py_ssize_t mpos, bint final, edits):
    """``SlotRewriter._scan``'s loop on its ``_pos``, ``_opos`` and
    ``_mpos``, up to the next start tag that holds a slot attribute: the
    marker search, the skip of markers whose value has no edit, the contexts
    before a marker (``contexts_until``), the token run that tells a marker
    in a start tag from one in text (``tokens_end``), the tag's end and its
    slot attribute.  Returns ``(state, pos, opos, mpos)`` and, for state
    ``"slot"``, the tag's start and end, the slot name and the lower-case tag
    name: ``(state, pos, opos, mpos, t, e, name, tag)``.  Other states:
    ``"none"`` (no more markers; or a start tag cut off by EOF), ``"need"``
    (a context is not closed yet), ``"dead"`` (``<plaintext>``),
    ``"eager"`` (the start tag is still arriving)."""
    cdef Py_ssize_t n, m, q, e, t, nend, j
    cdef int kind
    cdef const uchar* b = data_of(buf, &n)
    cdef const void* r
    cdef bint ascii
    while True:
        q = mpos if mpos > pos else pos
        if q < 0:
            q = 0
        m = -1
        if n - q >= 14:
            r = edge_memmem(b + q, <size_t>(n - q), <const char*>MARKER, 14)
            if r != NULL:
                m = <const uchar*>r - b
        if m < 0:
            if n - 13 > mpos:
                mpos = n - 13
            return ("none", pos, opos, mpos)
        value = marker_value_c(b, n, m)
        b = same_buffer(buf, n)  # (decoding a value may have run Python code)
        if value is not None and value not in edits:
            mpos = m + 1
            continue
        # contexts_until(buf, pos, opos, m, final)
        kind = H_NONE
        while True:
            q = opener_search(b, opos, m, &kind)
            if q < 0:
                kind = H_NONE
                break
            if inside_tag_c(b, n, pos, q):
                opos = q + 1
                continue
            if kind == K_PLAINTEXT:
                return ("dead", pos, opos, mpos)
            e = skip_context_c(b, n, q, kind, final, 0)
            if e < 0:
                return ("need", q, q, mpos)
            pos = opos = e
            if e > m:
                break
        if kind != H_NONE:  # "past": the marker is inside a comment or raw text
            if pos > mpos:
                mpos = pos
            continue
        # No context opens before the marker: is it an attribute name?
        t = pos if pos > 0 else 0
        if t > n:
            t = n
        if m > t:
            t = tokens_end_c(b, t, m)
        if t == m:  # in text
            pos = opos = m
            mpos = m + 1
            continue
        if not (t + 1 < n and is_alpha(b[t + 1])):  # in an end tag or a bogus comment
            pos, opos, mpos = t, m, m + 1
            continue
        e = tag_match(b, t, n, False, &nend)
        e = e + 1 if 0 <= e < n and b[e] == 62 else -1
        if e < 0:
            if final:  # a start tag cut off by EOF is not a tag
                return ("none", pos, opos, n)
            return ("eager", t, opos, mpos)
        if e <= m:  # a tag the token pattern refused (e.g. a raw-text name): not a slot
            pos, opos, mpos = t, m, m + 1
            continue
        pos = opos = mpos = e
        name = slot_attribute_c(b, nend, e - 1)
        b = same_buffer(buf, n)
        if name is not None:
            ascii = True
            for j in range(t + 1, nend):
                if b[j] >= 128:
                    ascii = False
                    break
            tag = (<const char*>b)[t + 1 : nend].decode("ascii" if ascii else "latin-1").lower()
            return ("slot", pos, opos, mpos, t, e, name, tag)
