"""Merge tags and the fragment balance check."""

from __future__ import annotations

import pytest

from edgeproxy.catalog.balance import BalanceError, check_balanced
from edgeproxy.catalog.template import TemplateError, compile_template


# ---------------------------------------------------------------------------
# Merge tags
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "source, context, expected",
    [
        # -- values are inserted
        ("Hi {{ city }}!", {"city": "Leeds"}, "Hi Leeds!"),
        ("Hi {{city}}!", {"city": "Leeds"}, "Hi Leeds!"),
        # -- missing or empty value: the default, or nothing
        ('Hi {{ city | default: "there" }}!', {}, "Hi there!"),
        ('Hi {{ city | default: "there" }}!', {"city": ""}, "Hi there!"),
        ("Hi {{ city }}!", {}, "Hi !"),
        ("Hi {{ city | default: 'you' }}!", {}, "Hi you!"),
        # -- values are always HTML-escaped, defaults too
        ("<b>{{ city }}</b>", {"city": "<script>alert(1)</script>"}, "<b>&lt;script&gt;alert(1)&lt;/script&gt;</b>"),
        ('<a title="{{ city }}">', {"city": '" onmouseover="x'}, '<a title="&quot; onmouseover=&quot;x">'),
        ("{{ city }}", {"city": "O'Hara & Sons"}, "O&#x27;Hara &amp; Sons"),
        ('{{ city | default: "<i>you</i>" }}', {}, "&lt;i&gt;you&lt;/i&gt;"),
        ('{{ city | default: "say \\"hi\\"" }}', {}, "say &quot;hi&quot;"),
        # -- non-text values
        ("{{ hour }}h", {"hour": 9}, "9h"),
        ("{{ customer }}", {"customer": True}, "true"),
        ("{{ affinity }}", {"affinity": ("trail", "formal")}, "trail, formal"),
        # -- several tags, text between kept byte for byte
        ("{{ city }}, {{ country }}\n  x", {"city": "Paris", "country": "FR"}, "Paris, FR\n  x"),
    ],
)
def test_merge_tags_render_escaped(source, context, expected):
    assert compile_template(source).render(context) == expected


def test_fragment_without_tags_is_static():
    t = compile_template("<p>plain</p>")
    assert t.is_static and t.render({}) == "<p>plain</p>"


@pytest.mark.parametrize(
    "source, offset, reason",
    [
        ("ab {{ weather }}", 3, "unknown merge tag key 'weather'"),
        ("{{ cty }}", 0, "unknown merge tag key 'cty' (did you mean 'city'?)"),
        ("x{{ city | upper }}", 1, "unknown merge tag filter 'upper': only default is supported"),
        ("{{ city | default }}", 0, 'the default filter needs a quoted text: default: "text"'),
        ("{{ 1city }}", 0, "malformed merge tag '{{ 1city }}'"),
        ("{{ }}", 0, "malformed merge tag '{{ }}'"),
        ("ok {{ city", 3, "merge tag opened with {{ is never closed with }}"),
    ],
)
def test_bad_merge_tag_is_a_load_error(source, offset, reason):
    with pytest.raises(TemplateError) as info:
        compile_template(source)
    assert info.value.offset == offset
    assert info.value.reason.startswith(reason)


# ---------------------------------------------------------------------------
# Balance check
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fragment",
    [
        "",
        "plain text, 1 < 2 and 3 > 2",
        "<h1>Hi</h1><p>a <b>b</b> <i>c</i></p>",
        '<img src="a.png" alt="x > y"><br><hr/><input type=checkbox checked>',
        "<svg><path d='M0 0'/></svg>",
        "<!-- a <div> in a comment --><p>x</p>",
        "<!DOCTYPE html><p>x</p>",
        '<script>if (a < b) { document.write("</div>") }</script>',
        "<style>p > a { color: red }</style>",
        "<textarea><b>not a tag</textarea>",
        '<a href="/c/{{ city }}" data-x=\'{"a": 1}\'>x</a>',
        "<DIV>case-insensitive</div>",
        "<ul>\n  <li>a</li>\n  <li>b</li>\n</ul>",
    ],
)
def test_balanced_fragments_pass(fragment):
    check_balanced(fragment)


@pytest.mark.parametrize(
    "fragment, offset, reason",
    [
        ("<div><p>x</p>", 0, "unclosed <div>: no </div> before the end of the fragment"),
        ("<p>x</p></p>", 8, "unexpected </p>: no element is open"),
        ("<div><span>x</div>", 12, "unexpected </div>: <span> opened on line {related} is still open"),
        ("<ul><li>a<li>b</ul>", 14, "unexpected </ul>: <li> opened on line {related} is still open"),
        ("x <!-- never closed", 2, "unterminated comment: <!-- has no -->"),
        ("<br></br>", 4, "unexpected </br>: <br> is a void element and takes no end tag"),
        ('<a href="x>y', 0, "unterminated start tag <a: no closing >"),
        ("<style>p{}", 0, "unclosed <style>: no </style>"),
        ("<p>x</p ", 4, "malformed end tag '</p '"),
    ],
)
def test_unbalanced_fragments_fail_at_the_offending_tag(fragment, offset, reason):
    with pytest.raises(BalanceError) as info:
        check_balanced(fragment)
    assert (info.value.offset, info.value.reason) == (offset, reason)


def test_balance_check_is_linear_on_pathological_input():
    import time

    t0 = time.perf_counter()
    with pytest.raises(BalanceError):
        check_balanced("<div " + "a" * 50_000)
    with pytest.raises(BalanceError):
        check_balanced("<div " + " " * 50_000 + "=" * 10_000)
    assert time.perf_counter() - t0 < 1.0
