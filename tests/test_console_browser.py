"""The console as a person uses it: Chromium, driven by Playwright.

A real shop, the real proxy and a temp slots folder (``consoleharness``);
Debian's Chromium, headless (``apt-get install chromium``; never a
downloaded browser).  Screenshots go to ``tests/artifacts/console/``
(git-ignored) for a human to look at after a CI run.

Skipped, with the reason, when the ``playwright`` package or the Chromium
binary is missing; ``test_console.py`` checks the same pages over HTTP, so
CI covers the console either way.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from consoleharness import get, metric, run_shop, visit_headers

playwright_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed (pip install playwright)")

CHROMIUM = os.environ.get("EDGEPROXY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set EDGEPROXY_CHROMIUM)", allow_module_level=True)

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "console"
GEO = {"geo_header": "CF-IPCountry", "trust_proxy": "127.0.0.1/32"}


@pytest.fixture
async def browser():
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


async def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def text(page, testid: str) -> str:
    return " ".join((await page.get_by_test_id(testid).inner_text()).split())


async def test_a_merchandiser_reads_the_states_previews_a_variant_and_shares_the_link(tmp_path, browser):
    async with run_shop(tmp_path) as (_shop, server):
        console = f"http://127.0.0.1:{server.admin_port}/console/"
        page = await browser.new_page()
        await page.goto(console)
        assert (await text(page, "state-hero-mobile-uk")).startswith("live")
        assert (await text(page, "state-hero-black-friday")).startswith("scheduled starts 2099-11-27")
        assert (await text(page, "state-hero-summer-sale")).startswith("ended")
        broken = await text(page, "state-banner-broken")
        assert "broken" in broken and "broken.html:2: invalid TOML" in broken and "Still serving: nothing" in broken
        assert "mobile visitors in GB or IE" in await text(page, "variant-hero-mobile-uk")
        await shot(page, "overview")

        # "Preview" on the scheduled Black Friday hero
        await page.get_by_role("link", name="Preview black-friday.html").click()
        await page.wait_for_url(lambda url: url.endswith("/console/preview?force=hero%3Ablack-friday"))
        assert await text(page, "decision-hero") == "black-friday"
        mine = page.frame_locator('iframe[title="The page as this visitor"]')
        assert await mine.locator("h1").inner_text() == "Black Friday"
        default = page.frame_locator('iframe[title="The default page"]')
        assert await default.locator("h1").inner_text() == "Default hero"
        await shot(page, "preview-forced")

        # a visitor, by the form's link: a colleague opens it in their own browser
        await page.goto(console + "preview?country=GB&city=Manchester&device=mobile&visitor=returning&at=2026-11-27T20:00&tz=Europe/London")
        link = await page.locator("input.share").input_value()
        colleague = await browser.new_context()
        theirs = await colleague.new_page()
        await theirs.goto(link)
        assert await text(theirs, "decision-hero") == "mobile-uk"
        frame = theirs.frame_locator('iframe[title="The page as this visitor"]')
        assert await frame.locator("h1").inner_text() == "Mobile UK hero"
        await shot(theirs, "preview-shared-link")
        await colleague.close()


async def test_keyboard_only_a_person_tabs_to_the_form_fills_it_and_submits(tmp_path, browser):
    async with run_shop(tmp_path) as (_shop, server):
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{server.admin_port}/console/preview")
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
        for _ in range(12):
            if await page.evaluate("document.activeElement.id") == "f-country":
                break
            await page.keyboard.press("Tab")
        else:
            pytest.fail("Tab never reached the country field")
        await page.keyboard.type("IE")
        await page.keyboard.press("Tab")  # city
        await page.keyboard.press("Tab")  # device
        assert await page.evaluate("document.activeElement.id") == "f-device"
        await page.keyboard.press("m")  # a closed select picks the option typed
        assert await page.locator("#f-device").input_value() == "mobile"
        for _ in range(20):
            if await page.evaluate("document.activeElement.type") == "submit":
                break
            await page.keyboard.press("Tab")
        else:
            pytest.fail("Tab never reached the Preview button")
        await page.keyboard.press("Enter")
        await page.wait_for_url(lambda url: url.endswith("/console/preview?country=IE&device=mobile"))
        assert await text(page, "decision-hero") == "mobile-uk"
        await shot(page, "preview-keyboard")


async def test_live_numbers_equal_metrics_and_follow_the_traffic(tmp_path, browser):
    async with run_shop(tmp_path, **GEO) as (_shop, server):
        for _ in range(3):
            await get(server.port, "/", headers=visit_headers(mobile=True, country="GB"))
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{server.admin_port}/console/live")
        _, prom, _ = await get(server.admin_port, "/metrics")
        for slot, variant in (("hero", "mobile-uk"), ("hero", "default"), ("banner", "free-delivery"), ("banner", "default")):
            expected = metric(prom, "edgeproxy_slot_decisions_total", slot=slot, variant=variant)
            assert float(await text(page, f"renders-{slot}-{variant}")) == expected
        assert await text(page, "renders-hero-mobile-uk") == "3"
        await shot(page, "live")
        # more traffic: the open page catches up by itself
        for _ in range(2):
            await get(server.port, "/", headers=visit_headers(mobile=True, country="IE"))
        await page.get_by_test_id("renders-hero-mobile-uk").filter(has_text="5").wait_for(timeout=8000)
        _, prom, _ = await get(server.admin_port, "/metrics")
        assert metric(prom, "edgeproxy_slot_decisions_total", slot="hero", variant="mobile-uk") == 5


async def test_the_overview_follows_the_folder_without_a_reload(tmp_path, browser):
    async with run_shop(tmp_path) as (_shop, server):
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{server.admin_port}/console/")
        assert await page.get_by_test_id("state-hero-rainy-day").count() == 0
        (tmp_path / "slots" / "hero" / "rainy-day.html").write_text("<!--edge\nwhen = { city = \"Manchester\" }\n-->\n<h1>Rain</h1>\n")
        await page.get_by_test_id("state-hero-rainy-day").wait_for(timeout=8000)
        assert (await text(page, "state-hero-rainy-day")).startswith("live")


async def test_on_a_phone_the_pages_fit_the_screen(tmp_path, browser):
    async with run_shop(tmp_path) as (_shop, server):
        phone = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        page = await phone.new_page()
        for name, path in (("overview", "/console/"), ("preview", "/console/preview?device=mobile&country=GB"), ("live", "/console/live")):
            await page.goto(f"http://127.0.0.1:{server.admin_port}{path}")
            overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name}: the page is {overflow}px wider than the phone"
            await shot(page, f"phone-{name}")
        await phone.close()


TEXTS = """Object.fromEntries([...document.querySelectorAll('[data-testid]')]
  .map(e => [e.dataset.testid, e.innerText.split(/\\s+/).join(' ').trim()]))"""


async def test_the_experiment_report_in_the_browser_is_edgeproxy_reports(tmp_path, browser):
    import aiohttp

    from test_console import assert_page_is_the_report, cli_report, seed_history

    exposures, conversions = tmp_path / "exposures.jsonl", tmp_path / "conversions.jsonl"
    seed_history(exposures, conversions)  # a week of the experiment so far
    settings = dict(exposure_log=str(exposures), conversion_log=str(conversions), conversion_path="/checkout/complete")
    async with run_shop(tmp_path, **settings) as (_shop, server):
        for i in range(16):
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
                for path in ("/", "/checkout/complete") if i % 2 == 0 else ("/",):
                    async with session.get(f"http://127.0.0.1:{server.port}{path}", headers=visit_headers()) as resp:
                        await resp.read()
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{server.admin_port}/console/live")
        await shot(page, "live-experiment")
        logs = ["--slots", str(tmp_path / "slots"), str(exposures), str(conversions)]
        report = cli_report("--json", "--plan", "--mde", "0.1", *logs)
        (exp,) = report["experiments"]
        texts = await page.evaluate(TEXTS)
        assert_page_is_the_report(texts.__getitem__, exp, report["reading_rule"])
        assert await page.get_by_test_id("srm-delivery-test").count() == 1

        # a larger smallest change, typed into the page's form: fewer visitors needed, and the link keeps it
        await page.locator("#f-mde").fill("25")
        await page.locator("#f-mde").press("Enter")
        await page.wait_for_url(lambda url: url.endswith("/console/live?mde=25"))
        report = cli_report("--json", "--plan", "--mde", "0.25", *logs)
        assert_page_is_the_report((await page.evaluate(TEXTS)).__getitem__, report["experiments"][0])

        # on a phone: the same figures, one card per arm, nothing wider than the screen
        phone = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        small = await phone.new_page()
        await small.goto(f"http://127.0.0.1:{server.admin_port}/console/live?mde=25")
        assert await small.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
        assert_page_is_the_report((await small.evaluate(TEXTS)).__getitem__, report["experiments"][0])
        await shot(small, "phone-live-experiment")
        await phone.close()
