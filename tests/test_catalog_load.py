"""Loading and validating the slots/ folder (CONTRACT §2)."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from edgeproxy.catalog import load_catalog
from edgeproxy.model import ReplaceInner, SortChildren, SortKey

UTC = dt.timezone.utc


def write(root: Path, rel: str, text: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def errors_of(root: Path, **kw) -> list[str]:
    catalog = load_catalog(root, **kw)
    return [str(e).removeprefix(str(root) + "/") for e in catalog.errors]


@pytest.fixture
def slots(tmp_path: Path) -> Path:
    return tmp_path / "slots"


# ---------------------------------------------------------------------------
# What loads
# ---------------------------------------------------------------------------
def test_content_variant_has_header_keys_and_fragment(slots):
    write(slots, "hero/black-friday-uk.html", """
        <!--edge
        when = { country = ["GB", "IE"], device = "mobile" }
        priority = 10
        start = 2026-11-27T00:00:00Z
        end = 2026-12-01T00:00:00Z
        description = "BF hero for UK and Ireland phones"
        -->
        <h1>Black Friday: free next-day delivery</h1>
    """)
    catalog = load_catalog(slots)
    assert catalog.errors == ()
    v = catalog.variant("hero", "black-friday-uk")
    assert v is not None
    assert v.kind == "content"
    assert v.priority == 10
    assert v.specificity == 2
    assert v.start == dt.datetime(2026, 11, 27, tzinfo=UTC)
    assert v.end == dt.datetime(2026, 12, 1, tzinfo=UTC)
    assert v.description == "BF hero for UK and Ireland phones"
    assert v.static_edit == ReplaceInner("<h1>Black Friday: free next-day delivery</h1>")
    assert v.match_reason == "priority 10, matched country=GB|IE device=mobile"


def test_empty_header_means_everyone_at_priority_zero(slots):
    write(slots, "banner/all.html", "<!--edge -->\n<p>Hello</p>\n")
    v = load_catalog(slots).variant("banner", "all")
    assert v.when == () and v.priority == 0 and v.match_reason == "priority 0, everyone"


def test_empty_fragment_is_allowed_and_empties_the_slot(slots):
    write(slots, "banner/hide.html", "<!--edge\nwhen = { device = \"bot\" }\n-->\n")
    assert load_catalog(slots).variant("banner", "hide").static_edit == ReplaceInner("")


def test_fragment_with_merge_tags_has_no_static_edit(slots):
    write(slots, "hero/hi.html", '<!--edge -->\n<p>Hi {{ city | default: "there" }}</p>')
    v = load_catalog(slots).variant("hero", "hi")
    assert v.static_edit is None and v.template.keys == ("city",)


@pytest.mark.parametrize(
    "sort, keys",
    [
        (['"affinity"'], (SortKey("affinity"),)),
        (['"data-price"'], (SortKey("attr", attr="data-price"),)),
        (['"-data-stock"'], (SortKey("attr", attr="data-stock", descending=True),)),
        (['"+data-price"'], (SortKey("attr", attr="data-price"),)),
        (['"pin:A1,B7"'], (SortKey("pin", skus=("A1", "B7")),)),
        (['"pin: A1 , B7 "'], (SortKey("pin", skus=("A1", "B7")),)),
        (['"affinity"', '"-data-stock"'], (SortKey("affinity"), SortKey("attr", attr="data-stock", descending=True))),
    ],
)
def test_sort_variant_keys_become_sort_keys(slots, sort, keys):
    write(slots, "grid/s.toml", f"sort = [{', '.join(sort)}]\n")
    v = load_catalog(slots).variant("grid", "s")
    assert v.kind == "sort" and v.sort == keys


def test_sort_without_affinity_is_precomputed(slots):
    write(slots, "grid/s.toml", 'sort = ["-data-stock"]\n')
    assert load_catalog(slots).variant("grid", "s").static_edit == SortChildren((SortKey("attr", attr="data-stock", descending=True),), ())


def test_variants_are_in_precedence_order(slots):
    # priority desc, then specificity (keys in when) desc, then file name asc
    write(slots, "hero/a-low.html", "<!--edge\npriority = 1\n-->\nx")
    write(slots, "hero/b-high.html", "<!--edge\npriority = 5\n-->\nx")
    write(slots, "hero/c-high-specific.html", '<!--edge\npriority = 5\nwhen = { device = "mobile" }\n-->\nx')
    write(slots, "hero/d-high.html", "<!--edge\npriority = 5\n-->\nx")
    write(slots, "hero/e-negative.html", "<!--edge\npriority = -3\n-->\nx")
    order = [v.id for v in load_catalog(slots).slots["hero"].variants]
    assert order == ["c-high-specific", "b-high", "d-high", "a-low", "e-negative"]


@pytest.mark.parametrize(
    "value, expected",
    [
        # offset date-time as written
        ("2026-11-27T09:00:00+01:00", dt.datetime(2026, 11, 27, 8, tzinfo=UTC)),
        # local date-time (no offset) is UTC
        ("2026-11-27T09:00:00", dt.datetime(2026, 11, 27, 9, tzinfo=UTC)),
        # a bare date is midnight UTC
        ("2026-11-27", dt.datetime(2026, 11, 27, tzinfo=UTC)),
        # a quoted ISO text is forgiven
        ('"2026-11-27T09:00:00Z"', dt.datetime(2026, 11, 27, 9, tzinfo=UTC)),
    ],
)
def test_start_forms(slots, value, expected):
    write(slots, "hero/a.html", f"<!--edge\nstart = {value}\n-->\nx")
    v = load_catalog(slots).variant("hero", "a")
    assert v.start == expected
    assert v.start_ts == expected.timestamp()


def test_experiment_arms_take_consecutive_ranges_in_file_name_order(slots):
    write(slots, "hero/b.html", '<!--edge\nexperiment = { name = "bf", weight = 30 }\n-->\nb')
    write(slots, "hero/a.html", '<!--edge\nexperiment = { name = "bf", weight = 20 }\n-->\na')
    arms = load_catalog(slots).slots["hero"].experiments["bf"]
    assert [(a.variant.id, a.lo, a.hi) for a in arms] == [("a", 0, 20), ("b", 20, 50)]


def test_unknown_files_and_folders_are_ignored(slots):
    write(slots, "hero/a.html", "<!--edge -->\nx")
    for junk in ["hero/README.md", "hero/.DS_Store", "hero/a.html~", "hero/.#a.html", "hero/#a.html#",
                 "hero/.a.html.swp", "hero/notes.txt", "README.md", ".git/config", ".hidden/x.html"]:
        write(slots, junk, "<<< not a variant")
    catalog = load_catalog(slots)
    assert catalog.errors == ()
    assert list(catalog.slots) == ["hero"]
    assert [v.id for v in catalog.slots["hero"].variants] == ["a"]


def test_empty_slot_folder_is_a_slot_without_variants(slots):
    (slots / "banner").mkdir(parents=True)
    catalog = load_catalog(slots)
    assert catalog.slots["banner"].variants == () and catalog.errors == ()


def test_missing_folder_gives_an_empty_catalog_marked_missing(tmp_path):
    catalog = load_catalog(tmp_path / "nope")
    assert catalog.missing and not catalog.slots and catalog.errors == ()


def test_crlf_and_bom_files_load(slots):
    write(slots, "hero/a.html", b'\xef\xbb\xbf<!--edge\r\nwhen = { device = "mobile" }\r\n-->\r\n<p>x</p>\r\n')
    v = load_catalog(slots).variant("hero", "a")
    assert v.static_edit == ReplaceInner("<p>x</p>")


# ---------------------------------------------------------------------------
# Validation errors: `file:line: reason`, with the line in the file
# ---------------------------------------------------------------------------
ERROR_CASES = [
    # -- TOML syntax: tomllib's line, shifted by the header's position
    ("hero/a.html", '<!--edge\nwhen = { device = "mobile" }\npriority = = 5\n-->\nx',
     "hero/a.html:3: invalid TOML: Invalid value"),
    ("hero/a.html", '\n\n<!--edge\npriority = 1\nwhen = device\n-->\nx',
     "hero/a.html:5: invalid TOML: Invalid value"),
    ("hero/a.html", '<!--edge priority = = 1 -->\nx',
     "hero/a.html:1: invalid TOML: Invalid value"),
    ("grid/s.toml", 'sort = ["affinity"]\npriority = 2\nwhen = { device = "mobile"\n',
     "grid/s.toml:3: invalid TOML: Unclosed inline table"),
    ("hero/a.html", '<!--edge\npriority = 1\nstart = 2026-13-01T00:00:00Z\n-->\nx',
     "hero/a.html:3: invalid TOML: Expected newline or end of document after a statement (write dates like 2026-11-27T00:00:00Z)"),
    # -- unknown keys
    ("hero/a.html", '<!--edge\nwhen = { device = "mobile" }\nprority = 5\n-->\nx',
     "hero/a.html:3: unknown key 'prority' (did you mean 'priority'?)"),
    ("hero/a.html", '<!--edge\nsort = ["affinity"]\n-->\nx',
     "hero/a.html:2: sort belongs in a .toml sort variant; an .html variant replaces the slot's content"),
    ("hero/a.html", '<!--edge\n\nexperiment = { name = "bf", wieght = 5 }\n-->\nx',
     "hero/a.html:3: unknown key 'wieght' in experiment (did you mean 'weight'?)"),
    ("hero/a.html", '<!--edge\ncap = { views = 3, every = "day" }\n-->\nx',
     "hero/a.html:2: unknown key 'every' in cap (allowed: per, views)"),
    # -- unknown context keys
    ("hero/a.html", '<!--edge\npriority = 1\nwhen = { contry = "GB" }\n-->\nx',
     "hero/a.html:3: unknown context key 'contry' in when (did you mean 'country'?)"),
    ("hero/a.html", '<!--edge\npriority = 1\n[when]\ncountry = "GB"\ndevise = "mobile"\n-->\nx',
     "hero/a.html:5: unknown context key 'devise' in when (did you mean 'device'?)"),
    ("hero/a.html", '<!--edge\nwhen.weather = "rain"\n-->\nx',
     "hero/a.html:2: unknown context key 'weather' in when (known: country, region, city, continent, device, os, "
     "browser, source, utm_source, utm_medium, utm_campaign, visitor, customer, logged_in, cart, affinity, hour, "
     "weekday, daypart, path, consent)"),
    # -- bad values, on the line of their key
    ("hero/a.html", '<!--edge\nwhen = {\n  device = "phone" }\n-->\nx',
     "hero/a.html:2: invalid TOML: Invalid initial character for a key part"),
    ("hero/a.html", '<!--edge\n[when]\ncountry = "GB"\ndevice = "phone"\n-->\nx',
     "hero/a.html:4: device: 'phone' is not one of bot, desktop, mobile, tablet"),
    ("hero/a.html", '<!--edge\nwhen = { country = ["GB", "United Kingdom"] }\n-->\nx',
     "hero/a.html:2: country: 'United Kingdom' is not an ISO 3166 two-letter code like \"GB\""),
    ("hero/a.html", '<!--edge\nwhen = { hour = 25 }\n-->\nx',
     "hero/a.html:2: hour: value 25 is out of range 0..23"),
    ("hero/a.html", '<!--edge\nwhen = { hour = { min = 9, max = 30 } }\n-->\nx',
     "hero/a.html:2: hour: max 30 is out of range 0..23"),
    ("hero/a.html", '<!--edge\nwhen = { device = { min = 1 } }\n-->\nx',
     "hero/a.html:2: device: { min, max } is only for numbers (hour)"),
    ("hero/a.html", '<!--edge\nwhen = { customer = "yes" }\n-->\nx',
     "hero/a.html:2: customer: 'yes' is not true or false (write it without quotes)"),
    ("hero/a.html", '<!--edge\nwhen = { path = "products/*" }\n-->\nx',
     "hero/a.html:2: path: 'products/*' is not a path glob starting with / (e.g. \"/c/*\")"),
    ("hero/a.html", '<!--edge\nwhen = { country = [] }\n-->\nx',
     "hero/a.html:2: country: an empty list never matches"),
    ("hero/a.html", '<!--edge\nwhen = { country = { is = "GB" } }\n-->\nx',
     "hero/a.html:2: country: expected a value, a list, { not = … } or { min = …, max = … }, not a table with is"),
    ("hero/a.html", '<!--edge\nwhen = "GB"\n-->\nx',
     "hero/a.html:2: when must be a table like { country = \"GB\" }, not 'GB'"),
    ("hero/a.html", '<!--edge\npriority = "high"\n-->\nx',
     "hero/a.html:2: priority must be a whole number (e.g. 10), not 'high'"),
    ("hero/a.html", '<!--edge\npriority = 1.5\n-->\nx',
     "hero/a.html:2: priority must be a whole number (e.g. 10), not 1.5"),
    ("hero/a.html", '<!--edge\ncap = { views = 3, per = "month" }\n-->\nx',
     "hero/a.html:2: cap per must be one of session, day, week, not 'month'"),
    ("hero/a.html", '<!--edge\n[cap]\nper = "day"\nviews = 0\n-->\nx',
     "hero/a.html:4: cap views must be a whole number of at least 1, not 0"),
    ("hero/a.html", '<!--edge\nexperiment = { name = "bf", weight = 0 }\n-->\nx',
     "hero/a.html:2: experiment weight must be a number above 0 and at most 100, not 0"),
    ("hero/a.html", '<!--edge\nexperiment = { name = "bf", weight = 150 }\n-->\nx',
     "hero/a.html:2: experiment weight must be a number above 0 and at most 100, not 150"),
    ("hero/a.html", '<!--edge\nexperiment = { weight = 50 }\n-->\nx',
     "hero/a.html:2: experiment needs a name, e.g. name = \"bf-hero\""),
    ("hero/a.html", '<!--edge\ndescription = 5\n-->\nx',
     "hero/a.html:2: description must be text in quotes, not 5"),
    ("grid/s.toml", 'priority = 1\nsort = ["affinity", "price"]\n',
     "grid/s.toml:2: sort key 'price': expected \"affinity\", \"data-<attr>\" (ascending), \"-data-<attr>\" (descending) or \"pin:SKU,SKU\""),
    ("grid/s.toml", 'sort = ["pin:"]\n',
     "grid/s.toml:1: sort key 'pin:': pin needs SKUs, e.g. \"pin:A1,B7\""),
    ("grid/s.toml", 'priority = 1\n',
     "grid/s.toml:1: a .toml sort variant needs sort = [...], e.g. sort = [\"affinity\", \"-data-stock\"]"),
    # -- dates
    ("hero/a.html", '<!--edge\nstart = "next friday"\n-->\nx',
     "hero/a.html:2: start = 'next friday' is not a date-time: write e.g. start = 2026-11-27T00:00:00Z (no quotes)"),
    ("hero/a.html", '<!--edge\nstart = 2026-12-01T00:00:00Z\nend = 2026-11-27T00:00:00Z\n-->\nx',
     "hero/a.html:3: end 2026-11-27T00:00:00+00:00 is not after start 2026-12-01T00:00:00+00:00"),
    ("hero/a.html", '<!--edge\nend = 10:00:00\n-->\nx',
     "hero/a.html:2: end must be a date-time like 2026-11-27T00:00:00Z, not datetime.time(10, 0)"),
    # -- the header
    ("hero/a.html", '<h1>No header</h1>\n',
     "hero/a.html:1: missing the <!--edge … --> header at the top of the file (an empty one, <!--edge -->, shows the variant to everyone)"),
    ("hero/a.html", '\n<!-- edge\npriority = 1\n-->\nx',
     "hero/a.html:2: the header must open with <!--edge (found '<!-- edge')"),
    ("hero/a.html", '<!--edge\npriority = 1\n<h1>x</h1>\n',
     "hero/a.html:1: the <!--edge header is never closed with -->"),
    # -- fragment balance: the line of the offending tag
    ("hero/a.html", '<!--edge\n-->\n<div class="hero">\n  <p>Hi</p>\n',
     "hero/a.html:3: unclosed <div>: no </div> before the end of the fragment"),
    ("hero/a.html", '<!--edge\n-->\n<p>Hi</p>\n</span>\n',
     "hero/a.html:4: unexpected </span>: no element is open"),
    ("hero/a.html", '<!--edge\n-->\n<div>\n<span>Hi\n</div>\n',
     "hero/a.html:5: unexpected </div>: <span> opened on line 4 is still open"),
    ("hero/a.html", '<!--edge\n-->\n<p>Hi</p>\n<!-- note\n',
     "hero/a.html:4: unterminated comment: <!-- has no -->"),
    ("hero/a.html", '<!--edge\n-->\n<p>Hi<br></br></p>\n',
     "hero/a.html:3: unexpected </br>: <br> is a void element and takes no end tag"),
    ("hero/a.html", '<!--edge\n-->\n<p>Hi</p>\n<img src="a.png"\n',
     "hero/a.html:4: unterminated start tag <img: no closing >"),
    ("hero/a.html", '<!--edge\n-->\n<script>var x = "</div>";\n',
     "hero/a.html:3: unclosed <script>: no </script>"),
    # -- merge tags
    ("hero/a.html", '<!--edge\n-->\n<p>Hi\n{{ cty }}</p>\n',
     "hero/a.html:4: unknown merge tag key 'cty' (did you mean 'city'?)"),
    ("hero/a.html", '<!--edge\n-->\n<p>{{ city | upcase }}</p>\n',
     "hero/a.html:3: unknown merge tag filter 'upcase': only default is supported"),
    ("hero/a.html", '<!--edge\n-->\n<p>{{ city | default }}</p>\n',
     "hero/a.html:3: the default filter needs a quoted text: default: \"text\""),
    ("hero/a.html", '<!--edge\n-->\n<p>{{ city is nice }}</p>\n',
     "hero/a.html:3: malformed merge tag '{{ city is nice }}': expected {{ key }} or {{ key | default: \"text\" }}"),
    ("hero/a.html", '<!--edge\n-->\n<p>{{ city </p>\n',
     "hero/a.html:3: merge tag opened with {{ is never closed with }}"),
    # -- encoding
    ("hero/a.html", b'<!--edge\n-->\n<p>caf\xe9</p>\n',
     "hero/a.html:3: not UTF-8 text: save the file as UTF-8"),
]


@pytest.mark.parametrize("rel, text, expected", ERROR_CASES, ids=[c[2].split(": ", 1)[1][:50] for c in ERROR_CASES])
def test_invalid_file_is_rejected_with_file_line_reason(slots, rel, text, expected):
    if isinstance(text, str):
        (slots / rel).parent.mkdir(parents=True, exist_ok=True)
        (slots / rel).write_text(text, encoding="utf-8")
    else:
        write(slots, rel, text)
    catalog = load_catalog(slots)
    assert [str(e).removeprefix(str(slots) + "/") for e in catalog.errors] == [expected]
    slot, file = rel.split("/")
    assert catalog.slots[slot].variants == ()


def test_error_path_is_the_file_as_given(slots):
    write(slots, "hero/a.html", "<!--edge\nprority = 1\n-->\nx")
    (err,) = load_catalog(slots).errors
    assert err.path == str(slots / "hero" / "a.html") and err.line == 2


def test_oversize_fragment_is_rejected(slots):
    write(slots, "hero/big.html", "<!--edge\npriority = 1\n-->\n<p>" + "x" * 200 + "</p>\n")
    assert errors_of(slots, max_fragment_bytes=100) == [
        "hero/big.html:4: fragment is 207 bytes, over the 100-byte limit (max_fragment_bytes)"
    ]


def test_huge_file_is_rejected_without_reading_it(slots):
    write(slots, "hero/huge.html", "<!--edge -->\n" + "x" * (70 * 1024))
    assert errors_of(slots, max_fragment_bytes=100) == [
        "hero/huge.html:1: file is 71693 bytes, over the 100-byte fragment limit (max_fragment_bytes)"
    ]


def test_bad_slot_folder_name_is_an_error(slots):
    write(slots, "Hero/a.html", "<!--edge -->\nx")
    write(slots, "banner/a.html", "<!--edge -->\nx")
    catalog = load_catalog(slots)
    assert [str(e).removeprefix(str(slots) + "/") for e in catalog.errors] == [
        "Hero:1: slot folder name 'Hero' must be lower-case letters, digits, - and _ (starting with a letter or digit), e.g. 'hero'"
    ]
    assert list(catalog.slots) == ["banner"]


def test_bad_variant_file_name_is_an_error(slots):
    write(slots, "hero/Black Friday.html", "<!--edge -->\nx")
    assert errors_of(slots) == [
        "hero/Black Friday.html:1: variant file name 'Black Friday.html': the name before .html must be "
        "lower-case letters, digits, - and _, e.g. 'black-friday.html'"
    ]


def test_same_variant_id_twice_in_a_slot_is_an_error(slots):
    write(slots, "grid/a.html", "<!--edge -->\nx")
    write(slots, "grid/a.toml", 'sort = ["affinity"]\n')
    catalog = load_catalog(slots)
    assert [str(e).removeprefix(str(slots) + "/") for e in catalog.errors] == [
        "grid/a.toml:1: variant id 'a' is already defined by a.html in this slot"
    ]
    assert catalog.variant("grid", "a").kind == "content"


def test_experiment_weights_over_100_reject_the_file_that_overflows(slots):
    write(slots, "hero/a.html", '<!--edge\nexperiment = { name = "bf", weight = 60 }\n-->\na')
    write(slots, "hero/b.html", '<!--edge\npriority = 1\nexperiment = { name = "bf", weight = 50 }\n-->\nb')
    write(slots, "hero/c.html", '<!--edge\nexperiment = { name = "other", weight = 50 }\n-->\nc')
    catalog = load_catalog(slots)
    assert [str(e).removeprefix(str(slots) + "/") for e in catalog.errors] == [
        "hero/b.html:3: experiment 'bf' weights in slot 'hero' add up to 110 (over 100): a.html 60, b.html 50"
    ]
    assert sorted(v.id for v in catalog.slots["hero"].variants) == ["a", "c"]


def test_same_experiment_in_two_slots_is_checked_per_slot(slots):
    write(slots, "hero/a.html", '<!--edge\nexperiment = { name = "bf", weight = 60 }\n-->\na')
    write(slots, "banner/a.html", '<!--edge\nexperiment = { name = "bf", weight = 60 }\n-->\na')
    assert errors_of(slots) == []


def test_one_bad_file_does_not_stop_the_others(slots):
    write(slots, "hero/good.html", "<!--edge -->\n<p>ok</p>")
    write(slots, "hero/bad.html", "<!--edge\nprority = 1\n-->\nx")
    catalog = load_catalog(slots)
    assert [v.id for v in catalog.slots["hero"].variants] == ["good"]
    assert len(catalog.errors) == 1
