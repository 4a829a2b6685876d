"""Conditional and Range requests answered from a stored response: pure functions.

A cache hit is answered as the origin would answer the same request
(RFC 9111 §4.3.2): ``If-None-Match`` / ``If-Modified-Since`` that match the
stored validators give a 304; a single byte ``Range`` of a stored 200 gives a
206 (RFC 9110 §14), unless an ``If-Range`` does not match; a range that does
not overlap the body gives a 416.  Anything else (several ranges, another
unit, a malformed field) gets the full 200, which RFC 9110 §14.2 allows.

``answer(method, request_headers, status, headers, body)`` returns ``None``
(serve the stored response as it is) or ``(status, headers, body)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from email.utils import parsedate_to_datetime

from .cache_rules import split_list

Headers = Sequence[tuple[str, str]]

# What a 304 carries of the stored head (RFC 9110 §15.4.5).
_NOT_MODIFIED_KEEPS = frozenset({"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified", "age"})


def _get(headers: Headers, name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _weak_equal(a: str, b: str) -> bool:
    return a.removeprefix("W/") == b.removeprefix("W/")


def _date(value: str | None):
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None


def not_modified(method: str, request: Headers, headers: Headers) -> bool:
    """RFC 9110 §13.2.2: ``If-None-Match`` (weak comparison) decides when
    present; otherwise ``If-Modified-Since`` against ``Last-Modified``."""
    if method not in ("GET", "HEAD"):
        return False
    inm = _get(request, "if-none-match")
    if inm is not None:
        etag = _get(headers, "etag")
        tags = split_list(inm)  # the entity-tags of If-None-Match
        if "*" in tags:
            return True
        return etag is not None and any(_weak_equal(tag, etag) for tag in tags)
    since = _date(_get(request, "if-modified-since"))
    modified = _date(_get(headers, "last-modified"))
    if since is None or modified is None:
        return False
    try:
        return modified <= since
    except TypeError:  # naive vs aware: not comparable, not a match
        return False


def _byte_range(spec: str, size: int) -> tuple[int, int] | None | str:
    """One ``bytes=`` range as (first, last); ``None``: ignore the field;
    ``"unsatisfiable"``: no byte of it exists."""
    unit, _, ranges = spec.partition("=")
    if unit.strip().lower() != "bytes" or "," in ranges:
        return None
    first, dash, last = ranges.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not first:  # suffix: the last N bytes
        if not last.isdigit():
            return None
        n = int(last)
        if n == 0:
            return "unsatisfiable"
        return (max(0, size - n), size - 1) if size else "unsatisfiable"
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid: the field is ignored
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _if_range_holds(value: str, headers: Headers) -> bool:
    """RFC 9110 §13.1.5: a strong ETag match, or exactly the Last-Modified date."""
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        etag = _get(headers, "etag")
        return etag is not None and not etag.startswith("W/") and not value.startswith("W/") and etag == value
    return value == (_get(headers, "last-modified") or "").strip() and value != ""


def answer(method: str, request: Headers, status: int, headers: Headers, body: bytes) -> tuple[int, list[tuple[str, str]], bytes] | None:
    """The response to give instead of the stored one, or ``None``."""
    if status != 200:
        return None
    if not_modified(method, request, headers):
        return 304, [(k, v) for k, v in headers if k.lower() in _NOT_MODIFIED_KEEPS], b""
    if method != "GET":
        return None
    spec = _get(request, "range")
    if spec is None:
        return None
    if_range = _get(request, "if-range")
    if if_range is not None and not _if_range_holds(if_range, headers):
        return None
    size = len(body)
    chosen = _byte_range(spec, size)
    if chosen is None:
        return None
    rest = [(k, v) for k, v in headers if k.lower() not in ("content-length", "content-range")]
    if chosen == "unsatisfiable":
        return 416, [*rest, ("Content-Range", f"bytes */{size}")], b""
    first, last = chosen
    return 206, [*rest, ("Content-Range", f"bytes {first}-{last}/{size}")], body[first : last + 1]
