"""The respond stage's pure header functions, as tables (CONTRACT §4, §5)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy.fetch import Upstream
from edgeproxy.model import NO_DECISION, ReplaceInner, SetCookie
from edgeproxy.record import Record
from edgeproxy.respond import (
    MAX_EXPLAIN_BYTES,
    Plan,
    add_vary,
    explain_header,
    format_cookie,
    header,
    is_html,
    private_cache_control,
    response_headers,
    rewrite_reason,
    server_timing,
)


# ---------------------------------------------------------------------------
# Cache-Control
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "origin, expected",
    [
        (None, "private"),
        ("", "private"),
        ("public", "private"),
        ("public, max-age=60", "private, max-age=60"),
        ("public, max-age=60, s-maxage=600", "private, max-age=60"),
        ("max-age=60, S-MaxAge=600, PUBLIC", "private, max-age=60"),
        ("s-maxage=600", "private"),
        ("private", "private"),
        ("private, max-age=5", "private, max-age=5"),
        ('private="Set-Cookie", max-age=5', "private, max-age=5"),
        ("proxy-revalidate, must-revalidate", "private, must-revalidate"),
        ("no-store", "private, no-store"),
        ("no-cache, max-age=0", "private, no-cache, max-age=0"),
        ("max-age=60, stale-while-revalidate=30, immutable", "private, max-age=60, stale-while-revalidate=30, immutable"),
        (" ,, max-age=60 ,", "private, max-age=60"),
        # quoted lists keep their commas
        ('no-cache="Set-Cookie, X-Foo", max-age=60', 'private, no-cache="Set-Cookie, X-Foo", max-age=60'),
        ('private="Set-Cookie, X-Foo", max-age=60', "private, max-age=60"),
    ],
)
def test_private_cache_control(origin, expected):
    assert private_cache_control(origin) == expected


# ---------------------------------------------------------------------------
# The head
# ---------------------------------------------------------------------------
ORIGIN = [
    ("Content-Type", "text/html; charset=utf-8"),
    ("Content-Length", "1234"),
    ("Content-Encoding", "gzip"),
    ("Cache-Control", "public, max-age=60, s-maxage=600"),
    ("ETag", '"abc"'),
    ("Last-Modified", "Mon, 02 Nov 2026 10:00:00 GMT"),
    ("Accept-Ranges", "bytes"),
    ("Content-MD5", "xyz"),
    ("Vary", "Cookie"),
    ("Set-Cookie", "shop=1"),
    ("X-Shop", "kept"),
]


def names(headers):
    return [k.lower() for k, _ in headers]


def test_personalised_reencoded_head():
    out = response_headers(ORIGIN, personalised=True, coding="br", cookies=["edge_vid=1"])
    h = dict((k.lower(), v) for k, v in out)
    assert h["cache-control"] == "private, max-age=60"
    for gone in ("etag", "last-modified", "content-length", "accept-ranges", "content-md5"):
        assert gone not in h, gone
    assert h["content-encoding"] == "br"
    assert h["vary"] == "Cookie, Accept-Encoding"
    assert [v for k, v in out if k.lower() == "set-cookie"] == ["shop=1", "edge_vid=1"]  # the shop's cookie is kept
    assert h["x-shop"] == "kept"
    assert names(out).count("cache-control") == 1


def test_personalised_identity_head_has_no_content_encoding():
    out = response_headers(ORIGIN, personalised=True, coding="identity", cookies=[])
    assert "content-encoding" not in names(out)
    assert "content-length" not in names(out)
    assert ("Vary", "Cookie, Accept-Encoding") in out


def test_pass_through_head_is_the_origins():
    assert response_headers(ORIGIN, personalised=False, coding=None, cookies=[]) == ORIGIN


def test_pass_through_with_a_proxy_cookie_becomes_private_but_keeps_validators():
    out = response_headers(ORIGIN, personalised=False, coding=None, cookies=["edge_vid=1"])
    h = dict((k.lower(), v) for k, v in out)
    assert h["cache-control"] == "private, max-age=60"
    assert h["etag"] == '"abc"'
    assert h["content-length"] == "1234"


def test_personalised_without_origin_cache_control_is_private():
    out = response_headers([("Content-Type", "text/html")], personalised=True, coding=None, cookies=[])
    assert ("Cache-Control", "private") in out


def test_every_cache_control_line_of_the_origin_is_made_private():
    # Two Cache-Control lines are one list (RFC 9110 §5.3): public in one,
    # max-age in the other.  (Bug fixed: only the first line was kept, so
    # the origin's max-age on a later line was lost.)
    origin = [("Cache-Control", "public"), ("Cache-Control", "max-age=60, s-maxage=100")]
    out = response_headers(origin, personalised=True, coding=None, cookies=[])
    assert [v for k, v in out if k.lower() == "cache-control"] == ["private, max-age=60"]


@pytest.mark.parametrize(
    "vary, expected",
    [
        (None, "Accept-Encoding"),
        ("Cookie", "Cookie, Accept-Encoding"),
        ("accept-encoding", "accept-encoding"),
        ("Cookie, Accept-Encoding", "Cookie, Accept-Encoding"),
        ("*", "*"),
    ],
)
def test_add_vary(vary, expected):
    headers = [("Vary", vary)] if vary is not None else []
    add_vary(headers, "Accept-Encoding")
    assert [v for k, v in headers if k == "Vary"] == [expected]


@pytest.mark.parametrize(
    "secure, expected",
    [
        (False, "edge_vid=abc; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"),
        (True, "edge_vid=abc; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax; Secure"),
    ],
)
def test_format_cookie(secure, expected):
    assert format_cookie(SetCookie("edge_vid", "abc", 31536000), secure=secure) == expected


def test_format_cookie_negative_max_age_deletes():
    assert "Max-Age=0;" in format_cookie(SetCookie("edge_cap", "", -5), secure=False)


@pytest.mark.parametrize(
    "content_type, expected",
    [
        ("text/html", True),
        ("text/html; charset=utf-8", True),
        ("TEXT/HTML;charset=windows-1252", True),
        ("application/xhtml+xml", True),
        (" text/html ", True),
        ("text/plain", False),
        ("application/json", False),
        ("text/html-sandboxed", False),
        ("", False),
        (None, False),
    ],
)
def test_is_html(content_type, expected):
    assert is_html(content_type) is expected


def test_header_lookup_is_case_insensitive_first_wins():
    assert header([("A", "1"), ("a", "2")], "a") == "1"
    assert header([], "a") is None


# ---------------------------------------------------------------------------
# Explain, Server-Timing
# ---------------------------------------------------------------------------
def test_explain_header_is_compact_ascii_json():
    text = explain_header({"slots": {"hero": {"variant": "café"}}, "cache": "MISS"})
    assert text.isascii()
    assert " " not in text
    assert json.loads(text)["slots"]["hero"]["variant"] == "café"


def test_explain_header_is_cut_to_a_safe_size():
    trace = {"context": {"k": "x" * 20000}, "slots": {"hero": {"variant": "a"}}, "cache": "MISS"}
    text = explain_header(trace)
    assert len(text) <= MAX_EXPLAIN_BYTES
    data = json.loads(text)
    assert data["truncated"] is True
    assert data["slots"] == {"hero": {"variant": "a"}}


def test_server_timing_names_every_stage_on_html():
    rec = Record()
    rec.html = True
    rec.add("classify", 0.001)
    timing = server_timing(rec)
    stages = [p.split(";")[0].strip() for p in timing.split(",")]
    assert set(stages) >= {"classify", "choose", "origin", "rewrite", "total"}
    assert stages.count("classify") == 1
    assert "rewrite" not in rec.timings  # header only, not the metrics


def test_server_timing_on_non_html_has_only_what_ran():
    rec = Record()
    rec.add("origin", 0.002)
    stages = [p.split(";")[0].strip() for p in server_timing(rec).split(",")]
    assert stages == ["origin", "total"]


# ---------------------------------------------------------------------------
# When to rewrite
# ---------------------------------------------------------------------------
EDITS = Plan(decision=NO_DECISION, edits={"hero": ReplaceInner("<b>x</b>")})


def upstream(status=200, **headers):
    pairs = [(k.replace("_", "-"), v) for k, v in headers.items()]
    return Upstream(status=status, reason="OK", headers=pairs)


@pytest.mark.parametrize(
    "up, method, plan, expected",
    [
        (upstream(Content_Type="text/html"), "GET", EDITS, None),
        (upstream(Content_Type="text/html", Content_Encoding="gzip"), "GET", EDITS, None),
        (upstream(Content_Type="text/html", Content_Encoding="br"), "GET", EDITS, None),
        (upstream(Content_Type="text/html"), "GET", Plan(decision=NO_DECISION, edits={}), "no-edit"),
        (upstream(Content_Type="text/html"), "HEAD", EDITS, "status"),
        (upstream(Content_Type="text/html"), "POST", EDITS, "status"),
        (upstream(404, Content_Type="text/html"), "GET", EDITS, "status"),
        (upstream(206, Content_Type="text/html"), "GET", EDITS, "status"),
        (upstream(Content_Type="application/json"), "GET", EDITS, "not-html"),
        (upstream(), "GET", EDITS, "not-html"),
        (upstream(Content_Type="text/html", Cache_Control="public, No-Transform"), "GET", EDITS, "no-transform"),
        (upstream(Content_Type="text/html", Content_Length="9999"), "GET", EDITS, "too-large"),
        (upstream(Content_Type="text/html", Content_Length="1000"), "GET", EDITS, None),
        (upstream(Content_Type="text/html", Content_Encoding="gzip, br"), "GET", EDITS, "encoding"),
        (upstream(Content_Type="text/html", Content_Encoding="compress"), "GET", EDITS, "encoding"),
    ],
)
def test_rewrite_reason(up, method, plan, expected):
    assert rewrite_reason(up, method, plan, max_rewrite_bytes=1000) == expected


def _response_headers_reference(origin, *, personalised, coding, cookies):
    """response_headers as written before its one-pass form: each rule a
    check per field, Vary fixed afterwards by add_vary."""
    from edgeproxy.respond import _REPRESENTATION, _VALIDATORS, private_cache_control

    out = []
    private = personalised or bool(cookies)
    seen_cc = False
    for name, value in origin:
        lower = name.lower()
        if coding is not None and lower in _REPRESENTATION:
            continue
        if personalised and lower in _VALIDATORS:
            continue
        if lower == "cache-control" and private:
            if not seen_cc:
                lines = [v for k, v in origin if k.lower() == "cache-control"]
                out.append((name, private_cache_control(", ".join(lines))))
                seen_cc = True
            continue
        out.append((name, value))
    if private and not seen_cc:
        out.append(("Cache-Control", "private"))
    if coding is not None:
        if coding != "identity":
            out.append(("Content-Encoding", coding))
        add_vary(out, "Accept-Encoding")
    for value in cookies:
        out.append(("Set-Cookie", value))
    return out


_ORIGIN_FIELDS = st.sampled_from([
    ("Content-Type", "text/html"), ("Content-Length", "120"), ("content-encoding", "gzip"), ("ETag", '"x"'),
    ("Last-Modified", "Mon"), ("Cache-Control", "public, max-age=60"), ("cache-control", "s-maxage=5, must-revalidate"),
    ("Vary", "Cookie"), ("vary", "accept-encoding"), ("Vary", "*"), ("Accept-Ranges", "bytes"), ("X-A", "1"), ("Set-Cookie", "s=1"),
])


@given(
    st.lists(_ORIGIN_FIELDS, max_size=8),
    st.booleans(),
    st.sampled_from([None, "identity", "gzip", "br"]),
    st.lists(st.sampled_from(["edge_vid=1; Path=/", "edge_sid=2"]), max_size=2),
)
@settings(max_examples=800, deadline=None)
def test_response_headers_in_one_pass_equal_the_rule_by_rule_reference(origin, personalised, coding, cookies):
    got = response_headers(origin, personalised=personalised, coding=coding, cookies=cookies)
    assert got == _response_headers_reference(origin, personalised=personalised, coding=coding, cookies=cookies)
