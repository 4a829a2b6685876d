"""The rewriter's byte loop behind one import: compiled when it imports,
else the pure-Python reference.

``scanner.py``, ``sort.py`` and ``SlotRewriter._scan`` are the readable
reference and the fallback; ``_scanner.pyx`` (built by ``pip install``, see
setup.py) runs the same loops in C: the marker search (``find_marker``,
``memmem``: ~4x ``bytes.find`` on HTML, which is full of ``data-``), the
scan from a marker to its slot's start tag (``next_slot``: the marker's
value, the comments and raw-text elements before it, the token run that
tells a start tag from text, the slot attribute), the end-tag search of a
held slot (``EndFinder``), the split of a sort container into its element
children (``walk_children``) and its sorted body (``sort_body``: the key
attributes, keys and a stable sort in C, the new body in one copy; the
pure ``sort_parts`` answers what it leaves, e.g. text-valued keys).  The
older entry points (``contexts_until``, ``tokens_end``, ``attr_values``,
``attr_key``) remain for the paths those do not cover.  Decisions, escaping
and fragments stay in Python.

``EDGEPROXY_NO_EXTENSIONS=1`` forces the pure one (as ``AIOHTTP_NO_EXTENSIONS``
does for aiohttp); ``ACTIVE`` says which runs (``edgeproxy --version`` and the
``build_info`` metric print it).  Callers look the names up on this module at
call time (``native.EndFinder(...)``), so ``use`` switches every later call.
"""

from __future__ import annotations

import os
import warnings

from . import scanner as _pure

NO_EXTENSIONS = os.environ.get("EDGEPROXY_NO_EXTENSIONS", "") not in ("", "0")

# The ``API`` of ``_scanner.pyx`` this module calls.
API = 6

_compiled = None
if not NO_EXTENSIONS:
    try:
        from . import _scanner as _compiled  # type: ignore[attr-defined]
    except ImportError:  # built without a compiler, or a source tree never built
        _compiled = None
        warnings.warn(
            "edgeproxy's compiled scanner is not built (no C compiler at install time?): using the"
            " pure-Python one, same output, 4-10x the CPU. Reinstall with a compiler, or set"
            " EDGEPROXY_NO_EXTENSIONS=1 to choose the pure one.",
            RuntimeWarning,
            stacklevel=1,
        )
    if _compiled is not None and getattr(_compiled, "API", None) != API:
        warnings.warn(
            f"{_compiled.__file__} is a stale build (API {getattr(_compiled, 'API', None)}, expected {API}):"
            " using the pure-Python scanner; rebuild with pip install -e .",
            RuntimeWarning,
            stacklevel=1,
        )
        _compiled = None

#: ``"compiled"`` or ``"pure"``.
ACTIVE = "pure"
#: ``EndFinder(name, start)``: the held slot's end-tag search (same API both ways).
EndFinder = _pure.EndFinder
#: ``walk_children(buf, base, stop)`` of ``_scanner``, or ``None`` when the
#: pure ``sort._walk`` runs.
walk_children = None
#: ``attr_values(buf, spans, names, keys, ascii_same)`` of ``_scanner``, or ``None`` when the
#: pure ``sort._attrs`` runs.
attr_values = None
#: ``contexts_until(buf, pos, opos, limit, final)`` of ``_scanner``, or
#: ``None`` when the pure ``SlotRewriter._contexts_until`` runs.
contexts_until = None
#: ``tokens_end(buf, pos, endpos)`` of ``_scanner`` (``TOKENS.match(buf,
#: pos, endpos).end()``), or ``None`` when the pattern runs.
tokens_end = None
#: ``attr_key(values, descending)`` of ``_scanner`` (``sort._attr_key`` for
#: numbers in ASCII, else ``None``), or ``None`` when the pure one runs.
attr_key = None


def _find_marker(buf, start: int = 0, end: int = -1) -> int:
    """``buf.find(scanner.MARKER, start, end)``; ``end`` -1 is the end."""
    return buf.find(_pure.MARKER, start, len(buf) if end < 0 else end)


#: ``sort_body(buf, start, end, els, spans, specs, ascii_same)`` of
#: ``_scanner`` (a sorted grid's new body in one call), or ``None`` when the
#: pure ``sort.sort_parts`` runs.
sort_body = None

#: ``next_slot(buf, pos, opos, mpos, final, edits)`` of ``_scanner`` (the
#: loop of ``SlotRewriter._scan`` up to the next slot attribute), or ``None``
#: when the pure loop runs.
next_slot = None

#: ``find_marker(buf, start=0, end=-1)``: the next ``data-edge-slot`` in
#: ``buf[start:end]`` (``bytes.find``; ``memmem`` in ``_scanner``, ~4x faster
#: on HTML), -1 if none.
find_marker = _find_marker


def _end_finder(name: str, start: int):
    """The compiled ``EndFinder``; the pure one for a tag name that is not
    ASCII (the compiled module leaves those to the reference)."""
    if name.isascii():
        return _compiled.EndFinder(name, start)
    return _pure.EndFinder(name, start)


def available() -> tuple[str, ...]:
    """The implementations this process can run."""
    return ("compiled", "pure") if _compiled is not None else ("pure",)


def use(name: str) -> None:
    """Run the ``"compiled"`` or the ``"pure"`` byte loop from now on."""
    global ACTIVE, EndFinder, walk_children, attr_values, contexts_until, tokens_end, attr_key, find_marker, sort_body, next_slot
    if name == "compiled":
        if _compiled is None:
            raise RuntimeError("the compiled scanner is not built (pip install -e . with a C compiler)")
        ACTIVE, EndFinder = "compiled", _end_finder
        walk_children, attr_values = _compiled.walk_children, _compiled.attr_values
        contexts_until, tokens_end = _compiled.contexts_until, _compiled.tokens_end
        attr_key, find_marker = _compiled.attr_key, _compiled.find_marker
        sort_body, next_slot = _compiled.sort_body, _compiled.next_slot
    elif name == "pure":
        ACTIVE, EndFinder = "pure", _pure.EndFinder
        walk_children = attr_values = contexts_until = tokens_end = attr_key = sort_body = next_slot = None
        find_marker = _find_marker
    else:
        raise ValueError(f"unknown scanner {name!r}")


use("compiled" if _compiled is not None else "pure")
