"""edgeproxy.rewrite.native: the compiled byte loop gives the pure one's
answers, on every construct, every chunking, real pages and hostile bytes;
both stay linear in the input; the build says which one runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeproxy.model import Observe, ReplaceInner, SortChildren, SortKey
from edgeproxy.rewrite import SlotRewriter, native, rewrite_document
from edgeproxy.rewrite import scanner as sc
from edgeproxy.rewrite import sort as sort_mod

compiled = pytest.mark.skipif("compiled" not in native.available(), reason="the compiled scanner is not built here")
PAGES = Path(__file__).parent / "data" / "html"

EDITS = {
    "hero": ReplaceInner("<b>H</b>"),
    "seen": Observe(),
    "grid": SortChildren((SortKey("affinity"), SortKey("attr", attr="data-price")), affinity=("a", "b")),
    "pins": SortChildren((SortKey("pin", skus=("S2", "S1")), SortKey("attr", attr="DATA-Name", descending=True))),
}

# Every construct the scanner has to read right, markers in every context.
PIECES = [
    "text ", "\n", "x&amp;y", "é", "<", ">", '"', "'", "=", "/", "-", "--", "< ", "<1", "</", "</>", "</ x>", "</1>",
    "<div>", "</div>", "<DIV class=x>", "</DiV >", "<div/>", "<p>", "</p>", "<br>", "<li>", "</li>", "<ul>", "</ul>",
    "<span data-sku=S1>s</span>", "<span data-sku='S2'>", "</span>",
    '<li data-price="3" data-category="a">', "<li data-price=1.5 data-category='b c'>", "<li data-price='x'>",
    "<li data-price>", "<li data-category = a data-price = 2 >", "<li DATA-PRICE=7>", "<li data-name=\"Zed\">",
    "<li data-price=\"4\" data-price=\"0\">", "<li =x data-price=5>", "<li data-price=&#49;>",
    '<div data-edge-slot="hero">', "<div data-edge-slot=hero>", "<section data-edge-slot='hero' class=h>",
    "<div data-edge-slot = \"hero\" >", "<div\tdata-edge-slot=hero\n>", "<DIV DATA-EDGE-SLOT=hero>",
    "<ul data-edge-slot=grid>", '<div data-edge-slot="grid">', "<ol data-edge-slot=pins>", "<div data-edge-slot=seen>",
    "<div data-edge-slot=hero/>", "<input data-edge-slot=hero>", "<div data-edge-slot>", "<div data-edge-slot-x=hero>",
    "data-edge-slot", "data-edge-slot=hero", "<img alt=\"<div data-edge-slot=hero>\">", "<img alt='</div>'>",
    "<a title=\"x\" href=y>", "</a>", "<div title=\"unterminated", "<div a='b>'>", "<div a=b>c>",
    "<!-- c -->", "<!-->", "<!--->", "<!---->", "<!-- <div data-edge-slot=hero> -->", "<!--", "-->", "--!>",
    "<!DOCTYPE html>", "<!x>", "<?php echo '<div>' ?>",
    "<script>", "</script>", "<script>if (a<b) document.write('</div>')</script>", "<script type=x>/*<!--*/</script >",
    "<style>div>p{}</style>", "<textarea><div data-edge-slot=hero></textarea>", "<title>t</title>",
    "<template><div></template>", "<template>", "</template>", "<xmp><b></xmp>", "<noscript><div></noscript>",
    "<iframe>x</iframe>", "<noembed>", "<noframes></noframes>", "<plaintext>",
    "<svg><![CDATA[ <div> ]]></svg>", "<math><![CDATA[</div>]]></math>", "<é>", "</é>", "<diva>", "</diva>",
    "<SCRIPT>", "</Script >", "<TEMPLATE>", "</TEMPLATE>", "<Title>", "</TITLE>", "<STYLE/>", "<textarea ", "\x00",
    "<div data-edge-slot=grid>", "</div/>", "<li/>", "<ul data-edge-slot=grid data-edge-slot=hero>",
]


def html_docs(max_pieces: int = 40):
    return st.lists(st.sampled_from(PIECES), max_size=max_pieces).map(lambda ps: "".join(ps).encode())


def cuts_for(doc: bytes):
    return st.lists(st.integers(0, max(len(doc), 1)), max_size=12).map(sorted)


def run(impl: str, doc: bytes, cuts: list[int], cap: int, edits=EDITS):
    native.use(impl)
    rw = SlotRewriter(edits, max_slot_bytes=cap)
    out, prev = [], 0
    for c in [*cuts, len(doc)]:
        out.append(rw.feed(doc[prev:c]))
        prev = max(prev, c)
    out.append(rw.finish())
    return b"".join(out), rw.outcomes


@pytest.fixture
def restore_impl():
    before = native.ACTIVE
    yield
    native.use(before)


@compiled
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), cap=st.sampled_from([8, 64, 1 << 20]))
def test_compiled_and_pure_rewrite_every_construct_alike_in_any_chunking(restore_impl, data, cap):
    doc = data.draw(html_docs())
    cuts = data.draw(cuts_for(doc))
    assert run("compiled", doc, cuts, cap) == run("pure", doc, cuts, cap)


@compiled
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=html_docs(25))
def test_one_byte_chunks_give_the_whole_document_answer(restore_impl, doc):
    whole = run("pure", doc, [], 1 << 20)
    ones = list(range(1, len(doc)))
    assert run("compiled", doc, ones, 1 << 20) == whole
    assert run("pure", doc, ones, 1 << 20) == whole


# ---------------------------------------------------------------------------
# The primitives, one by one, against the pure reference.
# ---------------------------------------------------------------------------
def drive(finder, doc: bytes, cuts: list[int], cap: int, start: int) -> list[tuple]:
    """The answers of ``finder`` fed ``doc`` in pieces, with its depth.  Not
    its ``pos`` / ``tok``: the compiled finder reads a stretch of tags in one
    pass where the pure one searches and checks, so it may stop elsewhere
    between two answers (each answer is the same)."""
    results = []
    for c in [*cuts, len(doc)]:
        r = finder.run(doc[: max(c, start)], False, cap)
        results.append((r, finder.depth))
        if r[0] != "need":
            return results
    results.append((finder.run(doc, True, cap), finder.depth))
    return results


@compiled
@settings(max_examples=400, deadline=None)
@given(data=st.data(), name=st.sampled_from(["div", "li", "ul", "span", "template", "script", "p", "a", "diva"]),
       cap=st.sampled_from([4, 40, 1 << 20]))
def test_end_finder_states_agree(data, name, cap):
    doc = data.draw(html_docs())
    start = data.draw(st.integers(0, len(doc)))
    cuts = data.draw(cuts_for(doc))
    a = drive(native._compiled.EndFinder(name, start), doc, cuts, cap, start)
    b = drive(sc.EndFinder(name, start), doc, cuts, cap, start)
    assert a == b


@compiled
@settings(max_examples=400, deadline=None)
@given(data=st.data(), stop=st.sampled_from([None, "ul", "div", "ol"]))
def test_walk_children_agrees_with_the_pure_walk(data, stop):
    doc = data.draw(html_docs())
    base = data.draw(st.integers(0, len(doc)))

    def pure():
        try:
            return ("ok", *sort_mod._walk_pure(doc, base, stop))
        except sort_mod._Need as need:
            return ("need", need.pos, need.els, need.spans)
        except sort_mod._Unknown:
            return ("unknown",)
        except sort_mod.SortError as e:
            return ("error", str(e))

    def comp():
        native.use("compiled")
        try:
            return ("ok", *sort_mod._walk(doc, base, stop))
        except sort_mod._Need as need:
            return ("need", need.pos, need.els, need.spans)
        except sort_mod._Unknown:
            return ("unknown",)
        except sort_mod.SortError as e:
            return ("error", str(e))
        finally:
            native.use("pure")

    try:
        assert comp() == pure()
    finally:
        native.use("compiled")


@compiled
@settings(max_examples=300, deadline=None)
@given(doc=html_docs(), names=st.lists(st.sampled_from([b"data-price", b"data-category", b"data-sku", b"=", b"a", b"x"]),
                                      min_size=1, max_size=3, unique=True))
def test_attr_values_agree_with_attr_findall(doc, names):
    spans = [(m.end(1), m.end()) for m in sc.START_TAG.finditer(doc) if m.end() < len(doc) and doc[m.end()] == 0x3E]
    wanted = {n: n.decode() for n in names}
    for encoding, ascii_same in (("utf-8", True), ("utf-8", False), ("utf-7", False)):
        pure = [sort_mod._attrs(doc, span, wanted, encoding) for span in spans]
        rows, all_text = native._compiled.attr_values(doc, spans, tuple(wanted), tuple(wanted.values()), ascii_same)
        assert all_text == all(type(v) is str for row in rows for v in row.values())
        comp = [{k: v if type(v) is str else sc.attr_value(v, encoding) for k, v in row.items()} for row in rows]
        assert comp == pure


@compiled
@settings(max_examples=400, deadline=None)
@given(data=st.data(), final=st.booleans())
def test_contexts_until_agrees_with_the_pure_loop(data, final):
    doc = data.draw(html_docs())
    limit = data.draw(st.integers(0, len(doc)))
    pure_rw = SlotRewriter({"x": ReplaceInner("")})
    native.use("pure")
    try:
        pure_state = pure_rw._contexts_until(bytearray(doc), limit, final)
    finally:
        native.use("compiled")
    comp = native._compiled.contexts_until(bytearray(doc), 0, 0, limit, final)
    assert comp == (pure_state, pure_rw._pos, pure_rw._opos)


NUMBERISH = st.text(alphabet="0123456789+-.eE \t\n\x0b\x1c\x85xé١", max_size=12)


@compiled
@settings(max_examples=600, deadline=None)
@given(values=st.lists(st.none() | NUMBERISH | st.sampled_from(["12.50", " 7 ", "1e400", "-0", ".5", "5.", "x"]),
                       max_size=8),
       descending=st.booleans())
def test_attr_key_agrees_with_the_pure_sort_key(values, descending):
    keys = native._compiled.attr_key(values, descending)
    if keys is not None:
        assert keys == sort_mod._attr_key_pure(values, descending)
    elif all(v is None or v.isascii() for v in values):
        # Only a list without any number is left to the pure key.
        assert all(k == (1,) or type(k[1]) is not float for k in sort_mod._attr_key_pure(values, descending))


SORT_EDITS = [
    EDITS["grid"],
    EDITS["pins"],
    SortChildren((SortKey("attr", attr="data-price", descending=True),)),
    SortChildren((SortKey("affinity"), SortKey("pin", skus=("S1", "é", "S 2", "S2"))), affinity=("b", "a b", "é", "c")),
    SortChildren((SortKey("attr", attr="Data-Category"), SortKey("attr", attr="data-price"))),
    SortChildren((SortKey("attr", attr="dätä"),)),
]
ATTR_VALUES = st.sampled_from(["1", "2.5", " 3 ", "-1", "1e3", "x", "", "a", "b c", "\x0bb\x1c", "S1", "S2", "é", "&#49;",
                               "1e999", "\x1b", "00000000000000000000000000000000000000000000000000000000000000000000000001"])


@st.composite
def grids(draw):
    """Sort containers' bodies: children with sort attributes (every
    quoting, duplicates, odd values) between separators."""
    parts = []
    for _ in range(draw(st.integers(0, 9))):
        attrs = []
        for _ in range(draw(st.integers(0, 4))):
            name = draw(st.sampled_from(["data-price", "DATA-PRICE", "data-category", "data-sku", "data-x", "data-category"]))
            quote = draw(st.sampled_from(['"', "'", "", None]))
            value = draw(ATTR_VALUES)
            if quote is None:
                attrs.append(name)
            elif quote == "":
                attrs.append(f"{name}={value.strip() or 'v'}".replace(" ", "_"))
            else:
                attrs.append(f"{name}={quote}{value}{quote}")
        tag = draw(st.sampled_from(["li", "div", "img"]))
        parts.append(draw(st.sampled_from(["", "\n ", "<!-- c -->", "<script>x</script>", "t"])))
        parts.append(f"<{tag} {' '.join(attrs)}>" + ("" if tag == "img" else f"x</{tag}>"))
    return "".join(parts).encode()


@compiled
@settings(max_examples=500, deadline=None)
@given(doc=grids() | html_docs(), edit=st.sampled_from(SORT_EDITS), encoding=st.sampled_from(["utf-8", "utf-7"]))
def test_sort_body_agrees_with_the_pure_sort(doc, edit, encoding):
    try:
        _, els, spans = sort_mod._split(doc)
    except sort_mod.SortError:
        return
    rel = [(a, b) for a, b in spans]
    specs = sort_mod._specs(edit)
    if specs is None:
        return
    got = native._compiled.sort_body(doc, 0, len(doc), els, rel, specs, sort_mod._ascii_same(encoding))
    before = native.ACTIVE
    native.use("pure")
    try:
        parts = sort_mod.sort_parts(doc, 0, len(doc), edit, encoding, (els, spans))
    finally:
        native.use(before)
    if got is None:  # left to the pure code
        return
    assert got == (True if parts is None else b"".join(parts))


MARKER_TAILS = st.lists(st.sampled_from(['=', ' ', '\t', '"', "'", "hero", "a&amp;b", "é", ">", "/", "-x", "=hero", "&", "\x0b"]),
                        max_size=8).map(lambda ps: "".join(ps).encode())


@compiled
@settings(max_examples=800, deadline=None)
@given(tail=MARKER_TAILS | st.binary(max_size=80), head=st.sampled_from([b"", b"<div ", b"x"]))
def test_marker_value_agrees_with_the_marker_pattern(tail, head):
    for buf in (head + sc.MARKER + tail, bytearray(head + sc.MARKER + tail) + b" " * 70):
        assert native._compiled.marker_value(buf, len(head)) == sc.marker_value(buf, len(head))


@compiled
@settings(max_examples=600, deadline=None)
@given(data=st.data())
def test_tokens_end_agrees_with_the_tokens_pattern(data):
    doc = data.draw(html_docs() | st.binary(max_size=120))
    pos = data.draw(st.integers(-3, len(doc) + 3))
    endpos = data.draw(st.integers(-3, len(doc) + 3))
    for buf in (doc, bytearray(doc)):
        assert native._compiled.tokens_end(buf, pos, endpos) == sc.TOKENS.match(buf, pos, endpos).end()


@compiled
@settings(max_examples=300, deadline=None)
@given(data=st.data(), final=st.booleans())
def test_skip_context_and_element_end_agree(data, final):
    doc = data.draw(html_docs())
    opens = [m for m in sc.OPENER.finditer(doc)] + [m for m in sc.START_TAG.finditer(doc)][:3]
    for m in opens:
        q = m.start()
        if doc.startswith(b"<!--", q):
            kind = "!--"
        else:
            kind = sc.tag_name(doc, q)
            if kind not in sc.RAW_TEXT:
                if kind.isascii():
                    assert native._compiled.element_end(doc, m.end(), kind, final) == sc.element_end(doc, m.end(), kind, final)
                continue
        assert native._compiled.skip_context(doc, q, kind, final) == sc.skip_context(doc, q, kind, final)


@compiled
@pytest.mark.parametrize("page_name", sorted(p.name for p in PAGES.glob("*.html")))
def test_real_pages_rewrite_alike(restore_impl, page_name):
    page = (PAGES / page_name).read_bytes()
    # Mark every 40th <div (whatever context it is in) as one of the slots.
    parts = page.split(b"<div ")
    names = [b"hero", b"grid", b"seen", b"pins", b"other"]
    page = parts[0] + b"".join(
        (b"<div data-edge-slot=" + names[i // 40 % len(names)] + b" " if i % 40 == 0 else b"<div ") + part
        for i, part in enumerate(parts[1:])
    )
    for cuts in ([], list(range(0, len(page), 1000)), list(range(7, len(page), 8191))):
        assert run("compiled", page, cuts, 1 << 20) == run("pure", page, cuts, 1 << 20)


# ---------------------------------------------------------------------------
# Hostile input: any bytes, any offsets; no crash, and the rewriter's answer.
# ---------------------------------------------------------------------------
@compiled
@settings(max_examples=300, deadline=None)
@given(buf=st.binary(max_size=200) | html_docs(), a=st.integers(-300, 300), b=st.integers(-300, 300), final=st.booleans())
def test_compiled_functions_take_any_bytes_and_offsets(buf, a, b, final):
    c = native._compiled
    for name in ("div", "x", "template"):
        f = c.EndFinder(name, a)
        f.run(buf, final, b)
        f.shift(a)
        f.run(bytearray(buf), final, abs(b))
    c.walk_children(buf, a, None)
    c.walk_children(buf, a, "div")
    c.attr_values(buf, [(a, b), (b, a), (0, len(buf))], (b"x", b"data-price"), ("x", "p"), final)
    c.contexts_until(buf, a, b, len(buf) + a, final)
    c.tokens_end(buf, a, b)
    c.attr_key([buf.decode("latin-1"), None], final)
    if 0 <= a < len(buf) and buf[a:a + 1] == b"<":
        for kind in ("!--", "script", "template", "plaintext"):
            c.skip_context(buf, a, kind, final)
    with pytest.raises(ValueError):
        c.skip_context(buf, len(buf), "!--", final)
    with pytest.raises(TypeError):
        c.walk_children(memoryview(buf), 0, None)


@compiled
def test_deeply_nested_templates_fail_open_not_crash(restore_impl, caplog):
    doc = b"<div data-edge-slot=hero>" + b"<template>" * 5000 + b"x" + b"</template>" * 5000 + b"</div><p>after</p>"
    native.use("compiled")
    with caplog.at_level("ERROR", logger="edgeproxy.rewrite"):
        out, outcomes = rewrite_document(doc, {"hero": ReplaceInner("N")})
    assert out == doc and outcomes == {"hero": "failed"}  # RecursionError -> the origin's bytes
    assert "passes through as the origin sent it" in caplog.text and "RecursionError" in caplog.text


# ---------------------------------------------------------------------------
# Linear in bytes (issue 8, item 5): 4x the input at most ~4x the CPU time.
# Quadratic work would give 16x; the bound is 10x (linear measures 3.3-4.7x
# here), on thread CPU time, best of three, so a busy machine does not make
# it flake.
# ---------------------------------------------------------------------------
def cpu(fn) -> float:
    """Thread CPU seconds per call of ``fn``: best of three samples, each
    of as many calls as take 2 ms (a call can take microseconds now)."""
    best = float("inf")
    for _ in range(3):
        calls, t0 = 0, time.thread_time()
        while True:
            fn()
            calls += 1
            spent = time.thread_time() - t0
            if spent >= 2e-3:
                break
        best = min(best, spent / calls)
    return best


def grid(children: int) -> bytes:
    items = b"".join(b'<li data-price="%d" data-category="%s"><a href="/p/%d">item</a></li>\n' % (i * 7 % 101, b"ab"[i % 2 : i % 2 + 1], i) for i in range(children))
    return b"<html><body><ul data-edge-slot=grid>" + items + b"</ul><p>end</p></body></html>"


GROWERS = {
    "children of a sorted grid": lambda k: grid(1250 * k),  # 5,000 children at k=4
    "a 2 MB grid (divs in divs)": lambda k: b"<div data-edge-slot=grid>" + b"<div data-price=1><div><p>x</p></div></div>" * (12_000 * k) + b"</div>",
    "a run of '<'": lambda k: b"<div data-edge-slot=hero>" + b"<" * (50_000 * k) + b"</div>",  # 200,000 at k=4
    "an unclosed comment before a slot": lambda k: b"<!--" + b"<div data-edge-slot=hero>x</div>" * (20_000 * k),
    # (400 KB at k=4: the compiled rewrite of it is two copies of the page,
    # and copies of 600 KB and more leave the CPU caches and fault in fresh
    # pages here, which is not the algorithm's doing (measured: 150 KB 16 us,
    # 600 KB 360 us); test_a_10_mb_attribute_value_is_rewritten_and_passed_through covers 10 MB)
    "a huge attribute value": lambda k: b"<div data-edge-slot=hero title='" + b"x" * (100_000 * k) + b"'>y</div>",
    "an unterminated quote in a slot": lambda k: b"<div data-edge-slot=hero><p title=\"" + b"<div></div>" * (20_000 * k) + b"</div>",
}


@pytest.mark.parametrize("impl", native.available())
@pytest.mark.parametrize("what", sorted(GROWERS))
def test_rewrite_time_is_linear_in_bytes(restore_impl, impl, what):
    native.use(impl)
    edits = {"grid": EDITS["grid"], "hero": EDITS["hero"]}
    small, large = GROWERS[what](1), GROWERS[what](4)
    t_small = cpu(lambda: rewrite_document(small, edits, max_slot_bytes=64 << 20))
    t_large = cpu(lambda: rewrite_document(large, edits, max_slot_bytes=64 << 20))
    assert t_large / t_small < 10, f"{what}: 4x the bytes took {t_large / t_small:.1f}x the time ({impl})"


@pytest.mark.parametrize("impl", native.available())
def test_a_10_mb_attribute_value_is_rewritten_and_passed_through(restore_impl, impl):
    native.use(impl)
    value = b"x" * 10_000_000
    doc = b"<div data-edge-slot=hero title='" + value + b"'>y</div><p title='" + value + b"'>z</p>"
    out, outcomes = rewrite_document(doc, {"hero": EDITS["hero"]})
    assert outcomes == {"hero": "applied"} and out == doc.replace(b">y<", b"><b>H</b><", 1)


def peak_memory(doc: bytes, edits) -> int:
    """Peak bytes allocated while ``doc`` streams through in 64 KB chunks."""
    import tracemalloc

    tracemalloc.start()
    try:
        rw = SlotRewriter(edits)
        for i in range(0, len(doc), 65536):
            rw.feed(doc[i : i + 65536])
        rw.finish()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("impl", native.available())
@pytest.mark.parametrize("what", sorted(GROWERS))
def test_rewrite_memory_grows_at_most_linearly(restore_impl, impl, what):
    native.use(impl)
    edits = {"grid": EDITS["grid"], "hero": EDITS["hero"]}
    small, large = peak_memory(GROWERS[what](1), edits), peak_memory(GROWERS[what](4), edits)
    assert large < 5 * small + (1 << 20), f"{what}: 4x the bytes took {large / small:.1f}x the memory ({impl})"


@pytest.mark.parametrize("impl", native.available())
def test_a_page_without_slots_streams_in_bounded_memory(restore_impl, impl):
    native.use(impl)
    page = b"<p class=x>text <a href=/y>link</a></p><!-- c --><script>s()</script>\n"
    small = peak_memory(page * 10_000, {"hero": EDITS["hero"]})
    large = peak_memory(page * 80_000, {"hero": EDITS["hero"]})  # ~5.6 MB
    assert large < 1.5 * small + (256 << 10) and large < 8 << 20


# ---------------------------------------------------------------------------
# Which one runs, and how to force the pure one.
# ---------------------------------------------------------------------------
def test_no_extensions_forces_the_pure_scanner_and_version_says_so():
    env = {**os.environ, "EDGEPROXY_NO_EXTENSIONS": "1"}
    out = subprocess.run([sys.executable, "-m", "edgeproxy", "--version"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("(scanner: pure)")
    code = "from edgeproxy.rewrite import native; print(native.ACTIVE, native.available())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "pure" and "compiled" not in out.stdout


@compiled
def test_the_compiled_scanner_is_the_default_when_built():
    env = {k: v for k, v in os.environ.items() if k != "EDGEPROXY_NO_EXTENSIONS"}
    out = subprocess.run([sys.executable, "-m", "edgeproxy", "--version"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("(scanner: compiled)")


def test_build_info_metric_names_the_active_scanner():
    from prometheus_client import generate_latest

    from edgeproxy.record import Metrics

    text = generate_latest(Metrics().registry).decode()
    line = next(line for line in text.splitlines() if line.startswith("edgeproxy_build_info{"))
    assert f'scanner="{native.ACTIVE}"' in line and line.endswith(" 1.0")


def test_use_refuses_an_unknown_name():
    with pytest.raises(ValueError, match="unknown scanner"):
        native.use("fast")


# ---------------------------------------------------------------------------
# The fuzz corpus (load_tests/corpus/scanner) and a short bounded fuzz run.
# ---------------------------------------------------------------------------
@compiled
def test_fuzz_corpus_and_a_short_random_fuzz_run_find_no_difference(restore_impl, capsys):
    from load_tests import fuzz_scanner

    corpus = fuzz_scanner.seeds()
    assert len(corpus) >= 20
    target = fuzz_scanner.make_target(native)
    for data in corpus:
        target(data)
    assert fuzz_scanner.main(["--engine", "random", "--seconds", "1"]) == 0
    assert "compiled == pure on all" in capsys.readouterr().out


@compiled
def test_an_address_sanitizer_build_fuzzes_clean():
    """load_tests/asan_scanner.py: the module built with -fsanitize=address,
    fuzzed for two seconds (exit 77: no compiler, libasan or Cython here)."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "load_tests.asan_scanner", "--seconds", "2"], cwd=root, capture_output=True, text=True, timeout=300
    )
    if proc.returncode == 77:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "compiled == pure on all" in proc.stdout and "ERROR: AddressSanitizer" not in proc.stderr


def test_the_docker_build_stage_compiles_the_scanner_and_checks_the_wheel():
    text = (Path(__file__).resolve().parents[1] / "Dockerfile").read_text()
    build = text.split("\nFROM ", 2)[1]  # the build stage only
    install_gcc = build.index("apt-get install")
    assert "gcc" in build[install_gcc:].split("\n")[0] and "setup.py" in build
    assert install_gcc < build.index("RUN pip wheel") < build.index("the compiled scanner is missing")
