"""Source: how this request arrived (CONTRACT §3 ``source``, ``utm_*``).

First rule that applies wins:

1. an ad click id in the query (``gclid``, ``fbclid``, ``msclkid``… see
   ``CLICK_IDS``) → ``paid``; an email-tool id (``mc_cid``, ``_hsenc``) →
   ``email``;
2. ``utm_medium``: ``cpc``/``ppc``/``paid*``/``display``… → ``paid``;
   ``email``/``newsletter`` → ``email``; ``social`` → ``social``;
   ``organic`` → ``search``; ``referral``/``affiliate`` → ``referral``
   (``MEDIUMS``, close to Google Analytics' default channel rules);
3. the ``Referer``: the request's own host (or the proxy's other own hosts),
   ``www.`` or not, → ``internal``; a known search engine, social network,
   webmail or ad server (``DOMAIN_FACTS`` below, written for this project)
   → ``search``/``social``/``email``/``paid``; any other site → ``referral``;
4. ``utm_source`` naming a known site or ``newsletter`` → its medium; any
   other utm tag → ``referral`` (a tagged link from somewhere);
5. nothing → ``direct``.

Hosts are matched from the most specific suffix down, so
``mail.google.com`` is email while ``www.google.co.uk`` is search.  A
``name.*`` fact matches the name under any public suffix (``google.de``,
``google.co.uk``, ``google.com.br``).  Hosts whose first label is a mailbox
word (``mail.``, ``webmail.``, ``mail01.``, ``posta.``…) or a webmail
dereferrer (``deref-…``) are webmail; a portal's ``search.``/``suche.``
host is a search engine.  Android app
referrers (``android-app://com.google.android.gm``) are matched by package.

The session remembers its first source (``cookies.py``), so a visitor who
came from the newsletter stays ``email`` while browsing.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

MAX_UTM_CHARS = 100
MAX_REFERER_CHARS = 2048

# Query parameters that identify an ad click (the ad platforms append them).
# fbclid is appended to organic Facebook links as well; the contract counts it as paid.
CLICK_IDS = frozenset(
    {
        "gclid", "gclsrc", "gbraid", "wbraid", "dclid",  # Google Ads / Campaign Manager
        "msclkid",  # Microsoft Advertising
        "fbclid",  # Meta
        "ttclid",  # TikTok
        "twclid",  # X / Twitter
        "li_fat_id",  # LinkedIn
        "yclid",  # Yandex Direct
        "epik",  # Pinterest
        "sccid",  # Snapchat
        "rdt_cid",  # Reddit
        "irclickid",  # impact.com
        "obclid",  # Outbrain
        "tblci",  # Taboola
    }
)
EMAIL_IDS = frozenset({"mc_cid", "mc_eid", "_hsenc", "_hsmi", "mkt_tok"})

_PAID_MEDIUM = re.compile(r"^(?:.*cp.*|ppc|retargeting|remarketing|paid.*|display|banner|interstitial|expandable|ads?)$")
MEDIUMS: Mapping[str, str] = {
    "email": "email", "e-mail": "email", "e_mail": "email", "e mail": "email", "newsletter": "email",
    "mail": "email", "mailing": "email",
    "social": "social", "social-network": "social", "social-media": "social", "social_media": "social",
    "social network": "social", "social media": "social", "sm": "social", "social_network": "social",
    "organic": "search", "seo": "search",
    "referral": "referral", "affiliate": "referral", "affiliates": "referral", "partner": "referral",
    "none": "direct", "(none)": "direct",
}

# ---------------------------------------------------------------------------
# Domain facts: which sites are search engines, social networks, webmail or
# ad servers.  Hand-written for edgeproxy from the sites' own public domains;
# one medium per line, then its domains.  "name.*" = any public suffix.
# ---------------------------------------------------------------------------
DOMAIN_FACTS = """
search   google.* bing.com cn.bing.com yahoo.* search.yahoo.* duckduckgo.com ddg.gg baidu.com baidu.cn
search   yandex.* ya.ru ecosia.org qwant.com startpage.com ixquick.com search.brave.com ask.com aol.*
search   search.aol.* naver.com search.naver.com daum.net search.daum.net seznam.cz search.seznam.cz so.com
search   sogou.com sm.cn m.sm.cn 360.cn coccoc.com go.mail.ru mojeek.com kagi.com presearch.com metager.de
search   swisscows.com dogpile.com webcrawler.com excite.com lycos.com info.com petalsearch.com yahoo.co.jp
search   search.yahoo.co.jp najdi.si rambler.ru nova.rambler.ru searx.be search.lilo.org qwant.ie
search   neeva.com you.com meta.ua
search   com.google.android.googlequicksearchbox com.google.android.gm.search org.mozilla.firefox.search
email    mail.google.* inbox.google.com outlook.live.com outlook.office.com outlook.office365.com mail.live.com
email    outlook.com hotmail.com live.com gmail.com mail.yahoo.* mail.yahoo.co.jp mail.aol.com mail.com gmx.* web.de
email    e.mail.ru touch.mail.ru octavius.mail.ru laposte.net icloud.com www.icloud.com
email    fastmail.com app.fastmail.com tutanota.com mail.tutanota.com tuta.com app.tuta.com proton.me
email    mail.proton.me protonmail.com mail.protonmail.com zoho.com mail.zoho.* mail.yandex.* ukr.net
email    freemail.ukr.net abv.bg nm.abv.bg email.seznam.cz email.t-online.de freenet.de connect.xfinity.com
email    mail.qq.com exmail.qq.com mail.163.com mail.126.com mail.sina.com.cn mail.naver.com mail.daum.net
email    com.google.android.gm com.microsoft.office.outlook com.yahoo.mobile.client.android.mail
email    ch.protonmail.android com.samsung.android.email.provider ru.mail.mailapp com.apple.mobilemail
social   facebook.com fb.com fb.me m.facebook.com l.facebook.com lm.facebook.com messenger.com instagram.com
social   l.instagram.com threads.net threads.com twitter.com x.com t.co mobile.twitter.com linkedin.com
social   lnkd.in pinterest.* pin.it reddit.com old.reddit.com out.reddit.com redd.it tiktok.com youtube.com
social   m.youtube.com youtu.be vk.com vk.ru vkontakte.ru ok.ru odnoklassniki.ru tumblr.com snapchat.com
social   whatsapp.com web.whatsapp.com wa.me t.me telegram.org web.telegram.org discord.com discord.gg
social   quora.com weibo.com weibo.cn douban.com xing.com bsky.app mastodon.social mstdn.social
social   news.ycombinator.com slack.com app.slack.com line.me story.kakao.com twitch.tv flickr.com vimeo.com
social   myspace.com plus.google.* plus.url.google.com disqus.com nextdoor.com meetup.com tiktokv.com
social   skype.com teams.microsoft.com stumbleupon.com mix.com digg.com renren.com qzone.qq.com workplace.com
social   linktr.ee lnk.bio
social   com.facebook.katana com.facebook.orca com.facebook.lite com.instagram.android com.twitter.android
social   com.linkedin.android com.pinterest com.reddit.frontpage com.zhiliaoapp.musically com.ss.android.ugc.trill
social   org.telegram.messenger com.whatsapp com.snapchat.android com.google.android.youtube com.discord
paid     googleadservices.com doubleclick.net googlesyndication.com adservice.google.* ad.doubleclick.net
paid     googleads.g.doubleclick.net tpc.googlesyndication.com bat.bing.com ads.yahoo.com ads.google.com
paid     taboola.com outbrain.com criteo.com adnxs.com adsensecustomsearchads.com syndicatedsearch.goog
referral docs.google.* drive.google.* sites.google.* groups.google.* translate.google.* accounts.google.*
referral play.google.* support.google.* gemini.google.* chatgpt.com chat.openai.com perplexity.ai claude.ai
referral copilot.microsoft.com
"""

# The first label of a webmail host: "mail.", "webmail.", "mail01.",
# "mailbusiness.", "wmail.", "upcmail.", "posta.", "messagerie."…; and the
# dereferrer hosts webmail links go through ("deref-gmx.net", "deref-web.de").
MAILBOX_LABEL = re.compile(
    r"^(?:(?:web|w|e|my|free)?-?mail(?:s|box|er|business|\d+[a-z]*)?|[a-z]*mail\d*|correo|posta|poczta|"
    r"messagerie[a-z]*\d*|courrier|e-mail)$"
)
# The first label of a portal's search host ("search.", "suche.", "isearch.").
SEARCH_LABEL = re.compile(r"^(?:search|isearch|searchassist|suche|recherche|busca|buscar|cerca|szukaj|poisk)$")
# Second-level labels under a country code that form a public suffix
# ("co.uk", "com.au", "ne.jp"), for the "name.*" facts.
_SLD = frozenset({"co", "com", "net", "org", "ac", "gov", "edu", "ne", "or", "go", "gob", "nic", "gen", "ltd", "plc"})


def _parse_facts(text: str) -> tuple[dict[str, str], dict[str, str]]:
    exact: dict[str, str] = {}
    wild: dict[str, str] = {}
    for line in text.strip().splitlines():
        medium, *domains = line.split()
        for domain in domains:
            (wild if domain.endswith(".*") else exact)[domain.removesuffix(".*")] = medium
    return exact, wild


EXACT_FACTS, WILD_FACTS = _parse_facts(DOMAIN_FACTS)


@lru_cache(maxsize=8192)
def host_medium(host: str) -> str | None:
    """``search``/``social``/``email``/``paid``/``referral`` for a known
    host (lower-case, no port), else ``None``."""
    labels = host.split(".")
    n = len(labels)
    if labels[0].startswith("deref"):
        return "email"
    if n >= 3 and MAILBOX_LABEL.match(labels[0]):
        return "email"
    suffix = 2 if n >= 3 and labels[-2] in _SLD and len(labels[-1]) == 2 else 1
    for i in range(n):
        medium = EXACT_FACTS.get(".".join(labels[i:]))
        if medium is not None:
            return medium
        if i < n - suffix:
            medium = WILD_FACTS.get(".".join(labels[i : n - suffix]))
            if medium is not None:
                return medium
    if n >= 3 and SEARCH_LABEL.match(labels[0]):
        return "search"
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    """This request's source and campaign tags (``None``: not tagged)."""

    source: str = "direct"
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    # Explicitly attributed (utm tags or a click id): starts a new session
    # when it differs from the session's.
    campaign: bool = False


DIRECT = Source()
_SCHEME_HOST = re.compile(r"^([a-z][a-z0-9+.-]*)://([^/?#]*)", re.IGNORECASE)


def _clean(value: str) -> str | None:
    text = value.strip()[:MAX_UTM_CHARS]
    return text if text and text.isprintable() else None


def _host_of(netloc: str) -> str:
    host = netloc.rpartition("@")[2]
    if host.startswith("["):
        return host[1 : host.find("]")].lower() if "]" in host else ""
    return host.partition(":")[0].rstrip(".").lower()


MAX_HOST_CHARS = 255


def site_of(host: str) -> str:
    """A host without port and ``www.``, lower-cased: what "same site"
    compares (``""`` for a host too long to be one)."""
    return _site_of(host) if len(host) <= MAX_HOST_CHARS else ""


@lru_cache(maxsize=4096)
def _site_of(host: str) -> str:
    h = _host_of(host)
    return h[4:] if h.startswith("www.") else h


@lru_cache(maxsize=1024)  # callers keep referers under MAX_REFERER_CHARS
def _referer(referer: str) -> tuple[str, str] | None:
    """``(site, medium if external)`` of a ``Referer`` value, or ``None``."""
    m = _SCHEME_HOST.match(referer.strip())
    if m is None:
        return None
    scheme = m.group(1).lower()
    if scheme == "android-app":
        return "", EXACT_FACTS.get(m.group(2).lower(), "referral")
    if scheme not in ("http", "https"):
        return None
    host = _host_of(m.group(2))
    if not host or len(host) > MAX_HOST_CHARS:
        return None
    return (host[4:] if host.startswith("www.") else host), host_medium(host) or "referral"


def referer_medium(referer: str | None, own_sites: frozenset[str] = frozenset(), host: str = "") -> str | None:
    """The medium of a ``Referer`` value: ``internal`` for the request's own
    ``host`` or one of ``own_sites`` (compared by ``site_of``), a known
    medium, ``referral`` for another site; ``None`` for no usable referer."""
    if not referer or len(referer) > MAX_REFERER_CHARS:
        return None
    parsed = _referer(referer)
    if parsed is None:
        return None
    site, medium = parsed
    if site and (site in own_sites or (host and site == site_of(host))):
        return "internal"
    return medium


def source_of(
    query: Sequence[tuple[str, str]], referer: str | None, own_sites: frozenset[str] = frozenset(), host: str = ""
) -> Source:
    """This request's ``Source`` from its query pairs and ``Referer``;
    ``host`` is the request's own host (its referers are ``internal``)."""
    utm_source = utm_medium = utm_campaign = None
    click = None
    for key, value in query:
        k = key.lower()
        if k.startswith("utm_"):
            if k == "utm_source" and utm_source is None:
                utm_source = _clean(value)
            elif k == "utm_medium" and utm_medium is None:
                utm_medium = _clean(value)
            elif k == "utm_campaign" and utm_campaign is None:
                utm_campaign = _clean(value)
        elif click is None:
            if k in CLICK_IDS:
                click = "paid"
            elif k in EMAIL_IDS:
                click = "email"
    from_referer = referer_medium(referer, own_sites, host) if referer else None
    if click is None and utm_source is None and utm_medium is None and utm_campaign is None:
        return Source(from_referer) if from_referer else DIRECT
    medium = _tagged(click, utm_source, utm_medium, from_referer)
    return Source(medium, utm_source, utm_medium, utm_campaign, campaign=True)


def _tagged(click: str | None, utm_source: str | None, utm_medium: str | None, from_referer: str | None) -> str:
    if click is not None:
        return click
    if utm_medium is not None:
        medium = utm_medium.lower()
        known = MEDIUMS.get(medium)
        if known is None and _PAID_MEDIUM.match(medium):
            known = "paid"
        if known is not None and known != "direct":
            return known
    if from_referer is not None and from_referer not in ("referral", "internal"):
        return from_referer
    if utm_source is not None:
        name = utm_source.lower()
        known = MEDIUMS.get(name) or host_medium(name) or host_medium(name + ".com")
        if known is not None and known != "direct":
            return known
    return "referral"
