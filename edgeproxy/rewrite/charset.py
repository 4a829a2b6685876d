"""The page's character encoding, and writing a fragment in it.

The rewriter works on bytes and only looks for ASCII syntax (``<``, quotes,
tag names, the marker), which is sound for any *ASCII-compatible* encoding
(UTF-8, windows-125x, ISO-8859-x, Shift_JIS, EUC-*, GBK, Big5…).  It is not
for UTF-16/32 or stateful encodings (ISO-2022-JP): ``page_charset`` returns
``None`` for those and for labels Python does not know, and the caller then
leaves the page alone.

Where the charset comes from, first match wins (the WHATWG encoding sniffing
order, reduced to what a proxy sees):

1. a byte order mark (UTF-8 BOM -> ``utf-8``; UTF-16 BOM -> ``None``);
2. the ``charset`` parameter of ``Content-Type``;
3. a ``<meta charset>`` or ``<meta http-equiv="Content-Type" content="…;
   charset=…">`` in the first 1024 bytes;
4. nothing declared: ``"ascii"``.  The browser then guesses (locale default
   or a detector) and we cannot know its guess, so a fragment is written with
   every non-ASCII character as a numeric reference (``&#233;``), which reads
   the same under every ASCII-compatible guess.  This costs a few bytes per
   accented character and is never wrong, unlike assuming UTF-8.
"""

from __future__ import annotations

import codecs
import re

from ..errors import RewriteError
from . import scanner as sc

PRESCAN_BYTES = 1024
UNDECLARED = "ascii"

# WHATWG Encoding labels whose meaning differs from Python's codec of the
# same name (browsers decode "iso-8859-1" and "ascii" as windows-1252, etc.).
_WHATWG = {
    "ascii": "cp1252", "us-ascii": "cp1252", "iso-8859-1": "cp1252", "iso8859-1": "cp1252",
    "latin1": "cp1252", "l1": "cp1252", "iso_8859-1": "cp1252", "cp819": "cp1252",
    "iso-ir-100": "cp1252", "x-cp1252": "cp1252", "windows-1252": "cp1252",
    "iso-8859-9": "cp1254", "latin5": "cp1254", "windows-1254": "cp1254",
    "iso-8859-11": "cp874", "tis-620": "cp874", "windows-874": "cp874",
    "gb2312": "gbk", "gb_2312-80": "gbk", "chinese": "gbk", "x-gbk": "gbk",
    "ks_c_5601-1987": "euc_kr", "korean": "euc_kr", "windows-949": "euc_kr",
    "x-sjis": "shift_jis", "ms_kanji": "shift_jis", "windows-31j": "cp932",
    "x-user-defined": "cp1252", "unicode-1-1-utf-8": "utf-8", "utf8": "utf-8",
    "x-mac-roman": "mac_roman", "macintosh": "mac_roman",
    "big5-hkscs": "big5hkscs", "x-x-big5": "big5", "cn-big5": "big5",
}
# Encodings that a <meta> cannot truthfully declare: the page was read as
# ASCII-compatible to find the meta at all (WHATWG: treat as UTF-8).
_META_UTF16 = {"utf-16", "utf-16le", "utf-16be", "utf_16", "utf_16_le", "utf_16_be"}

_PARAM = re.compile(r"""charset\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s;,"']+))""", re.I)
_META = re.compile(rb"<[mM][eE][tT][aA][\t\n\f\r /]")
_PROBE = '<div data-edge-slot="a" class=\'b\'>-</div><!-- x -->&#1;?'


def _ascii_compatible(codec: str) -> bool:
    try:
        if _PROBE.encode(codec) != _PROBE.encode("ascii"):
            return False
        # A stateful encoding (ISO-2022-*) shifts with ESC / SI / SO bytes.
        sample = "\u00e9\u3042\u4e2d\uac00".encode(codec, "ignore")
    except (LookupError, UnicodeError):
        return False
    return not any(b in sample for b in (0x1B, 0x0E, 0x0F))


def rewritable(codec: str | None) -> str | None:
    """``codec``'s canonical Python name if fragments can be written in it
    (known and ASCII-compatible), else ``None``."""
    if not codec:
        return None
    try:
        name = codecs.lookup(codec).name
    except LookupError:
        return None
    return name if _ascii_compatible(name) else None


def python_codec(label: str | None) -> str | None:
    """The Python codec for an encoding label, or ``None`` if unknown or not
    ASCII-compatible."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    name = _WHATWG.get(label, label)
    try:
        name = codecs.lookup(name).name
    except (LookupError, ValueError):  # ValueError: a NUL in the label (found by load_tests.fuzz)
        return None
    return name if _ascii_compatible(name) else None


def content_type_charset(content_type: str | None) -> str | None:
    """The raw ``charset`` parameter of a Content-Type value, if any."""
    if not content_type:
        return None
    m = _PARAM.search(content_type.partition(";")[2])
    if m is None:
        return None
    return next(g for g in m.groups() if g is not None).strip()


def meta_charset(head: bytes) -> str | None:
    """The label declared by a ``<meta>`` in ``head[:1024]`` (WHATWG prescan,
    simplified: comments skipped, first declaring meta wins)."""
    head = head[:PRESCAN_BYTES]
    pos = 0
    while True:
        m = _META.search(head, pos)
        if m is None:
            return None
        start = m.start()
        comment = head.find(b"<!--", pos, start)
        if comment >= 0:  # the meta may be commented out: resume after the comment
            close = head.find(b"-->", comment + 4)
            if close < 0:
                return None
            pos = close + 3
            continue
        end = sc.tag_end(head, start)
        if end is None:
            return None
        pos = end
        attrs = {name.decode("latin-1"): sc.attr_value(raw) for _, name, raw in reversed(sc.attributes(head, start, end))}
        if "charset" in attrs and attrs["charset"].strip():
            return attrs["charset"].strip()
        if attrs.get("http-equiv", "").strip().lower() == "content-type":
            found = content_type_charset("x/x; " + attrs.get("content", ""))
            if found:
                return found


def page_charset(content_type: str | None, head: bytes) -> str | None:
    """The Python codec to write fragments in, or ``None``: do not rewrite.

    ``head`` is the start of the (decoded) body, at least its first 1024 bytes
    when the body is that long.
    """
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return None
    declared = content_type_charset(content_type)
    if declared:
        return python_codec(declared)
    declared = meta_charset(head)
    if declared:
        if declared.strip().lower() in _META_UTF16:
            return "utf-8"
        return python_codec(declared)
    return UNDECLARED


def encode_fragment(html: str, charset: str | None) -> bytes:
    """``html`` in the page's ``charset``; characters it cannot represent are
    written as numeric character references (``&#8364;``)."""
    if charset is None:
        raise RewriteError("the page charset does not allow rewriting")
    try:
        return html.encode(charset, "xmlcharrefreplace")
    except LookupError as exc:
        raise RewriteError(f"unknown charset {charset!r}") from exc
