"""The merchandisers' console over HTTP (CONTRACT §8), without a browser.

A real shop, the real proxy and a temp slots folder (``consoleharness``);
the console's pages are fetched from the admin port and read with
selectolax, the way a person reads them: states, decisions, numbers.
``test_console_browser.py`` drives the same pages in Chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import math
import re
import time
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from selectolax.lexbor import LexborHTMLParser as HTMLParser

from consoleharness import IPHONE, get, metric, run_shop, visit_headers
from edgeproxy.catalog import Catalog
from edgeproxy.catalog.conditions import compile_when
from edgeproxy.console.live import RenderHistory
from edgeproxy.console.preview import PreviewForm
from edgeproxy.console.words import describe_when

GEO = {"geo_header": "CF-IPCountry", "trust_proxy": "127.0.0.1/32"}


def by_testid(page: str, name: str) -> str:
    node = HTMLParser(page).css_first(f'[data-testid="{name}"]')
    assert node is not None, f"no element with data-testid={name}"
    return " ".join(node.text().split())


async def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.05)
    return False


# ---------------------------------------------------------------------------
# Overview
# ---------------------------------------------------------------------------
async def test_overview_shows_every_variant_file_with_its_state(tmp_path):
    async with run_shop(tmp_path) as (_shop, server):
        status, page, headers = await get(server.admin_port, "/console/")
    assert status == 200
    assert by_testid(page, "state-hero-mobile-uk").startswith("live")
    assert by_testid(page, "state-hero-welcome-back").startswith("live")
    assert by_testid(page, "state-hero-black-friday") == "scheduled starts 2099-11-27 00:00 UTC"
    assert by_testid(page, "state-hero-summer-sale") == "ended on 2000-09-01 00:00 UTC"
    assert by_testid(page, "state-banner-free-delivery").startswith("live")
    broken = by_testid(page, "state-banner-broken")
    assert broken.startswith("broken")
    # named as in the slots folder, not by the server's absolute path
    assert "banner/broken.html:2: invalid TOML" in broken and str(tmp_path) not in broken, broken
    assert "Still serving: nothing" in broken
    row = by_testid(page, "variant-hero-mobile-uk")
    assert "mobile visitors in GB or IE" in row and "Mobile hero for the UK and Ireland" in row and "10" in row
    assert "delivery-test, 50%" in by_testid(page, "variant-banner-free-delivery")
    assert "Experiment delivery-test: free-delivery 50%, control 50%" in " ".join(HTMLParser(page).body.text().split())
    link = HTMLParser(page).css_first('main a[href^="/console/live"]')
    assert (link.text(), link.attributes["href"]) == ("How it is doing", "/console/live#exp-delivery-test")


async def test_a_badly_named_folder_is_listed_as_a_problem(tmp_path):
    async with run_shop(tmp_path) as (_shop, server):
        (tmp_path / "slots" / "Side Bar").mkdir()

        async def listed():
            _, page, _ = await get(server.admin_port, "/console/")
            return HTMLParser(page).css_first('[data-testid="problems"]') is not None

        assert await wait_for(listed)
        _, page, _ = await get(server.admin_port, "/console/")
    assert by_testid(page, "problems").startswith("Side Bar:1: slot folder name 'Side Bar' must be lower-case")


async def test_a_broken_edit_shows_its_reason_and_that_the_previous_version_still_serves(tmp_path):
    async with run_shop(tmp_path) as (_shop, server):
        (tmp_path / "slots" / "hero" / "mobile-uk.html").write_text("<!--edge\nwhen = { device = \"phone\" }\n-->\n<h1>x</h1>\n")

        async def broken():
            _, page, _ = await get(server.admin_port, "/console/")
            return by_testid(page, "state-hero-mobile-uk").startswith("broken")

        assert await wait_for(broken)
        _, page, _ = await get(server.admin_port, "/console/")
        cell = by_testid(page, "state-hero-mobile-uk")
        assert re.search(r"^broken\s*hero/mobile-uk\.html:2: .*phone", cell), cell
        assert re.search(r"Still serving: the previous version, saved \d{4}-\d\d-\d\d \d\d:\d\d UTC \(live\)", cell), cell
        # what the row describes is the version visitors get
        assert "mobile visitors in GB or IE" in by_testid(page, "variant-hero-mobile-uk")


async def test_a_dropped_in_file_is_listed_and_the_pages_poll_sees_the_change(tmp_path):
    async with run_shop(tmp_path) as (_shop, server):
        _, before, _ = await get(server.admin_port, "/console/state.json")
        folder = tmp_path / "slots" / "hero"
        (folder / "rainy-day.html").write_text("<!--edge\nwhen = { city = \"Manchester\" }\n-->\n<h1>Rain</h1>\n")

        async def changed():
            _, now, _ = await get(server.admin_port, "/console/state.json")
            return json.loads(now)["generation"] != json.loads(before)["generation"]

        assert await wait_for(changed)
        _, page, _ = await get(server.admin_port, "/console/")
    assert by_testid(page, "state-hero-rainy-day").startswith("live")
    assert "visitors in Manchester" in by_testid(page, "variant-hero-rainy-day")
    assert 'data-generation="' in page and "/console/state.json" in page


async def test_console_redirects_and_is_not_reachable_through_the_proxy_port(tmp_path):
    async with run_shop(tmp_path) as (shop, server):
        status, page, _ = await get(server.admin_port, "/console")
        assert status == 200 and "What is live" in page
        _, body, _ = await get(server.port, "/console/", headers=visit_headers())
    assert "What is live" not in body  # the proxy port sends it to the shop
    assert shop.requests[-1]["path_qs"] == "/console/"


async def test_pages_load_nothing_from_outside_and_carry_a_nonce_policy(tmp_path):
    async with run_shop(tmp_path) as (_shop, server):
        for path in ("/console/", "/console/preview?device=mobile", "/console/live"):
            status, page, headers = await get(server.admin_port, path)
            assert status == 200
            tree = HTMLParser(page)
            for node in tree.css("script, link, img, iframe"):
                for attr in ("src", "href"):
                    value = node.attributes.get(attr) or ""
                    assert not value.startswith(("http:", "https:", "//")), (path, node.html)
            nonce = tree.css_first("script").attributes["nonce"]
            assert f"'nonce-{nonce}'" in headers["Content-Security-Policy"]
            assert headers["Referrer-Policy"] == "no-referrer"
            assert 'name="viewport"' in page


# ---------------------------------------------------------------------------
# Preview
# ---------------------------------------------------------------------------
async def test_preview_shows_each_slots_decision_and_why(tmp_path):
    async with run_shop(tmp_path) as (_shop, server):
        _, page, _ = await get(server.admin_port, "/console/preview?country=GB&device=mobile")
        assert "mobile-uk" in by_testid(page, "decision-hero")
        rows = {" ".join(r.text().split()) for r in HTMLParser(page).css("tbody tr")}
        assert any("priority 10, matched device=mobile country=GB|IE" in r for r in rows), rows
        _, page, _ = await get(server.admin_port, "/console/preview?country=FR")
        assert by_testid(page, "decision-hero") == "default"


async def test_preview_reasons_are_those_of_edgeproxy_explain(tmp_path):
    from edgeproxy.explain import run_explain

    async with run_shop(tmp_path) as (_shop, server):
        _, page, _ = await get(server.admin_port, "/console/preview?country=IE&device=mobile&path=/c/running")
        rows = {r.css_first("th").text(): [td.text() for td in r.css("td")] for r in HTMLParser(page).css("tbody tr")}
    out = io.StringIO()
    args = argparse.Namespace(
        url="http://shop.example/c/running", ua=IPHONE, ip="127.0.0.1", cookie=[], referer=None,
        header=["CF-IPCountry: IE"], at=None, slots=str(tmp_path / "slots"), config=None, geo_db=None,
        geo_header="CF-IPCountry", json=True,
    )
    assert run_explain(args, out=out, err=io.StringIO()) == 0
    trace = json.loads(out.getvalue())
    assert trace["slots"]["hero"]["variant"] == "mobile-uk"
    assert rows["hero"][0] == "mobile-uk"
    assert rows["hero"][1].startswith(trace["slots"]["hero"]["reason"])
    # and the other variants' "why not", as explain prints them under the slot
    out = io.StringIO()
    args.json = False
    assert run_explain(args, out=out, err=io.StringIO()) == 0
    printed = {line.strip()[4:] for line in out.getvalue().splitlines() if line.strip().startswith("not ")}
    shown = {li.text() for li in HTMLParser(page).css("details li")}
    # (the banner's experiment arm depends on explain's random visitor id)
    assert {t for t in printed if "free-delivery" not in t} == {t for t in shown if "free-delivery" not in t}
    assert "black-friday: not live yet: starts 2099-11-27 00:00 UTC" in shown
    assert "welcome-back: needs visitor=returning; the visitor's visitor is new" in shown


async def test_a_returning_mobile_visitor_from_manchester_at_8_pm(tmp_path):
    query = "country=GB&city=Manchester&device=mobile&visitor=returning&at=2026-11-27T20:00&tz=Europe/London"
    async with run_shop(tmp_path) as (_shop, server):
        _, page, _ = await get(server.admin_port, f"/console/preview?{query}")
        # mobile-uk (priority 10) beats welcome-back (5): the why says so
        assert by_testid(page, "decision-hero") == "mobile-uk"
        ctx = {d.css_first("dt").text(): d.css_first("dd").text() for d in HTMLParser(page).css("dl.ctx div")}
        assert (ctx["hour"], ctx["daypart"], ctx["weekday"]) == ("20", "evening", "fri")
        assert (ctx["visitor"], ctx["city"], ctx["device"]) == ("returning", "Manchester", "mobile")
        # the time as a person says it, and why not the other variants, each named
        text = " ".join(HTMLParser(page).css_first("main").text().split())
        assert "On Friday 27 November 2026, 20:00 (Europe/London), on the page /." in text
        summaries = [" ".join(n.text().split()) for n in HTMLParser(page).css("details summary")]
        assert summaries == ["Why not free-delivery", "Why not the other 3 variants"]
        # the same visitor on a desktop gets the welcome-back hero, with the city merged in
        _, page, _ = await get(server.admin_port, f"/console/preview?{query.replace('mobile', 'desktop')}")
        assert by_testid(page, "decision-hero") == "welcome-back"
        frame = HTMLParser(page).css_first('iframe[title="The page as this visitor"]').attributes["src"]
        status, body, _ = await get(server.admin_port, frame)
    assert status == 200
    assert "<h1>Welcome back, Manchester</h1>" in body


async def test_the_preview_lives_in_the_url_query_and_is_a_shareable_link(tmp_path):
    async with run_shop(tmp_path) as (_shop, server):
        _, page, _ = await get(server.admin_port, "/console/preview?device=mobile&country=gb&affinity=running,%20hiking&utm_campaign=")
        share = HTMLParser(page).css_first("input.share").attributes["value"]
        parts = urlsplit(share)
        assert parts.path == "/console/preview" and parts.port == server.admin_port
        assert parse_qs(parts.query) == {"country": ["GB"], "device": ["mobile"], "affinity": ["running, hiking"]}
        # the form shows the state back
        tree = HTMLParser(page)
        assert tree.css_first("#f-country").attributes["value"] == "GB"
        assert tree.css_first('#f-device option[value="mobile"]').attributes.keys() >= {"selected"}
        # the link, opened by a colleague, gives the same decisions
        _, again, _ = await get(server.admin_port, parts.path + "?" + parts.query)
    assert by_testid(again, "decision-hero") == by_testid(page, "decision-hero") == "mobile-uk"


async def test_force_previews_a_variant_before_it_goes_live(tmp_path):
    async with run_shop(tmp_path) as (_shop, server):
        _, overview, _ = await get(server.admin_port, "/console/")
        link = HTMLParser(overview).css_first('[data-testid="variant-hero-black-friday"] a').attributes["href"]
        _, page, _ = await get(server.admin_port, link)
        assert by_testid(page, "decision-hero") == "black-friday"
        # or at the time it starts
        _, page, _ = await get(server.admin_port, "/console/preview?at=2099-11-27T10:00:00Z")
        assert by_testid(page, "decision-hero") == "black-friday"


async def test_bad_form_values_are_named_and_left_out(tmp_path):
    async with run_shop(tmp_path) as (_shop, server):
        status, page, _ = await get(server.admin_port, "/console/preview?country=UK&device=mobile&at=tomorrow")
    assert status == 200
    tree = HTMLParser(page)
    assert "not an ISO 3166 country code" in tree.css_first("#country-problem").text()
    assert tree.css_first("#f-country").attributes["aria-invalid"] == "true"
    assert "ISO time" in tree.css_first("#at-problem").text()
    assert by_testid(page, "decision-hero") == "default"  # mobile, but no usable country


async def test_the_page_is_rendered_as_the_visitor_beside_the_default_without_leaking_anything(tmp_path):
    async with run_shop(tmp_path, preview_token="s3cret") as (shop, server):
        _, page, _ = await get(server.admin_port, "/console/preview?country=GB&device=mobile")
        frames = {f.attributes["title"]: f.attributes for f in HTMLParser(page).css("iframe")}
        mine, default = frames["The page as this visitor"], frames["The default page"]
        assert mine["sandbox"] == default["sandbox"] == "allow-scripts"
        status, body, headers = await get(server.admin_port, mine["src"])
        assert status == 200 and "<h1>Mobile UK hero</h1>" in body and "Default hero" not in body
        assert headers["X-Edge-Console-Outcomes"].startswith("hero=applied")
        assert headers["Content-Security-Policy"].startswith("sandbox allow-scripts")
        assert headers["Referrer-Policy"] == "no-referrer"
        # relative links and assets load from the shop, not the admin port
        assert f'<head><base href="{shop.url}/">' in body
        _, body, _ = await get(server.admin_port, default["src"])
        assert "<h1>Default hero</h1>" in body and "Mobile UK" not in body
    seen = shop.requests[-2]
    assert seen["user-agent"].startswith("Mozilla/5.0 (iPhone")
    for request in shop.requests:
        assert "s3cret" not in json.dumps(request)
        assert "cookie" not in request and "referer" not in request and "x-edge-preview-token" not in request


async def test_a_path_that_redirects_says_where_it_goes(tmp_path):
    async with run_shop(tmp_path) as (_shop, server):
        status, body, headers = await get(server.admin_port, "/console/page?path=/old-sale&view=visitor")
    assert status == 200 and headers["X-Edge-Console-Note"] == "redirect 301"
    assert 'The shop answers 301: this path redirects to <a href="/c/sale">/c/sale</a>' in body


async def test_previews_count_nothing_in_metrics(tmp_path):
    async with run_shop(tmp_path, exposure_log=str(tmp_path / "exposures.jsonl")) as (_shop, server):
        _, page, _ = await get(server.admin_port, "/console/preview?device=mobile&country=GB")
        for frame in HTMLParser(page).css("iframe"):
            await get(server.admin_port, frame.attributes["src"])
        _, text, _ = await get(server.admin_port, "/metrics")
    assert "edgeproxy_slot_decisions_total{" not in text
    assert metric(text, "edgeproxy_events_written", log="exposure") == 0


# ---------------------------------------------------------------------------
# Live
# ---------------------------------------------------------------------------
async def test_live_renders_equal_the_metrics_counters(tmp_path):
    async with run_shop(tmp_path, **GEO) as (_shop, server):
        for _ in range(3):
            await get(server.port, "/", headers=visit_headers(mobile=True, country="GB"))
        for _ in range(2):
            await get(server.port, "/", headers=visit_headers(country="FR"))
        _, page, _ = await get(server.admin_port, "/console/live")
        _, text, _ = await get(server.admin_port, "/metrics")
    assert metric(text, "edgeproxy_slot_decisions_total", slot="hero", variant="mobile-uk") == 3
    for slot, variant in (("hero", "mobile-uk"), ("hero", "default"), ("banner", "free-delivery"), ("banner", "default"), ("hero", "welcome-back")):
        expected = metric(text, "edgeproxy_slot_decisions_total", slot=slot, variant=variant)
        assert float(by_testid(page, f"renders-{slot}-{variant}")) == expected, (slot, variant)
        assert float(by_testid(page, f"recent-{slot}-{variant}")) == expected, (slot, variant)


def cli_report(*argv: str) -> dict:
    """``edgeproxy report ARGV`` as the command line parses and runs it: its JSON."""
    from edgeproxy.cli import build_parser
    from edgeproxy.report import run_report

    out = io.StringIO()
    assert run_report(build_parser().parse_args(["report", *argv]), out=out, err=io.StringIO()) == 0
    return json.loads(out.getvalue())


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def pp(ci) -> str:
    return f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}] pp"


def p_text(p: float) -> str:
    return "< 0.0001" if p < 0.0001 else f"{p:.4f}"


def seed_history(exposures, conversions, *, days: float = 6.0, visitors: int = 800) -> None:
    """Append a deterministic week of ``delivery-test`` to the logs (the
    proxy's live traffic lands on top): the control converting about 3.4 %,
    ``free-delivery`` about 4.3 %, so a plan always has a baseline to go by."""
    now = time.time()
    exp_lines, conv_lines = [], []
    for i in range(visitors):
        ts = dt.datetime.fromtimestamp(now - days * 86400 * (1 - i / visitors), dt.timezone.utc)
        arm = ("control", "free-delivery")[i % 2]
        exp_lines.append(json.dumps({"ts": f"{ts:%Y-%m-%dT%H:%M:%S}.000Z", "visitor": f"h{i}", "experiment": "delivery-test",
                                     "arm": arm, "slot": "banner", "path": "/"}) + "\n")
        if i % (29 if arm == "control" else 23) == 0:
            conv_lines.append(json.dumps({"ts": f"{ts:%Y-%m-%dT%H:%M:%S}.500Z", "visitor": f"h{i}", "path": "/checkout/complete",
                                          "value": None, "kind": "path"}) + "\n")
    with open(exposures, "a") as fh:
        fh.writelines(exp_lines)
    with open(conversions, "a") as fh:
        fh.writelines(conv_lines)


def assert_page_is_the_report(text_of, exp: dict, reading_rule: str | None = None) -> None:
    """Every figure of one experiment of ``edgeproxy report --json --plan``
    as the page shows it (``text_of(testid)``: the element's text)."""
    name = exp["name"]
    plan = exp["plan"]
    for arm in exp["arms"]:
        tid = f"{name}-{arm['arm']}"
        assert text_of(f"visitors-{tid}") == f"{arm['visitors']:,}"
        assert text_of(f"conversions-{tid}") == f"{arm['conversions']:,}"
        assert text_of(f"rate-{tid}") == pct(arm["rate"])
        if plan is not None:
            share = min(arm["visitors"] / plan["visitors_per_arm"], 1.0)
            assert text_of(f"progress-{tid}") == f"{100 * share:.0f}% of {plan['visitors_per_arm']:,}"
        if arm["arm"] == "control":
            continue
        assert text_of(f"uplift-{tid}") == f"{100 * arm['abs_uplift']:+.2f} pp"
        assert text_of(f"uplift-ci-{tid}") == pp(arm["abs_uplift_ci"])
        assert text_of(f"p-{tid}") == p_text(arm["p_value"])
        assert text_of(f"seq-p-{tid}") == p_text(arm["seq_p_value"])  # the always-valid p-value
        assert text_of(f"seq-ci-{tid}") == pp(arm["seq_abs_uplift_ci"])  # and its confidence sequence
    if plan is None:
        assert text_of(f"plan-{name}").startswith("No sample size yet")
    else:
        assert text_of(f"needed-{name}") == f"{plan['visitors_per_arm']:,}"
        assert plan["baseline_source"] == "observed control rate"
        reached = all(a["visitors"] >= plan["visitors_per_arm"] for a in exp["arms"])
        if reached:
            assert text_of(f"days-left-{name}") == "Reached"
        else:
            left = max(1, math.ceil(plan["days"] - plan["days_so_far"]))
            assert text_of(f"days-left-{name}").startswith(f"{left:,} more day")
            assert text_of(f"days-{name}") == f"{plan['days']:,}"
            assert text_of(f"per-day-{name}") == f"{plan['visitors_per_day']:,.0f}"
    if reading_rule is not None:
        assert text_of("reading-rule") == " ".join(reading_rule.split())


async def test_live_shows_each_experiments_report_as_edgeproxy_report_gives_it(tmp_path):
    exposures, conversions = tmp_path / "exposures.jsonl", tmp_path / "conversions.jsonl"
    settings = dict(exposure_log=str(exposures), conversion_log=str(conversions), conversion_path="/checkout/complete")
    async with run_shop(tmp_path, **settings) as (_shop, server):
        _, page, _ = await get(server.admin_port, "/console/live")
        assert "No exposure" in " ".join(HTMLParser(page).css_first("main").text().split())
        seed_history(exposures, conversions)
        for i in range(24):
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar) as session:
                async with session.get(f"http://127.0.0.1:{server.port}/", headers=visit_headers()) as resp:
                    await resp.read()
                if i % 2 == 0:
                    async with session.get(f"http://127.0.0.1:{server.port}/checkout/complete", headers=visit_headers()) as resp:
                        await resp.read()
        _, default_page, _ = await get(server.admin_port, "/console/live")
        _, page, _ = await get(server.admin_port, "/console/live?mde=20")
    logs = ["--slots", str(tmp_path / "slots"), str(exposures), str(conversions)]
    default = cli_report("--json", "--plan", "--mde", "0.1", *logs)
    report = cli_report("--json", "--plan", "--mde", "0.2", *logs)
    (exp,) = report["experiments"]
    assert exp["name"] == "delivery-test" and sum(a["visitors"] for a in exp["arms"]) == 800 + 24
    assert exp["plan"]["days_so_far"] > 5.9 and exp["plan"]["days"] > 6
    assert_page_is_the_report(lambda tid: by_testid(page, tid), exp, report["reading_rule"])
    assert_page_is_the_report(lambda tid: by_testid(default_page, tid), default["experiments"][0])
    assert HTMLParser(page).css_first("#f-mde").attributes["value"] == "20"
    srm = by_testid(page, "srm-delivery-test")
    assert ("Sample ratio mismatch" in srm) == exp["srm"]["flagged"]


async def test_the_console_reports_through_the_report_packages_api_as_its_json(tmp_path):
    from edgeproxy.console.live import experiment_report
    from edgeproxy.settings import build_settings

    exposures, conversions = tmp_path / "exposures.jsonl", tmp_path / "conversions.jsonl"
    exp_line = '{"ts":"2026-11-%02dT09:00:00.000Z","visitor":"v%d","experiment":"e","arm":"%s","slot":"hero","path":"/"}\n'
    conv_line = '{"ts":"2026-11-%02dT10:00:00.000Z","visitor":"v%d","path":"/checkout/complete","value":null,"kind":"path"}\n'
    exposures.write_text("".join(exp_line % (1 + i % 7, i, ("control", "b")[i % 2]) for i in range(400)))
    conversions.write_text("".join(conv_line % (1 + i % 7, i) for i in range(400) if i % 9 == 0 or i % 13 == 1))
    (tmp_path / "slots").mkdir()
    settings = build_settings({"upstream": "http://o", "exposure_log": str(exposures), "conversion_log": str(conversions),
                               "slots": str(tmp_path / "slots")}, env={})
    mine = json.loads(json.dumps(experiment_report(settings, mde=0.25)))
    assert mine == cli_report("--json", "--plan", "--mde", "0.25", "--slots", str(tmp_path / "slots"), str(exposures), str(conversions))
    assert mine["experiments"][0]["plan"]["visitors_per_arm"] > 0 and mine["experiments"][0]["arms"][1]["seq_p_value"] is not None


def test_the_recent_window_is_the_counter_minus_a_snapshot_five_minutes_old():
    history = RenderHistory(window=300, every=10)
    t0 = 1_000_000.0
    history.started = t0
    history.sample({("hero", "a"): 10}, t0)
    history.sample({("hero", "a"): 40}, t0 + 200)
    history.sample({("hero", "a"): 70}, t0 + 320)
    # the newest snapshot at least 300 s old is the one at t0+200
    recent = history.recent({("hero", "a"): 100}, t0 + 520)
    assert recent.counts == {("hero", "a"): 60} and recent.seconds == 320
    # before 5 minutes have passed: since the oldest snapshot, and the page says how long
    young = RenderHistory()
    young.sample({("hero", "a"): 5}, t0)
    window = young.recent({("hero", "a"): 8}, t0 + 42)
    assert window.counts == {("hero", "a"): 3} and window.seconds == 42


# ---------------------------------------------------------------------------
# Targeting in words, and the form
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "when, words",
    [
        ({}, "everyone"),
        ({"device": "mobile", "country": ["GB", "IE"]}, "mobile visitors in GB or IE"),
        ({"country": ["GB", "IE", "FR"]}, "visitors in GB, IE or FR"),
        ({"visitor": "returning", "device": "mobile", "city": "Manchester"}, "returning mobile visitors in Manchester"),
        ({"customer": True}, "visitors who are customers"),
        ({"logged_in": False}, "visitors who are not logged in"),
        ({"cart": "filled"}, "visitors with a filled cart"),
        ({"country": {"not": "GB"}}, "visitors not in GB"),
        ({"device": {"not": "bot"}}, "visitors other than bot ones"),
        ({"source": "email", "utm_campaign": "bf"}, "visitors arriving from email from the campaign bf"),
        ({"hour": {"min": 22, "max": 5}}, "visitors between 22:00 and 05:59"),
        ({"weekday": ["sat", "sun"], "daypart": "evening"}, "visitors on Saturday or Sunday in the evening"),
        ({"path": "/c/*", "affinity": "running"}, "visitors on /c/* interested in running"),
        ({"continent": "EU"}, "visitors in Europe"),
    ],
)
def test_targeting_in_plain_words(when, words):
    assert describe_when(compile_when(when)) == words


def test_a_naive_at_is_the_wall_clock_in_the_given_time_zone():
    now = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
    form = PreviewForm.parse({"at": "2026-07-01T20:00", "tz": "Europe/London"}, now)
    assert form.at == dt.datetime(2026, 7, 1, 19, 0, tzinfo=dt.timezone.utc)
    assert form.visitor().context["hour"] == 20
    _decision, trace = form.decide(Catalog(directory="slots"))
    assert trace["at"] == "2026-07-01T20:00:00+01:00"
    form = PreviewForm.parse({"at": "2026-07-01T20:00:00+02:00"}, now)
    assert form.visitor().context["hour"] == 20 and form.visitor().context["daypart"] == "evening"


SHORT = {"visitors_per_arm": 1000, "days": 40, "days_so_far": 9.5}  # 10 of 1,000 visitors per arm: 31 days left
REACHED = {"visitors_per_arm": 10, "days": 2, "days_so_far": 3.0}


@pytest.mark.parametrize(
    "arm, srm, plan, words",
    [
        # the sequential interval decides at any look
        ({"p_value": 0.01, "abs_uplift": 0.02, "seq_p_value": 0.03, "seq_abs_uplift_ci": [0.001, 0.04]}, {"flagged": False}, SHORT,
         "b beats the control (+2.00 pp; sequential p = 0.0300, which holds however often you look)."),
        ({"p_value": 0.01, "abs_uplift": -0.02, "seq_p_value": 0.03, "seq_abs_uplift_ci": [-0.04, -0.001]}, {"flagged": False}, SHORT,
         "b does worse than the control (-2.00 pp; sequential p = 0.0300, which holds however often you look)."),
        # a fixed-horizon p < 0.05 before the planned sample is not a win
        ({"p_value": 0.01, "abs_uplift": 0.02, "seq_p_value": 0.2, "seq_abs_uplift_ci": [-0.01, 0.05]}, {"flagged": False}, SHORT,
         "b: no clear difference yet (sequential p = 0.2000); let it run, about 31 more days at this traffic. The fixed-horizon "
         "p = 0.0100 is not a win yet: it holds only at the planned sample size, not at every look."),
        ({"p_value": 0.3, "abs_uplift": 0.02, "seq_p_value": 1.0, "seq_abs_uplift_ci": [-0.05, 0.09]}, {"flagged": False}, None,
         "b: no clear difference yet (sequential p = 1.0000); let it run."),
        # at the planned sample size, the fixed-horizon p-value may be read
        ({"p_value": 0.01, "abs_uplift": 0.02, "seq_p_value": 0.2, "seq_abs_uplift_ci": [-0.01, 0.05]}, {"flagged": False}, REACHED,
         "b beats the control at the planned sample size (+2.00 pp, fixed-horizon p = 0.0100)."),
        ({"p_value": 0.3, "abs_uplift": 0.02, "seq_p_value": 1.0, "seq_abs_uplift_ci": [-0.05, 0.09]}, {"flagged": False}, REACHED,
         "b: no clear difference at the planned sample size (fixed-horizon p = 0.3000): a change as large as the one planned "
         "for would most likely have shown by now."),
        ({"p_value": 0.01, "abs_uplift": 0.02, "seq_p_value": 0.03, "seq_abs_uplift_ci": [0.001, 0.04]}, {"flagged": True}, SHORT,
         "b: not comparable with the control (sample ratio mismatch)."),
    ],
)
def test_each_arm_against_the_control_in_plain_words_by_the_reports_reading_rule(arm, srm, plan, words):
    from edgeproxy.console.report_page import report_html

    arms = [{"arm": "control", "visitors": 10}, {"arm": "b", "visitors": 10, **arm}]
    report = {"experiments": [{"name": "e", "visitors": 20, "arms": arms, "srm": srm, "plan": plan}]}
    assert by_testid(report_html(report), "verdict-e-b") == words


PLAN = {"baseline": 0.03, "mde": 0.1, "arms": 2, "power": 0.8, "alpha": 0.05, "baseline_source": "observed control rate"}


@pytest.mark.parametrize(
    "plan, problem, words",
    [
        ({**PLAN, "visitors_per_arm": 100, "visitors": 200, "visitors_per_day": 50.0, "days": 4, "days_so_far": 6.0}, None,
         "Reached: every arm has its sample, so the fixed-horizon p-value may be read now."),
        ({**PLAN, "visitors_per_arm": 53_000, "visitors": 106_000, "visitors_per_day": 270.0, "days": 393, "days_so_far": 6.0}, None,
         "about 387 more days (about 13 months) (393 in all; 6.0 so far). That is a long wait: at this traffic only a larger "
         "change can be detected sooner (raise the smallest change above)."),
        (None, "the control converts 95.00% of its visitors, and a 10% change of that is not a conversion rate: choose a smaller change",
         "No sample size yet: the control converts 95.00% of its visitors, and a 10% change of that is not a conversion rate: "
         "choose a smaller change."),
        (None, None, "No sample size yet: the control has no conversions yet, so there is no rate to plan from."),
    ],
)
def test_the_sample_size_in_plain_words(plan, problem, words):
    from edgeproxy.console.report_page import report_html

    arms = [{"arm": "control", "visitors": 150, "conversions": 5}, {"arm": "b", "visitors": 120, "conversions": 4}]
    exp = {"name": "e", "visitors": 270, "arms": arms, "srm": None, "plan": plan, **({"plan_problem": problem} if problem else {})}
    text = by_testid(report_html({"experiments": [exp], "conversion_files": ["c.jsonl"]}), "plan-e")
    assert text.endswith(words), text


def test_without_a_conversion_log_the_report_is_visitors_and_srm_only():
    from edgeproxy.console.report_page import report_html

    arms = [{"arm": "control", "visitors": 10, "conversions": None}, {"arm": "b", "visitors": 12, "conversions": None}]
    exp = {"name": "e", "visitors": 22, "arms": arms, "srm": {"flagged": False, "p_value": 0.67, "basis": "equal split"}, "plan": None}
    page = report_html({"experiments": [exp], "conversion_files": []})
    tree = HTMLParser(page)
    assert [" ".join(th.text().split()) for th in tree.css("thead th")] == ["Arm", "Visitors"]
    assert tree.css_first("#f-mde") is None and tree.css_first('[data-testid="plan-e"]') is None
    assert by_testid(page, "visitors-e-b") == "12" and "visitors and the SRM check only" in tree.body.text()


def test_once_the_sequential_test_settles_every_variant_nobody_is_told_to_wait():
    from edgeproxy.console.report_page import report_html

    plan = {**PLAN, "visitors_per_arm": 53_000, "visitors": 106_000, "visitors_per_day": 270.0, "days": 393, "days_so_far": 6.0}
    arms = [{"arm": "control", "visitors": 800, "conversions": 24},
            {"arm": "b", "visitors": 800, "conversions": 48, "abs_uplift": 0.03, "p_value": 0.004, "seq_p_value": 0.02,
             "seq_abs_uplift_ci": [0.004, 0.056]}]
    page = report_html({"experiments": [{"name": "e", "visitors": 1600, "arms": arms, "srm": {"flagged": False}, "plan": plan}],
                        "conversion_files": ["c.jsonl"]})
    assert by_testid(page, "plan-e").endswith("The sequential test has settled every variant already: there is no need to wait for the rest.")
    assert HTMLParser(page).css_first('[data-testid="verdict-e-b"]').attributes["class"] == "win"


async def test_an_mde_the_control_rate_cannot_take_is_named_not_a_crash(tmp_path):
    from edgeproxy.console.live import experiment_report
    from edgeproxy.settings import build_settings

    exposures, conversions = tmp_path / "exposures.jsonl", tmp_path / "conversions.jsonl"
    line = '{"ts":"2026-11-27T09:00:%02d.000Z","visitor":"v%d","experiment":"e","arm":"%s","slot":"hero","path":"/"}\n'
    exposures.write_text("".join(line % (i, i, ("control", "b")[i % 2]) for i in range(20)))
    conversions.write_text("".join(f'{{"ts":"2026-11-27T09:01:00.000Z","visitor":"v{i}","path":"/buy","value":null,"kind":"path"}}\n'
                                   for i in range(0, 20, 2)))  # every control visitor converts
    (tmp_path / "slots").mkdir()
    settings = build_settings({"upstream": "http://o", "exposure_log": str(exposures), "conversion_log": str(conversions),
                               "slots": str(tmp_path / "slots")}, env={})
    (exp,) = experiment_report(settings, mde=0.1)["experiments"]
    assert exp["plan"] is None and exp["plan_problem"].startswith("the control converts 100.00% of its visitors")


@pytest.mark.parametrize(
    "plan, arms, days_left, reached",
    [
        ({"visitors_per_arm": 1000, "days": 40, "days_so_far": 9.5}, [10, 10], 31, False),
        # the total is there but the smaller arm is short: still a day to go
        ({"visitors_per_arm": 100, "days": 5, "days_so_far": 6.0}, [150, 60], 1, False),
        ({"visitors_per_arm": 100, "days": 5, "days_so_far": 6.0}, [150, 100], 0, True),
        ({"visitors_per_arm": 100, "days": None, "days_so_far": None}, [0, 0], None, False),
    ],
)
def test_the_days_left_are_the_plans_days_less_the_days_so_far(plan, arms, days_left, reached):
    from edgeproxy.console.live import progress

    exp = {"plan": plan, "arms": [{"arm": a, "visitors": n} for a, n in zip(("control", "b"), arms)]}
    got = progress(exp)
    assert (got.days_left, got.reached, got.needed) == (days_left, reached, plan["visitors_per_arm"])


@pytest.mark.parametrize(
    "text, mde, problem",
    [
        (None, 0.10, ""),
        ("5", 0.05, ""),
        ("2.5%", 0.025, ""),
        ("0", 0.10, "'0' is not a change in percent between 0.1 and 500: using 10 %"),
        ("lots", 0.10, "'lots' is not a change in percent between 0.1 and 500: using 10 %"),
    ],
)
def test_the_smallest_change_worth_detecting_is_a_percent_in_the_link(text, mde, problem):
    from edgeproxy.console.live import parse_mde

    assert parse_mde(text) == (pytest.approx(mde), problem)


# ---------------------------------------------------------------------------
# Where the preview's page comes from and where its assets load from
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path, target",
    [
        ("/", "/"),
        ("/c/running?sort=price&page=2", "/c/running?sort=price&page=2"),
        ("/search?q=trail shoes", "/search?q=trail%20shoes"),
        ("//evil.example/x", "/evil.example/x"),  # a path, never an authority
        ("/caf%C3%A9", "/caf%C3%A9"),
    ],
)
def test_the_origin_target_is_the_forms_path_encoded(path, target):
    from edgeproxy.console.preview import origin_target

    assert origin_target(path) == target


@pytest.mark.parametrize(
    "host, port, admin_host_header, base",
    [
        ("127.0.0.1", 8000, "127.0.0.1:9000", "http://127.0.0.1:8000/"),
        ("0.0.0.0", 8000, "shop-admin.internal:9000", "http://shop-admin.internal:8000/"),
        ("::", 8000, "[::1]:9000", "http://[::1]:8000/"),
        ("127.0.0.1", 0, "127.0.0.1:9000", "http://origin.internal:8080/"),
    ],
)
def test_the_preview_pages_assets_load_from_the_proxy_port(host, port, admin_host_header, base):
    from aiohttp.test_utils import make_mocked_request

    from edgeproxy.console import proxy_base
    from edgeproxy.settings import build_settings

    settings = build_settings({"upstream": "http://origin.internal:8080", "host": host, "port": port}, env={})
    request = make_mocked_request("GET", "/console/page", headers={"Host": admin_host_header})
    assert proxy_base(request, settings) == base


async def test_the_report_is_recomputed_only_when_a_log_changed(tmp_path):
    from edgeproxy.console.live import ReportCache
    from edgeproxy.settings import build_settings

    log = tmp_path / "exposures.jsonl"
    line = '{"ts":"2026-11-27T09:00:00.000Z","visitor":"v%d","experiment":"e","arm":"control","slot":"hero","path":"/"}\n'
    log.write_text(line % 1)
    (tmp_path / "slots").mkdir()
    settings = build_settings({"upstream": "http://o", "exposure_log": str(log), "slots": str(tmp_path / "slots")}, env={})
    cache = ReportCache()
    first, at = await cache.get(settings)
    again, at_again = await cache.get(settings)
    assert again is first and at_again == at
    with log.open("a") as fh:
        fh.write(line % 2)
    later, _ = await cache.get(settings)
    assert later.report.experiments[0].visitors == 2 and first.report.experiments[0].visitors == 1
    # the plan is arithmetic on the cached report: each look may ask for its own MDE
    from edgeproxy.console.live import planned

    assert planned(later, 0.1)["experiments"][0]["plan"] is None  # no conversion log: no rate to plan from
