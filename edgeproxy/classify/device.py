"""Device: mobile, tablet, desktop or bot, plus OS and browser family.

Order of the rules (first that applies wins):

1. bots: an empty (blank) User-Agent; a known HTTP library or tool (``curl``,
   ``python-requests``, ``Go-http-client``… see ``HTTP_LIBRARIES``); any
   pattern of the ``crawler-user-agents`` list; ua-parser's ``Spider``
   device family;
2. ``Sec-CH-UA-Mobile: ?1`` (the browser says it wants the mobile
   experience; Android tablets send ``?0``) → mobile;
3. tablets: ua-parser's device (``iPad``, Kindle, ``Generic_Android_Tablet``
   brand, names with "Tablet"/"Tab"/"Pad"), else the UA (``iPad``,
   ``Tablet``, ``Silk/``, or Android without ``Mobile``, which is how
   Android tablets announce themselves);
4. TVs, consoles and set-top boxes → desktop (a big screen);
5. phones: ``iPhone``/``iPod``, a mobile OS, the ``Mobi`` token, or any
   handset ua-parser names → mobile;
6. everything else → desktop.

A request with no User-Agent header at all gets ``UNKNOWN``: device, os
and browser unknown, not a bot (``edgeproxy explain`` without ``--ua``
describes such a request).

iPads on iPadOS 13+ send the desktop Safari User-Agent by default and are
indistinguishable from a Mac server-side: they count as desktop.

The User-Agent is cut to ``MAX_UA_CHARS`` before any matching, so a
pathological header cannot stall the event loop; results are cached per
(User-Agent, ``Sec-CH-UA-Mobile``) in an LRU.  ua-parser uses its native
``ua-parser-rs`` resolver when importable, and so does the crawler list:
its ~1,500 patterns are compiled once into one Rust regex set (about 1 µs a
match) instead of a Python alternation (hundreds of µs).
"""

from __future__ import annotations

import dataclasses
import re
import threading
from functools import lru_cache
from typing import Any, Callable

from ua_parser import BasicResolver, Domain, load_builtins

MAX_UA_CHARS = 512
DEFAULT_UA_CACHE_SIZE = 8192

# Prefixes (lower-cased) of HTTP clients and tools that are not browsers.
# Many are in crawler-user-agents too; this list makes them certain.
HTTP_LIBRARIES = (
    "curl/", "wget/", "python-requests/", "python-urllib/", "python-httpx/", "python/", "aiohttp/",
    "go-http-client/", "okhttp/", "java/", "apache-httpclient/", "libwww-perl/", "lwp::", "php/",
    "guzzlehttp/", "node-fetch/", "axios/", "undici", "got ", "got/", "postmanruntime/", "insomnia/",
    "httpie/", "scrapy/", "ruby", "faraday", "http.rb/", "reqwest/", "dart:io", "dart/", "deno/",
    "rest-client/", "restsharp/", "winhttp", "powershell/", "microsoft-cryptoapi/", "zgrab/", "masscan",
    "nmap", "nikto", "sqlmap", "jakarta commons-httpclient", "httpclient/", "libcurl", "lua-resty-http",
    "fasthttp", "hackney/",
)
HTTP_LIBRARY_TOKENS = re.compile(
    r"(?i)\b(?:HeadlessChrome|PhantomJS|python-requests|aiohttp|Go-http-client|okhttp|Apache-HttpClient|"
    r"libwww-perl|node-fetch|axios|PostmanRuntime|Scrapy|curl|Wget)[/ ]"
)

TABLET_FAMILIES = frozenset({"ipad", "generic tablet", "tablet", "kindle", "nook", "playbook", "surface"})
TABLET_BRANDS = frozenset({"generic_android_tablet"})
TABLET_WORDS = re.compile(r"(?i)tablet|\btab\b|\bpad\b|mi ?pad|ipad|kindle|nexus (?:7|9|10)\b|galaxy tab|xoom|playbook")
# Big screens: smart TVs, set-top boxes, consoles (device family or brand).
BIG_SCREEN_WORDS = re.compile(
    r"(?i)\btv\b|smart-?tv|hbbtv|netcast|googletv|appletv|apple tv|android tv|bravia|roku|chromecast|"
    r"fire ?tv|\baft[a-z]|playstation|xbox|nintendo|wii\b|inettv|viera|aquos|philipstv|tizen.*tv|webos.*tv|"
    r"\bquest\b|oculus"
)
PHONE_FAMILIES = frozenset(
    {"iphone", "ipod", "ipod touch", "generic smartphone", "generic feature phone", "apple watch"}
)
MOBILE_OS = frozenset(
    {
        "ios", "android", "windows phone", "windows mobile", "windows ce", "blackberry os", "blackberry tablet os",
        "symbian os", "symbian^3", "symbian^3 anna", "symbian^3 belle", "series40", "series60", "kaios",
        "firefox os", "bada", "meego", "maemo", "webos", "brew", "brew mp", "java me", "sailfish", "tizen",
        "harmonyos", "ubuntu touch", "nokia series 40", "nokia series 60",
    }
)
MOBILE_TOKENS = re.compile(r"(?i)mobi|iphone|ipod|opera mini|blackberry|\bbb10\b|windows phone|kaios|nokia|midp|wap")


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the User-Agent says; ``None`` fields are unknown."""

    device: str | None
    os: str | None = None
    browser: str | None = None

    @property
    def bot(self) -> bool:
        return self.device == "bot"


UNKNOWN = DeviceInfo(None)


# ---------------------------------------------------------------------------
# The process-wide matchers: built once (≈0.2 s), shared by every
# Classifiers of the process (the regexes do not depend on settings).
# ---------------------------------------------------------------------------
_lock = threading.Lock()
_shared: dict[str, Any] = {}


def _ua_resolver() -> Callable[[str, Domain], Any]:
    with _lock:
        resolver = _shared.get("ua")
        if resolver is None:
            try:
                from ua_parser import load_lazy_builtins
                from ua_parser.regex import Resolver as RegexResolver  # needs ua-parser-rs

                resolver = RegexResolver(load_lazy_builtins())
            except ImportError:
                resolver = BasicResolver(load_builtins())
            _shared["ua"] = resolver
        return resolver


def crawler_patterns() -> list[str]:
    from crawleruseragents import CRAWLER_USER_AGENTS_DATA

    return [entry["pattern"] for entry in CRAWLER_USER_AGENTS_DATA]


def _crawler_matcher() -> Callable[[str], bool]:
    """``matcher(ua) -> bool`` for the whole crawler-user-agents list,
    compiled once: a Rust regex set when ``ua-parser-rs`` is importable,
    else one Python alternation (correct, slower; results are cached)."""
    with _lock:
        matcher = _shared.get("crawler")
        if matcher is not None:
            return matcher
        patterns = crawler_patterns()
        try:
            import ua_parser_rs  # type: ignore[import-not-found]

            extractor = ua_parser_rs.UserAgentExtractor([(p, "bot", None, None, None, None) for p in patterns])

            def matcher(ua: str) -> bool:
                return extractor.extract(ua) is not None

        except (ImportError, ValueError, TypeError, AttributeError):
            combined = re.compile("|".join(f"(?:{p})" for p in patterns))

            def matcher(ua: str) -> bool:
                return combined.search(ua) is not None

        _shared["crawler"] = matcher
        return matcher


def _known(family: str | None) -> str | None:
    return family if family and family != "Other" else None


class DeviceClassifier:
    """``classify(user_agent, ch_mobile) -> DeviceInfo``, cached."""

    def __init__(self, *, cache_size: int = DEFAULT_UA_CACHE_SIZE) -> None:
        self._resolve = _ua_resolver()
        self._is_crawler = _crawler_matcher()
        self._cached = lru_cache(maxsize=cache_size)(self._classify)

    def classify(self, user_agent: str | None, ch_mobile: str | None = None) -> DeviceInfo:
        if user_agent is None:
            return UNKNOWN
        ua = user_agent[:MAX_UA_CHARS]
        return self._cached(ua, ch_mobile == "?1")

    def cache_clear(self) -> None:
        self._cached.cache_clear()

    def _classify(self, ua: str, ch_mobile: bool) -> DeviceInfo:
        text = ua.strip()
        if not text:
            return DeviceInfo("bot")
        lower = text.lower()
        if lower.startswith(HTTP_LIBRARIES) or HTTP_LIBRARY_TOKENS.search(text) or self._is_crawler(text):
            return DeviceInfo("bot", browser=None)
        result = self._resolve(text, Domain.ALL)
        device = result.device
        family = device.family if device is not None else None
        if family == "Spider":
            return DeviceInfo("bot")
        os_family = _known(result.os.family) if result.os is not None else None
        browser = _known(result.user_agent.family) if result.user_agent is not None else None
        return DeviceInfo(_form_factor(text, device, os_family, ch_mobile), os_family, browser)


def _form_factor(ua: str, device: Any, os_family: str | None, ch_mobile: bool) -> str:
    if ch_mobile:
        return "mobile"
    family = (device.family or "") if device is not None else ""
    brand = (device.brand or "") if device is not None else ""
    fam = family.lower()
    if fam in PHONE_FAMILIES:
        return "mobile"
    if fam in TABLET_FAMILIES or fam.startswith("kindle") or brand.lower() in TABLET_BRANDS or TABLET_WORDS.search(family):
        return "tablet"
    if BIG_SCREEN_WORDS.search(family) or BIG_SCREEN_WORDS.search(brand) or BIG_SCREEN_WORDS.search(ua):
        return "desktop"
    if "iPad" in ua or "Tablet" in ua or "Silk/" in ua or "Kindle" in ua:
        return "tablet"
    os_lower = (os_family or "").lower()
    if os_lower == "android" and not MOBILE_TOKENS.search(ua):
        return "tablet"
    if fam == "mac" or os_lower in ("mac os x", "windows", "linux", "chrome os", "ubuntu", "fedora", "freebsd"):
        return "desktop"
    if os_lower in MOBILE_OS or MOBILE_TOKENS.search(ua):
        return "mobile"
    if family and fam not in ("other", "spider"):
        return "mobile"  # a handset ua-parser knows by name (feature phones…)
    return "desktop"
