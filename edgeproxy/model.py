"""The frozen values that flow between the pipeline's stages.

Every stage of ``pipeline.handle`` takes and returns these, never aiohttp
objects, so classification, choice and rewriting are pure functions that a
test can drive with plain data::

    RequestFacts --classify--> Visitor --choose--> Decision --rewrite--> bytes

Nothing here does I/O.  Mappings are read-only (``MappingProxyType``) so a
value computed once per request cannot be changed by a later stage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, TypeAlias, Union

# A context value: a string, a number (hour), a flag (customer) or a tuple of
# strings (affinity categories, strongest first).
ContextValue: TypeAlias = Union[str, int, bool, tuple[str, ...]]

EMPTY: Mapping = MappingProxyType({})


def _empty_field() -> Mapping:
    # MappingProxyType is unhashable on Python 3.11, so dataclasses treat it
    # as a mutable default; a factory returning the one shared EMPTY is fine.
    return dataclasses.field(default_factory=lambda: EMPTY)  # type: ignore[return-value]


def frozen_map(d: Mapping | None = None) -> Mapping:
    """A read-only view of a copy of ``d``."""
    return MappingProxyType(dict(d or {}))


# ---------------------------------------------------------------------------
# The visitor context keys (CONTRACT §3).  The slot loader validates `when`
# tables against this registry; the classifier fills exactly these keys.
#
# Each key maps to its allowed values: a frozenset of the closed set, or one of
# the kinds "code" (ISO code, upper-cased), "text", "int:LO-HI", "bool",
# "glob", "set" (the visitor holds a set; a condition tests membership).
# ---------------------------------------------------------------------------
DEVICES = frozenset({"mobile", "tablet", "desktop", "bot"})
SOURCES = frozenset({"direct", "search", "social", "email", "paid", "referral", "internal"})
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAYPARTS = frozenset({"morning", "afternoon", "evening", "night"})
CONTINENTS = frozenset({"AF", "AN", "AS", "EU", "NA", "OC", "SA"})

CONTEXT_KEYS: Mapping[str, object] = MappingProxyType(
    {
        "country": "code",
        "region": "text",
        "city": "text",
        "continent": CONTINENTS,
        "device": DEVICES,
        "os": "text",
        "browser": "text",
        "source": SOURCES,
        "utm_source": "text",
        "utm_medium": "text",
        "utm_campaign": "text",
        "visitor": frozenset({"new", "returning"}),
        "customer": "bool",
        "logged_in": "bool",
        "cart": frozenset({"empty", "filled"}),
        "affinity": "set",
        "hour": "int:0-23",
        "weekday": frozenset(WEEKDAYS),
        "daypart": DAYPARTS,
        "path": "glob",
        "consent": "bool",
    }
)

# Keys usable without consent (CONTRACT §3 "Consent"): geo at country level,
# device, the source of this request, time, path.  Without consent the
# classifier leaves every other key out of the context.
CONTEXTUAL_KEYS = frozenset(
    {
        "country", "continent", "device", "os", "browser", "source",
        "utm_source", "utm_medium", "utm_campaign",
        "hour", "weekday", "daypart", "path", "consent",
    }
)


# ---------------------------------------------------------------------------
# 1. The request, as the classifier sees it.
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the proxy knows about one incoming request, before any decision.

    Built once by the pipeline from the aiohttp request.  ``headers`` has
    lower-cased names (first value wins); ``cookies`` is the parsed Cookie
    header; ``client_ip`` is already resolved through the trusted proxies
    (``X-Forwarded-For`` is honoured only from ``--trust-proxy`` peers);
    ``peer_trusted`` says whether the direct peer is such a proxy, which is
    what makes a CDN geo header (``--geo-header``) believable.
    """

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = _empty_field()
    cookies: Mapping[str, str] = _empty_field()
    client_ip: str | None = None
    peer_trusted: bool = False
    scheme: str = "http"
    host: str = ""
    request_id: str = ""  # the client's X-Request-ID if well-formed, else one made (headers.request_id)


@dataclasses.dataclass(frozen=True, slots=True)
class SetCookie:
    """A cookie the proxy wants the client to store (CONTRACT §5).

    The respond stage adds ``Path=/; HttpOnly; SameSite=Lax`` and ``Secure``
    on HTTPS.  ``max_age=0`` deletes the cookie.
    """

    name: str
    value: str
    max_age: int


@dataclasses.dataclass(frozen=True, slots=True)
class CapCount:
    """Views of one frequency-capped variant in its current period.

    ``period`` names the period the count belongs to (e.g. ``d2026-11-22``,
    ``w2026-47``, ``s<session-start>``); a count from an older period is 0.
    """

    period: str
    views: int


# ---------------------------------------------------------------------------
# 2. The visitor: classify() output, computed once per request.
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Visitor:
    """Who is asking, in the terms a variant can target (CONTRACT §3).

    ``context`` holds only known keys of ``CONTEXT_KEYS``; a missing key is
    unknown (and a `when` on it does not hold).  ``visitor_id`` is ``None``
    for bots and without consent: such visitors are in no experiment and get
    no cookies.  ``cookies`` are the proxy cookies classify decided to set
    (visitor, session, affinity); ``caps`` are the frequency-cap counts read
    from the cap cookie, keyed ``"slot/variant"``.
    """

    context: Mapping[str, ContextValue]
    visitor_id: str | None = None
    consent: bool = True
    bot: bool = False
    timezone: str | None = None
    session_id: str | None = None
    caps: Mapping[str, CapCount] = _empty_field()
    cookies: tuple[SetCookie, ...] = ()

    @property
    def affinity(self) -> tuple[str, ...]:
        value = self.context.get("affinity", ())
        return value if isinstance(value, tuple) else ()


# ---------------------------------------------------------------------------
# 3. Edits: what the rewriter does to one slot.
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class ReplaceInner:
    """Replace the slot's inner HTML with ``html`` (merge tags already
    rendered and escaped).  The slot's own start and end tags stay
    byte-for-byte as the origin sent them."""

    html: str


@dataclasses.dataclass(frozen=True, slots=True)
class SortKey:
    """One key of a sort variant, applied in order (CONTRACT §2).

    kind ``"affinity"``: children whose ``data-category`` is among the
    visitor's affinity categories first, strongest first.
    kind ``"attr"``: by attribute ``attr`` (numeric when numeric), ascending,
    or descending when ``descending``.
    kind ``"pin"``: the SKUs in ``skus`` first, in that order.
    """

    kind: Literal["affinity", "attr", "pin"]
    attr: str = ""
    descending: bool = False
    skus: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class SortChildren:
    """Reorder the slot's element children; each child keeps its exact
    bytes, ties keep the origin's order (stable)."""

    keys: tuple[SortKey, ...]
    affinity: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Observe:
    """Leave the slot exactly as the origin sent it, but report whether it is
    on the page (outcome ``"seen"``).  Used for an experiment's control arm,
    so its exposures are logged on the same condition as a variant's: the
    slot really rendered."""


Edit: TypeAlias = Union[ReplaceInner, SortChildren, Observe]


# ---------------------------------------------------------------------------
# 4. The decision: choose() output.
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class SlotDecision:
    """What one slot shows and why.

    ``variant`` is ``None`` when the origin's default content stays (no
    eligible variant, the control arm, the holdout, a bot).  ``edit`` is what
    the rewriter applies (``None`` = leave the slot alone).  ``experiment``
    and ``arm`` (a variant id or ``"control"``) are set when the visitor was
    assigned in an experiment; ``cap_key``/``cap_per``/``cap_views`` when the
    variant shown is frequency-capped, so the respond stage can count the
    view once the rewriter confirms the slot was on the page.
    """

    slot: str
    variant: str | None
    reason: str
    edit: Edit | None = None
    experiment: str | None = None
    arm: str | None = None
    cap_key: str | None = None
    cap_per: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """The choice for every slot the catalog knows, for one visitor."""

    slots: Mapping[str, SlotDecision] = _empty_field()
    holdout: bool = False

    @property
    def edits(self) -> Mapping[str, Edit]:
        return {name: d.edit for name, d in self.slots.items() if d.edit is not None}


NO_DECISION = Decision()
