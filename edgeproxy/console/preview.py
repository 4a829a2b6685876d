"""Preview as a visitor: a described visitor, each slot's decision, the page.

The form (CONTRACT §8) describes a visitor by their context, not by the
headers and cookies a browser would send: ``country``, ``city``,
``device``, ``source``, ``utm_campaign``, ``visitor`` (new/returning),
``customer``, ``cart``, ``affinity`` (comma-separated), ``at`` (ISO time;
none = now), ``tz`` (the visitor's IANA zone for ``at``'s wall clock),
``path``; plus ``id`` (the visitor id an experiment buckets, so a colleague
opening the link lands in the same arm) and ``force``
(``hero:black-friday-uk,banner:none``, as ``?edge_preview=``).  The state
is the URL query, so a preview is a link.

``PreviewForm.parse(query)`` reads it, never raising: a bad value becomes a
message on its field and is left out.  ``visitor()`` builds the ``Visitor``
stage 2 takes, and the decision and its "why" come from
``explain.explain_decision``: the same function ``edgeproxy explain`` runs.

``render_page`` is the page as that visitor gets it, made with the console's
own authority and the proxy's own stages: the admin server fetches the path
from the origin (``fetch.fetch``, no visitor cookie, no preview token) and
rewrites it with the decision's edits (``rewrite.rewrite_document``).
Nothing in the preview's URL is a secret, so nothing can leak to the origin
or through ``Referer``; and a preview is never counted in ``/metrics``, the
exposure log or a visitor's caps.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlencode

from ..catalog.conditions import ISO_COUNTRIES
from ..catalog.model import Catalog
from ..choose import parse_preview
from ..classify.clock import DAYPARTS, clock_context, zone
from ..errors import SettingsError
from ..explain import DEFAULT_UA, explain_decision, parse_at, passed_over
from ..model import DEVICES, SOURCES, WEEKDAYS, ContextValue, Decision, Visitor

FIELDS = ("country", "city", "device", "source", "utm_campaign", "visitor", "customer", "cart", "affinity", "at", "tz", "path", "id", "force")
DEFAULT_VISITOR_ID = "console-preview"
PREVIEW_SESSION = "console-preview"
# What the origin sees as the preview's browser, per device (some shops
# serve phones other HTML).
USER_AGENTS = {
    "desktop": DEFAULT_UA,
    "mobile": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "tablet": "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "bot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
}
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_MAX_TEXT = 200


@dataclasses.dataclass(frozen=True, slots=True)
class PreviewForm:
    """The preview's query, validated.  ``values`` holds what the form shows
    (as typed); ``problems`` a message per field that could not be used."""

    values: Mapping[str, str]
    problems: Mapping[str, str]
    at: dt.datetime
    at_given: bool
    forced: Mapping[str, str | None]

    @classmethod
    def parse(cls, query: Mapping[str, str], now: dt.datetime) -> PreviewForm:
        values = {name: (query.get(name) or "").strip()[:_MAX_TEXT] for name in FIELDS}
        problems: dict[str, str] = {}
        if values["country"]:
            values["country"] = values["country"].upper()
            if values["country"] not in ISO_COUNTRIES:
                problems["country"] = f"{values['country']!r} is not an ISO 3166 country code like GB"
        for name, allowed in (
            ("device", DEVICES), ("source", SOURCES), ("visitor", ("new", "returning")),
            ("customer", ("yes", "no")), ("cart", ("empty", "filled")),
        ):
            values[name] = values[name].lower()
            if values[name] and values[name] not in allowed:
                problems[name] = f"{values[name]!r}: expected one of {', '.join(sorted(allowed))}"
        if values["path"] and not values["path"].startswith("/"):
            problems["path"] = "a path starts with /, e.g. /c/running"
        if values["id"] and not _ID.match(values["id"]):
            problems["id"] = "letters, digits and . _ : - only, up to 64"
        if values["tz"] and zone(values["tz"]) is None:
            problems["tz"] = f"{values['tz']!r} is not a time zone like Europe/London"
        at, at_given = now, False
        if values["at"]:
            try:
                at = parse_at(values["at"])
                at_given = True
            except SettingsError as exc:
                problems["at"] = exc.reason
            else:
                tz = zone(values["tz"]) if values["tz"] and "tz" not in problems else None
                if tz is not None and _naive(values["at"]):
                    at = at.replace(tzinfo=tz)  # 20:00 in Europe/London, not 20:00 UTC
        forced = parse_preview(values["force"]) if values["force"] else {}
        return cls(MappingProxyType(values), MappingProxyType(problems), at, at_given, MappingProxyType(forced))

    def get(self, name: str) -> str:
        """A field's value if it is usable, else ``""``."""
        return "" if name in self.problems else self.values.get(name, "")

    @property
    def path(self) -> str:
        return self.get("path") or "/"

    def query(self, **changes: str) -> str:
        """The URL query of this preview (with ``changes``): the shareable
        link.  Empty fields are left out."""
        values = {**self.values, **changes}
        return urlencode([(k, values[k]) for k in FIELDS if values.get(k)])

    def visitor(self) -> Visitor:
        """The ``Visitor`` this form describes (consent given: a preview
        shows what a measured visitor sees)."""
        ctx: dict[str, ContextValue] = {}
        for key in ("country", "city", "utm_campaign"):
            if self.get(key):
                ctx[key] = self.get(key)
        device = self.get("device") or "desktop"
        ctx["device"] = device
        ctx["source"] = self.get("source") or "direct"
        if device == "bot":
            ctx.update(self._clock(), path=self.path.split("?", 1)[0], consent=False)
            return Visitor(context=MappingProxyType(ctx), consent=False, bot=True)
        ctx["visitor"] = self.get("visitor") or "new"
        if self.get("customer"):
            ctx["customer"] = self.get("customer") == "yes"
        if self.get("cart"):
            ctx["cart"] = self.get("cart")
        ctx["affinity"] = tuple(c.strip() for c in self.get("affinity").split(",") if c.strip())[:5]
        ctx.update(self._clock(), path=self.path.split("?", 1)[0], consent=True)
        return Visitor(
            context=MappingProxyType(ctx),
            visitor_id=self.get("id") or DEFAULT_VISITOR_ID,
            consent=True,
            timezone=self.get("tz") or None,
            session_id=PREVIEW_SESSION,
        )

    def _clock(self) -> dict[str, ContextValue]:
        """hour, weekday, daypart: ``at``'s wall clock as written (or in
        ``tz``); without ``at``, now in ``tz`` or the proxy's zone, as the
        classifier does."""
        tz = self.get("tz") or None
        if self.at_given and tz is None:
            local = self.at
            hour, weekday, daypart = local.hour, WEEKDAYS[local.weekday()], DAYPARTS[local.hour]
        else:
            hour, weekday, daypart = clock_context(self.at, tz)
        return {"hour": hour, "weekday": weekday, "daypart": daypart}

    def decide(self, catalog: Catalog, *, holdout: float = 0.0) -> tuple[Decision, dict[str, Any]]:
        """Each slot's decision and the trace ``edgeproxy explain --json``
        would print for this visitor."""
        tz = zone(self.get("tz")) if self.get("tz") else None
        at = self.at.astimezone(tz) if tz is not None else self.at
        extra: dict[str, Any] = {"url": self.path, "at": at.isoformat(timespec="seconds")}
        if self.forced:
            extra["preview"] = dict(self.forced)
        return explain_decision(self.visitor(), catalog, self.at, forced=self.forced, holdout=holdout, extra=extra)


    def passed_over(self, catalog: Catalog, decision: Decision) -> dict[str, list[tuple[str, str]]]:
        """Per slot, its other variants and why each did not show (what
        ``edgeproxy explain`` prints under each slot)."""
        visitor = self.visitor()
        return {
            name: passed_over(catalog.slots[name], d, visitor, self.at)
            for name, d in decision.slots.items() if name in catalog.slots
        }


def _naive(text: str) -> bool:
    try:
        return dt.datetime.fromisoformat(text.strip()).tzinfo is None
    except ValueError:
        return False


def origin_target(path: str) -> str:
    """The request target for the origin: the form's path (and query),
    percent-encoded where it is not already, always starting with one ``/``."""
    target = quote(path, safe="/?&=%:@!$'()*+,;-._~")
    return "/" + target.lstrip("/")


# ---------------------------------------------------------------------------
# The page, rendered as the visitor.
# ---------------------------------------------------------------------------
_HEAD = re.compile(rb"<head(?:\s[^>]*)?>", re.I)


def with_base(body: bytes, base: str) -> bytes:
    """``body`` with ``<base href=base>`` first in its head, so the page's
    relative links and assets load from the shop, not from the admin port."""
    tag = b'<base href="' + base.encode("ascii", "replace").replace(b'"', b"%22") + b'">'
    m = _HEAD.search(body, 0, 64 * 1024)
    if m is not None:
        return body[: m.end()] + tag + body[m.end():]
    return tag + body


@dataclasses.dataclass(frozen=True, slots=True)
class RenderedPage:
    status: int
    content_type: str
    body: bytes
    outcomes: Mapping[str, str]  # slot -> the rewriter's outcome (applied, absent, …)
    note: str = ""  # why the page is shown unchanged, if it is


async def render_page(state: Any, form: PreviewForm, decision: Decision | None, *, base: str) -> RenderedPage:
    """The form's page from the origin, rewritten with ``decision``'s edits
    (``None``: the default page, untouched).  Uses the proxy's upstream
    session, settings and rewriter; counts nothing."""
    from .. import fetch as fetching
    from ..errors import UpstreamError
    from ..rewrite import decoder_for, page_charset, rewrite_document
    from ..rewrite.codec import CodecError

    settings = state.settings
    headers = [
        ("Host", fetching.upstream_host(settings)),
        ("User-Agent", USER_AGENTS.get(form.get("device") or "desktop", DEFAULT_UA)),
        ("Accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"),
        ("Accept-Encoding", "gzip, deflate"),
    ]
    url = fetching.upstream_url(settings, origin_target(form.path))
    try:
        upstream = await fetching.fetch(state.session, settings, method="GET", url=url, headers=headers)
    except UpstreamError as exc:
        text = f"<!doctype html><meta charset=utf-8><p>The shop could not be reached: {html.escape(str(exc))}</p>"
        return RenderedPage(502, "text/html; charset=utf-8", text.encode(), {}, "origin-error")
    location = upstream.header("location")
    if 300 <= upstream.status < 400 and location:
        upstream.release()
        # A frame cannot follow it as this visitor: say where it goes.
        text = (
            f"<!doctype html><meta charset=utf-8><base href=\"{html.escape(base)}\"><p>The shop answers {upstream.status}: "
            f"this path redirects to <a href=\"{html.escape(location)}\">{html.escape(location)}</a>. Preview that path instead.</p>"
        )
        return RenderedPage(200, "text/html; charset=utf-8", text.encode(), {}, f"redirect {upstream.status}")
    try:
        content_type = upstream.header("content-type") or "application/octet-stream"
        length = upstream.content_length
        if length is not None and length > settings.max_rewrite_bytes:
            return RenderedPage(upstream.status, "text/plain; charset=utf-8", b"The page is over max_rewrite_bytes: the proxy sends it unchanged.", {}, "too-large")
        chunks = []
        size = 0
        async for chunk in upstream.body():
            chunks.append(chunk)
            size += len(chunk)
            if size > settings.max_rewrite_bytes:
                return RenderedPage(upstream.status, "text/plain; charset=utf-8", b"The page is over max_rewrite_bytes: the proxy sends it unchanged.", {}, "too-large")
        raw = b"".join(chunks)
    finally:
        upstream.release()
    decoder = decoder_for(upstream.header("content-encoding"), max_bytes=settings.max_rewrite_bytes)
    if decoder is None:
        return RenderedPage(upstream.status, "text/plain; charset=utf-8", b"The page's Content-Encoding cannot be decoded: the proxy sends it unchanged.", {}, "encoding")
    try:
        body = decoder.decompress(raw) + decoder.flush()
    except CodecError:
        return RenderedPage(upstream.status, "text/plain; charset=utf-8", b"The page's body is corrupt.", {}, "corrupt")
    from ..respond import is_html

    outcomes: dict[str, str] = {}
    note = ""
    if not is_html(content_type):
        note = "not-html"
    elif upstream.status != 200:
        note = "status"
    elif decision is not None and decision.edits:
        charset = page_charset(content_type, body[:4096])
        body, outcomes = rewrite_document(body, decision.edits, charset=charset, max_slot_bytes=settings.max_slot_bytes)
    if is_html(content_type):
        body = with_base(body, base)
    return RenderedPage(upstream.status, content_type, body, MappingProxyType(outcomes), note)
