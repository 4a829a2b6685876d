"""edgeproxy.rewrite.charset: which charset a page is in, and writing fragments in it."""

from __future__ import annotations

import codecs

import pytest

from edgeproxy.errors import RewriteError
from edgeproxy.rewrite import encode_fragment, page_charset
from edgeproxy.rewrite.charset import meta_charset, rewritable


@pytest.mark.parametrize(
    "content_type, head, expected",
    [
        # Content-Type parameter
        ("text/html; charset=utf-8", b"", "utf-8"),
        ("text/html; charset=UTF-8", b"", "utf-8"),
        ('text/html; charset="utf-8"', b"", "utf-8"),
        ("text/html;charset=Shift_JIS", b"", "shift_jis"),
        ("text/html; charset=euc-kr", b"", "euc_kr"),
        ("text/html; charset=gb2312", b"", "gbk"),
        # WHATWG: latin-1 and ascii labels mean windows-1252
        ("text/html; charset=iso-8859-1", b"", "cp1252"),
        ("text/html; charset=us-ascii", b"", "cp1252"),
        ("text/html; charset=windows-1251", b"", "cp1251"),
        ("text/html; charset=iso-8859-15", b"", "iso8859-15"),
        # the header wins over the meta
        ("text/html; charset=utf-8", b'<meta charset="windows-1252">', "utf-8"),
        # not rewritable: UTF-16/32, stateful, unknown
        ("text/html; charset=utf-16", b"", None),
        ("text/html; charset=utf-32le", b"", None),
        ("text/html; charset=iso-2022-jp", b"", None),
        ("text/html; charset=no-such-thing", b"", None),
        # BOM first
        ("text/html; charset=windows-1252", codecs.BOM_UTF8 + b"<html>", "utf-8"),
        (None, codecs.BOM_UTF16_LE + "<html>".encode("utf-16-le"), None),
        (None, codecs.BOM_UTF16_BE + "<html>".encode("utf-16-be"), None),
        # <meta> prescan
        (None, b'<!doctype html><html><head><meta charset="utf-8">', "utf-8"),
        (None, b"<meta charset=windows-1252>", "cp1252"),
        ("text/html", b"<META CHARSET='ISO-8859-2'>", "iso8859-2"),
        (None, b'<meta http-equiv="Content-Type" content="text/html; charset=koi8-r">', "koi8-r"),
        (None, b"<meta content='text/html;charset=euc-jp' http-equiv=content-type>", "euc_jp"),
        (None, b'<meta name="viewport" content="width=device-width"><meta charset="utf-8">', "utf-8"),
        (None, b'<meta charset="utf-16">', "utf-8"),  # a meta cannot truthfully say UTF-16
        # commented out, or too late
        (None, b'<!-- <meta charset="koi8-r"> --><meta charset="utf-8">', "utf-8"),
        (None, b" " * 1100 + b'<meta charset="koi8-r">', "ascii"),
        # nothing declared: write fragments as ASCII with references
        (None, b"<html><head><title>x</title>", "ascii"),
        ("text/html", "<p>caf\u00e9</p>".encode(), "ascii"),
    ],
)
def test_page_charset_follows_bom_header_then_meta(content_type, head, expected):
    assert page_charset(content_type, head) == expected


def test_meta_charset_reads_the_label_as_written():
    assert meta_charset(b'<head><meta charset=" UTF-8 ">') == "UTF-8"
    assert meta_charset(b"<head><title>none</title>") is None


@pytest.mark.parametrize(
    "charset, html, expected",
    [
        ("utf-8", "caf\u00e9 \u20ac", "caf\u00e9 \u20ac".encode()),
        ("cp1252", "caf\u00e9 \u20ac \u65e5", b"caf\xe9 \x80 &#26085;"),
        ("ascii", "caf\u00e9 <b>\U0001f600</b>", b"caf&#233; <b>&#128512;</b>"),
        ("shift_jis", "\u65e5\u672c \u00e9", "\u65e5\u672c ".encode("shift_jis") + b"&#233;"),
    ],
)
def test_encode_fragment_writes_unrepresentable_characters_as_references(charset, html, expected):
    assert encode_fragment(html, charset) == expected


def test_encode_fragment_refuses_a_page_that_must_not_be_rewritten():
    with pytest.raises(RewriteError, match="does not allow rewriting"):
        encode_fragment("x", None)


@pytest.mark.parametrize("codec, expected", [("utf-8", "utf-8"), ("UTF8", "utf-8"), ("utf-16", None), ("x", None), (None, None)])
def test_rewritable_accepts_only_ascii_compatible_codecs(codec, expected):
    assert rewritable(codec) == expected
