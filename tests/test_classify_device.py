"""classify/device.py: device (mobile/tablet/desktop/bot), os and browser.

Tables of real User-Agents grouped by case; the accuracy tests run against
uap-core's test_device.yaml and crawler-user-agents' instances when
../shared/data is present (``-s`` prints the figures).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from edgeproxy.classify.device import MAX_UA_CHARS, DeviceClassifier, DeviceInfo

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
PIXEL = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36"
ANDROID_REDUCED = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36"
IPAD = "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
GALAXY_TAB = "Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
KINDLE_FIRE = "Mozilla/5.0 (Linux; Android 11; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/120.3.1 like Chrome/120.0.6099.230 Safari/537.36"
MAC_SAFARI = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
WIN_CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
WIN_FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"
LINUX_FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
CHROMEBOOK = "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
EDGE = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91"
SAMSUNG_TV = "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36"
PS5 = "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0 Safari/605.1.15"
OPERA_MINI = "Opera/9.80 (J2ME/MIDP; Opera Mini/5.1.21214/28.2725; U; ru) Presto/2.8.119 Version/11.10"
NOKIA_FEATURE = "Nokia6300/2.0 (05.00) Profile/MIDP-2.0 Configuration/CLDC-1.1"
WINDOWS_PHONE = "Mozilla/5.0 (compatible; MSIE 10.0; Windows Phone 8.0; Trident/6.0; IEMobile/10.0; ARM; Touch; NOKIA; Lumia 920)"


@pytest.fixture(scope="module")
def devices() -> DeviceClassifier:
    return DeviceClassifier()


@pytest.mark.parametrize(
    "ua, expected",
    [
        # phones
        (IPHONE, "mobile"),
        (PIXEL, "mobile"),
        (ANDROID_REDUCED, "mobile"),
        (OPERA_MINI, "mobile"),
        (NOKIA_FEATURE, "mobile"),
        (WINDOWS_PHONE, "mobile"),
        # tablets: iPad, Android without "Mobile", Kindle/Silk
        (IPAD, "tablet"),
        (GALAXY_TAB, "tablet"),
        (KINDLE_FIRE, "tablet"),
        ("Mozilla/5.0 (Linux; U; Android 4.0.3; de-de; Galaxy Tab 2 Build/IML74K) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Safari/534.30", "tablet"),
        ("Mozilla/5.0 (Linux; Android 12; Lenovo TB-X606F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", "tablet"),
        # desktops
        (MAC_SAFARI, "desktop"),
        (WIN_CHROME, "desktop"),
        (WIN_FIREFOX, "desktop"),
        (LINUX_FIREFOX, "desktop"),
        (CHROMEBOOK, "desktop"),
        (EDGE, "desktop"),
        # big screens count as desktop
        (SAMSUNG_TV, "desktop"),
        (PS5, "desktop"),
        # an unknown but browser-shaped UA
        ("Mozilla/5.0 (compatible; SomethingNew/1.0)", "desktop"),
    ],
)
def test_device_form_factor(devices, ua, expected):
    assert devices.classify(ua).device == expected


@pytest.mark.parametrize(
    "ua",
    [
        # search and social crawlers
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.71 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Twitterbot/1.0",
        "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        # HTTP libraries and tools
        "curl/8.4.0",
        "Wget/1.21.4",
        "python-requests/2.31.0",
        "Python/3.11 aiohttp/3.9.1",
        "Go-http-client/2.0",
        "okhttp/4.12.0",
        "Java/17.0.2",
        "Apache-HttpClient/4.5.14 (Java/17.0.2)",
        "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
        "axios/1.6.2",
        "PostmanRuntime/7.36.0",
        "python-httpx/0.27.0",
        "Scrapy/2.11.0 (+https://scrapy.org)",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
        # empty or blank
        "",
        "   ",
    ],
)
def test_bots(devices, ua):
    assert devices.classify(ua) == DeviceInfo("bot")


@pytest.mark.parametrize(
    "ua",
    [
        # phones whose names are bare-word crawler patterns ("Butterfly", "Sonic")
        "Mozilla/5.0 (Linux; Android 4.4.1; HTC Butterfly S Build/KRT16M) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/32.0.1700.99 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; U; Android 2.2.2; En-us; ViewSonic-ViewPad4 Build/FRG83G) AppleWebKit/533.1 (KHTML, Like Gecko) Version/4.0 Mobile Safari/533.1",
    ],
)
def test_phones_named_like_a_crawler_are_not_bots(devices, ua):
    assert not devices.classify(ua).bot


@pytest.mark.parametrize(
    "ua, ch_mobile, expected",
    [
        # Sec-CH-UA-Mobile: ?1 means the mobile experience, whatever the UA says
        (ANDROID_REDUCED, "?1", "mobile"),
        (WIN_CHROME, "?1", "mobile"),
        # ?0 and garbage change nothing
        (GALAXY_TAB, "?0", "tablet"),
        (WIN_CHROME, "?0", "desktop"),
        (WIN_CHROME, "yes", "desktop"),
        # a bot stays a bot
        ("curl/8.4.0", "?1", "bot"),
    ],
)
def test_client_hint_mobile(devices, ua, ch_mobile, expected):
    assert devices.classify(ua, ch_mobile).device == expected


@pytest.mark.parametrize(
    "ua, os, browser",
    [
        (IPHONE, "iOS", "Mobile Safari"),
        (PIXEL, "Android", "Chrome Mobile"),
        (MAC_SAFARI, "Mac OS X", "Safari"),
        (WIN_CHROME, "Windows", "Chrome"),
        (WIN_FIREFOX, "Windows", "Firefox"),
        (EDGE, "Windows", "Edge"),
        (CHROMEBOOK, "Chrome OS", "Chrome"),
        # unknown families are left out, not "Other"
        ("Mozilla/5.0 (compatible; SomethingNew/1.0)", None, None),
    ],
)
def test_os_and_browser_families(devices, ua, os, browser):
    info = devices.classify(ua)
    assert (info.os, info.browser) == (os, browser)


def test_no_user_agent_header_is_a_bot(devices):
    assert devices.classify(None) == DeviceInfo("bot")


def test_user_agent_is_cut_before_matching(devices):
    # A bot token past the cut is not seen; the prefix decides.
    long_ua = WIN_CHROME + " " + "x" * MAX_UA_CHARS + " Googlebot/2.1"
    assert devices.classify(long_ua).device == "desktop"


@pytest.mark.parametrize(
    "ua",
    [
        "Mozilla/5.0 (" + "(" * 5000 + ")",
        "a" * 100_000,
        "Mozilla/5.0 " + "Android " * 20_000,
        "\x00\xff\ud800 Mozilla",
    ],
)
def test_pathological_user_agents_are_fast_and_never_raise(ua):
    devices = DeviceClassifier(cache_size=0)
    start = time.perf_counter()
    info = devices.classify(ua)
    assert info.device in {"mobile", "tablet", "desktop", "bot"}
    assert time.perf_counter() - start < 0.05


def test_results_are_cached_per_user_agent_and_hint(devices):
    devices.cache_clear()
    devices.classify(IPHONE)
    devices.classify(IPHONE)
    devices.classify(IPHONE, "?1")
    info = devices._cached.cache_info()
    assert (info.hits, info.misses) == (1, 2)


def test_crawler_list_without_the_native_engine_matches_the_same(monkeypatch):
    import sys

    from edgeproxy.classify import device

    native = device._crawler_matcher()
    monkeypatch.setitem(sys.modules, "ua_parser_rs", None)  # import now fails
    monkeypatch.setattr(device, "_shared", {})
    python = device._crawler_matcher()
    assert python is not native
    for ua in ("Googlebot/2.1", "HTC Butterfly", IPHONE, "curl/8"):
        assert python(ua) == native(ua)


# ---------------------------------------------------------------------------
# Accuracy against real ground truth (../shared/data)
# ---------------------------------------------------------------------------
def _uap_cases(path: Path) -> list[dict[str, str | None]]:
    """The test cases of a uap-core YAML file (its simple, regular subset of
    YAML: ``- user_agent_string: '…'`` then ``key: '…'`` lines)."""
    cases: list[dict[str, str | None]] = []
    current: dict[str, str | None] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text.startswith("- "):
            current = {}
            cases.append(current)
            text = text[2:]
        m = re.match(r"^([a-z_]+):\s*(.*)$", text)
        if current is None or m is None:
            continue
        key, value = m.groups()
        if value.startswith("'"):
            current[key] = value[1:-1].replace("''", "'")
        elif value.startswith('"'):
            current[key] = json.loads(value)
        else:
            current[key] = value or None
    return cases


# Families whose form factor is a matter of record: Samsung's model prefixes
# (SM-T/GT-P Galaxy Tab; SM-G/N/A, GT-I/S phones), Nokia/BlackBerry/Lumia
# handsets, and big screens (TVs, consoles: desktop here).
_SAMSUNG_TABLET = re.compile(r"^samsung (?:sm-t|gt-p)")
_PHONE = re.compile(r"^(?:samsung (?:sm-[gna]|gt-[is])|nokia|blackberry \d|lumia)")
_BIG_SCREEN = re.compile(r"^(?:hbbtv|netcast|inettv|chromecast|playstation|xbox)")


def _expected_form(family: str) -> str | None:
    """The form factor a uap-core device family makes unambiguous."""
    f = family.lower()
    if family == "Spider":
        return "bot"
    if f in ("iphone", "ipod", "ipod touch", "generic smartphone", "generic feature phone") or _PHONE.match(f):
        return "mobile"
    if f in ("ipad", "generic tablet") or f.startswith("kindle") or "tablet" in f or _SAMSUNG_TABLET.match(f):
        return "tablet"
    if f == "mac" or _BIG_SCREEN.match(f):
        return "desktop"
    return None


@pytest.mark.shared_data
def test_device_accuracy_against_uap_core():
    path = SHARED / "uap-core" / "test_device.yaml"
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared ground-truth data (../shared/data) is absent")
    cases = _uap_cases(path)
    assert len(cases) > 16_000
    devices = DeviceClassifier()
    right: dict[str, int] = {}
    total: dict[str, int] = {}
    humans = humans_as_bots = 0
    for case in cases:
        got = devices.classify(case["user_agent_string"]).device
        expected = _expected_form(case["family"] or "")
        if case["family"] != "Spider":
            humans += 1
            humans_as_bots += got == "bot"
        if expected is not None:
            total[expected] = total.get(expected, 0) + 1
            right[expected] = right.get(expected, 0) + (got == expected)
    print()
    for form in sorted(total):
        print(f"device {form}: {right[form]}/{total[form]} = {right[form] / total[form]:.1%}")
    print(f"device non-Spider UAs classified bot: {humans_as_bots}/{humans} = {humans_as_bots / humans:.2%}")
    assert right["bot"] / total["bot"] >= 0.98
    for form in ("mobile", "tablet", "desktop"):
        assert right[form] / total[form] >= 0.9, form
    assert humans_as_bots / humans <= 0.01


@pytest.mark.shared_data
def test_bot_recall_on_crawler_user_agents_instances():
    path = SHARED / "crawler-user-agents" / "crawler-user-agents.json"
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared ground-truth data (../shared/data) is absent")
    instances = [ua for entry in json.loads(path.read_text(encoding="utf-8")) for ua in entry.get("instances", [])]
    devices = DeviceClassifier()
    found = sum(devices.classify(ua).bot for ua in instances)
    print(f"\nbot recall on crawler-user-agents instances: {found}/{len(instances)} = {found / len(instances):.2%}")
    assert len(instances) > 2000
    assert found / len(instances) >= 0.98


@pytest.mark.shared_data
@pytest.mark.parametrize("file, field", [("test_ua.yaml", "browser"), ("test_os.yaml", "os")])
def test_browser_and_os_families_against_uap_core(file, field):
    path = SHARED / "uap-core" / file
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared ground-truth data (../shared/data) is absent")
    devices = DeviceClassifier()
    right = total = bots = 0
    for case in _uap_cases(path):
        info = devices.classify(case["user_agent_string"])
        if info.bot:
            bots += 1  # bots get no os/browser
            continue
        expected = None if case["family"] == "Other" else case["family"]
        total += 1
        right += getattr(info, field) == expected
    print(f"\n{field} family ({file}, non-bot UAs): {right}/{total} = {right / total:.1%}; {bots} bots skipped")
    assert total > 400
    assert right / total >= 0.98
