"""Device: mobile, tablet, desktop or bot, plus OS and browser family.

Order of the rules (first that applies wins):

1. bots: an empty (blank) User-Agent; a known HTTP library or tool (``curl``,
   ``python-requests``, ``Go-http-client``… see ``HTTP_LIBRARIES``); any
   pattern of the ``crawler-user-agents`` list (four bare-word patterns that
   also name phones only when ua-parser sees no device); ua-parser's
   ``Spider`` device family;
2. ``Sec-CH-UA-Mobile: ?1`` (the browser says it wants the mobile
   experience; Android tablets send ``?0``) → mobile;
3. ua-parser's device family and brand: ``iPhone``/``iPod`` → mobile;
   ``iPad``, Kindle, the ``Generic_Android_Tablet`` brand, names with
   "Tablet"/"Tab"/"Pad" → tablet; TVs, consoles, set-top boxes → desktop
   (a big screen); ``Mac`` → desktop;
4. the User-Agent's own tokens: TV/console → desktop; ``iPad``,
   ``Tablet``, ``Silk/``, ``Kindle`` → tablet; an Android browser without
   ``Mobile`` → tablet (that is how Android tablets announce themselves),
   with it, or an Android app's own client → mobile;
5. the OS: a desktop OS → desktop; a mobile OS or a ``Mobi`` token, or a
   handset ua-parser knows by name → mobile;
6. everything else → desktop.

A request with no User-Agent header at all is a bot, like an empty one:
every browser sends one, and a script that does not must not get cookies or
join experiments.  (``edgeproxy explain`` without ``--ua`` describes a
desktop browser, and says so.)

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

from ua_parser import BasicResolver, BestAvailableResolver, Domain, load_builtins, load_lazy_builtins

MAX_UA_CHARS = 512
DEFAULT_UA_CACHE_SIZE = 8192

# Prefixes (lower-cased) of HTTP clients and tools that are not browsers.
# Most are in crawler-user-agents too; this list makes them certain.
HTTP_LIBRARIES = (
    "curl/", "wget/", "python-requests/", "python-urllib/", "python-httpx/", "python/", "aiohttp/",
    "go-http-client/", "okhttp/", "java/", "apache-httpclient/", "libwww-perl/", "lwp::", "php/",
    "guzzlehttp/", "node-fetch/", "node/", "axios/", "undici", "got ", "got/", "postmanruntime/", "insomnia/",
    "httpie/", "scrapy/", "ruby", "faraday", "http.rb/", "reqwest/", "dart:io", "dart/", "deno/",
    "rest-client/", "restsharp/", "winhttp", "powershell/", "microsoft-cryptoapi/", "zgrab/", "masscan",
    "nmap", "nikto", "sqlmap", "jakarta commons-httpclient", "httpclient/", "libcurl", "lua-resty-http",
    "fasthttp", "hackney/",
)
# crawler-user-agents patterns that are bare words also naming phones ("HTC
# Butterfly", "ViewSonic", "sprd-L008/1.0", "(speedy;HTC;…)"): they count only
# when ua-parser does not recognise a device.
WEAK_CRAWLER_PATTERNS = frozenset({"Butterfly", "Sonic", "008\\/", "speedy"})

# Device family / brand (short strings, checked once per family).
PHONE_FAMILIES = frozenset(
    {"iphone", "ipod", "ipod touch", "generic smartphone", "generic feature phone", "apple watch"}
)
TABLET_BRANDS = frozenset({"generic_android_tablet"})
# Samsung's Galaxy Tab models are SM-T…, SM-P…, SM-X… and GT-P….
TABLET_FAMILY = re.compile(
    r"(?i)tablet|pad\b|pad[ _-]?\d|\btab|tab\d|kindle|xoom|playbook|nook|nexus (?:7|9|10)\b|\b(?:sm-[tpx]|gt-p)\d"
)
BIG_SCREEN_FAMILY = re.compile(
    r"(?i)\btv\b|tv$|smart-?tv|hbbtv|netcast|google ?tv|apple ?tv|bravia|roku|chromecast|fire ?tv|"
    r"playstation|xbox|nintendo|\bwii\b|inettv|viera|aquos|\bquest\b|oculus"
)
# Substrings of the lower-cased User-Agent.
BIG_SCREEN_UA = (
    "smart-tv", "smarttv", "hbbtv", "netcast", "googletv", "google tv", "appletv", "apple tv", "android tv",
    "bravia", "roku", "crkey", "playstation", "xbox", "nintendo", "web0s", "viera", "aquos", "philipstv",
    "oculusbrowser", "; aftb", "; aftm", "; afts", "; aftt", "; aftka", "; aftmm", "tizen 2.3) tv", "(tv;",
)
TABLET_UA = ("ipad", "tablet", "silk/", "kindle", "playbook", "xoom", "; sm-t", "; gt-p", "mediapad", "matepad")
MOBILE_UA = (
    "mobi", "iphone", "ipod", "opera mini", "blackberry", "bb10", "windows phone", "kaios", "nokia", "midp",
    "symbian", "j2me", "up.browser", "obigo", "netfront", "series40", "series60",
)
DESKTOP_OS = frozenset({"mac os x", "windows", "linux", "chrome os", "ubuntu", "fedora", "freebsd", "debian", "openbsd", "netbsd", "solaris"})
MOBILE_OS = frozenset(
    {
        "ios", "android", "windows phone", "windows mobile", "windows ce", "blackberry os", "blackberry tablet os",
        "symbian os", "symbian^3", "symbian^3 anna", "symbian^3 belle", "series40", "series60", "kaios",
        "firefox os", "bada", "meego", "maemo", "webos", "brew", "brew mp", "java me", "sailfish", "tizen",
        "harmonyos", "ubuntu touch", "nokia series 40", "nokia series 60",
    }
)


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
BOT = DeviceInfo("bot")


# ---------------------------------------------------------------------------
# The process-wide matchers: built once (≈0.2 s), shared by every
# Classifiers of the process (the regexes do not depend on settings).
# ---------------------------------------------------------------------------
_lock = threading.Lock()
_shared: dict[str, Any] = {}


def _ua_resolver() -> Callable[[str, Domain], Any]:
    """ua-parser's best resolver, as ``ua_parser`` itself picks it: the
    ``ua-parser-rs`` one when importable (then with lazily compiled
    builtins), else re2, else the pure-Python one."""
    with _lock:
        resolver = _shared.get("ua")
        if resolver is None:
            native = BestAvailableResolver is not BasicResolver
            resolver = BestAvailableResolver(load_lazy_builtins() if native else load_builtins())
            _shared["ua"] = resolver
        return resolver


def crawler_patterns() -> list[str]:
    from crawleruseragents import CRAWLER_USER_AGENTS_DATA

    return [entry["pattern"] for entry in CRAWLER_USER_AGENTS_DATA]


def _crawler_matcher() -> Callable[[str], str | None]:
    """``matcher(ua)`` -> ``"bot"``, ``"weak"`` (only a ``WEAK_CRAWLER_PATTERNS``
    pattern matched) or ``None``, for the whole crawler-user-agents list,
    compiled once: a Rust regex set when ``ua-parser-rs`` is importable, else
    one Python alternation per strength (correct, slower; results are cached)."""
    with _lock:
        matcher = _shared.get("crawler")
        if matcher is not None:
            return matcher
        patterns = crawler_patterns()
        strong = [p for p in patterns if p not in WEAK_CRAWLER_PATTERNS]
        weak = [p for p in patterns if p in WEAK_CRAWLER_PATTERNS]
        try:
            import ua_parser_rs  # type: ignore[import-not-found]

            # First match wins, so the weak patterns go last.
            extractor = ua_parser_rs.UserAgentExtractor(
                [(p, "bot", None, None, None, None) for p in strong] + [(p, "weak", None, None, None, None) for p in weak]
            )

            def matcher(ua: str) -> str | None:
                found = extractor.extract(ua)
                return None if found is None else found.family

        except (ImportError, ValueError, TypeError, AttributeError):
            strong_re = re.compile("|".join(f"(?:{p})" for p in strong))
            weak_re = re.compile("|".join(f"(?:{p})" for p in weak) or "(?!)")

            def matcher(ua: str) -> str | None:
                if strong_re.search(ua):
                    return "bot"
                return "weak" if weak_re.search(ua) else None

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
            return BOT
        ua = user_agent[:MAX_UA_CHARS]
        if not ua.isascii():
            # Undecodable header bytes arrive as lone surrogates; the native
            # matchers need valid text.
            ua = ua.encode("utf-8", "replace").decode("utf-8")
        return self._cached(ua, ch_mobile == "?1")

    def cache_clear(self) -> None:
        self._cached.cache_clear()

    def _classify(self, ua: str, ch_mobile: bool) -> DeviceInfo:
        text = ua.strip()
        if not text:
            return DeviceInfo("bot")
        low = text.lower()
        if low.startswith(HTTP_LIBRARIES):
            return DeviceInfo("bot")
        crawler = self._is_crawler(text)
        if crawler == "bot":
            return DeviceInfo("bot")
        result = self._resolve(text, Domain.ALL)
        device = result.device
        family = device.family if device is not None else None
        if family == "Spider" or (crawler == "weak" and _known(family) is None):
            return DeviceInfo("bot")
        os_family = _known(result.os.family) if result.os is not None else None
        browser = _known(result.user_agent.family) if result.user_agent is not None else None
        brand = device.brand if device is not None else None
        return DeviceInfo(_form_factor(low, family or "", brand or "", os_family, ch_mobile), os_family, browser)


@lru_cache(maxsize=4096)
def _family_kind(family: str, brand: str) -> str | None:
    """The form factor ua-parser's device family/brand alone implies."""
    fam = family.lower()
    if fam in PHONE_FAMILIES:
        return "mobile"
    if brand.lower() in TABLET_BRANDS or TABLET_FAMILY.search(family):
        return "tablet"
    if BIG_SCREEN_FAMILY.search(family) or BIG_SCREEN_FAMILY.search(brand):
        return "desktop"
    if fam == "mac":
        return "desktop"
    return None


def _form_factor(low: str, family: str, brand: str, os_family: str | None, ch_mobile: bool) -> str:
    """``low`` is the lower-cased User-Agent."""
    if ch_mobile:
        return "mobile"
    kind = _family_kind(family, brand) if family else None
    if kind is not None:
        return kind
    if any(t in low for t in BIG_SCREEN_UA):
        return "desktop"
    if any(t in low for t in TABLET_UA):
        return "tablet"
    os_lower = (os_family or "").lower()
    if os_lower == "android":
        # Android tablet *browsers* leave "Mobile" out of the User-Agent; apps'
        # own HTTP clients (no Safari/Firefox token) leave it out on phones too.
        if any(t in low for t in MOBILE_UA) or not ("safari/" in low or "firefox/" in low):
            return "mobile"
        return "tablet"
    if os_lower in DESKTOP_OS:
        return "desktop"
    if os_lower in MOBILE_OS or any(t in low for t in MOBILE_UA):
        return "mobile"
    if family and family != "Other":
        return "mobile"  # a handset ua-parser knows by name (feature phones…)
    return "desktop"
