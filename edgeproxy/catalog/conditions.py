"""Compile a variant's ``when`` table into fast per-key tests.

Each key of ``when`` must be one of ``model.CONTEXT_KEYS``; its value is
validated against the key's kind once, at load:

=========================  ===============================================
form                       meaning
=========================  ===============================================
``key = value``            equality
``key = [a, b]``           any of
``key = { not = … }``      negation of a value, a list or a range
``key = { min, max }``     inclusive bounds (numbers: ``hour``); for
                           ``hour`` ``min > max`` wraps past midnight
=========================  ===============================================

Kinds: closed sets (``device``, ``source``…) accept their listed values in
any case; ``country`` takes ISO 3166-1 alpha-2 codes, upper-cased;
``continent`` the two-letter continent codes; text keys (``city``,
``browser``, ``utm_campaign``…) compare case-insensitively; ``customer``,
``logged_in`` and ``consent`` take TOML ``true``/``false``; ``path`` is a
glob where ``*`` matches any run of characters (``/`` included) and ``?``
one character, case-sensitive, as CDN path rules do; ``affinity`` holds
when the category is among the visitor's affinity categories.

A key missing from the visitor's context fails its condition, negated or
not: an unknown value matches nothing (``country = { not = "GB" }`` does
not hold for a visitor whose country is unknown).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Any

from ..model import CONTEXT_KEYS
from .model import Condition

_ISO2 = re.compile(r"^[A-Za-z]{2}$")
# ISO 3166-1 alpha-2, the officially assigned codes, plus XK (Kosovo, as
# MaxMind and most CDNs send it).  A two-letter code outside it never
# matches any visitor, so it is a load-time error.
ISO_COUNTRIES = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
    BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG
    EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR
    HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR
    LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG
    NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE
    SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA
    UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW XK""".split()
)
# Codes people write that are not the ISO code of the country they mean.
_COUNTRY_MISTAKES = {"UK": "GB", "EL": "GR", "EN": "GB"}


class ConditionError(ValueError):
    """A `when` entry is invalid; ``key`` names it (``None``: the table)."""

    def __init__(self, key: str | None, reason: str) -> None:
        self.key, self.reason = key, reason
        super().__init__(reason)


def compile_when(when: Any) -> tuple[Condition, ...]:
    """Validate a `when` table and compile it, keys in file order."""
    if not isinstance(when, dict):
        raise ConditionError(None, f"when must be a table like {{ country = \"GB\" }}, not {_show(when)}")
    conditions = []
    for key, spec in when.items():
        if key not in CONTEXT_KEYS:
            raise ConditionError(key, f"unknown context key {key!r} in when{_suggest(key)}")
        conditions.append(_compile_key(key, CONTEXT_KEYS[key], spec))
    return tuple(conditions)


def _compile_key(key: str, kind: object, spec: Any) -> Condition:
    negate = False
    if isinstance(spec, dict):
        keys = set(spec)
        if keys == {"not"}:
            negate, spec = True, spec["not"]
            if isinstance(spec, dict) and set(spec) == {"not"}:
                raise ConditionError(key, f"{key}: {{ not = {{ not = … }} }} is a double negation; write the value")
        elif keys and keys <= {"min", "max"}:
            pass
        else:
            raise ConditionError(
                key, f"{key}: expected a value, a list, {{ not = … }} or {{ min = …, max = … }}, not a table with {', '.join(sorted(keys)) or 'no keys'}"
            )
    if isinstance(spec, dict):
        test, text = _range(key, kind, spec)
    elif isinstance(spec, list):
        if not spec:
            raise ConditionError(key, f"{key}: an empty list never matches")
        test, text = _any_of(key, kind, spec)
    else:
        test, text = _any_of(key, kind, [spec])
    if negate:
        inner = test
        return Condition(key, lambda v: not inner(v), text.replace("=", "!=", 1))
    return Condition(key, test, text, _fast_set(kind, test))


def _fast_set(kind: object, test) -> frozenset | None:
    """For closed sets and ISO codes, the exact context values that pass:
    the classifier fills those keys with registry values (codes upper-cased),
    so a set lookup decides.  Lower-case codes are included for safety."""
    wanted = getattr(test, "wanted", None)
    if wanted is None:
        return None
    if kind == "code":
        return frozenset(wanted) | frozenset(w.lower() for w in wanted)
    if isinstance(kind, frozenset):
        return frozenset(wanted)
    return None


def _tagged(test, wanted: frozenset):
    test.wanted = wanted
    return test


def _range(key: str, kind: object, spec: dict) -> tuple[Callable[[Any], bool], str]:
    if not (isinstance(kind, str) and kind.startswith("int:")):
        raise ConditionError(key, f"{key}: {{ min, max }} is only for numbers (hour)")
    lo_b, hi_b = (int(x) for x in kind[4:].split("-"))
    lo = _int(key, spec.get("min", lo_b), lo_b, hi_b, "min")
    hi = _int(key, spec.get("max", hi_b), lo_b, hi_b, "max")
    text = f"{key}={lo}..{hi}"
    if lo <= hi:
        return (lambda v: isinstance(v, int) and lo <= v <= hi), text
    # hour = { min = 22, max = 5 }: 22:00 to 05:59, across midnight.
    return (lambda v: isinstance(v, int) and (v >= lo or v <= hi)), text


def _int(key: str, value: Any, lo: int, hi: int, what: str = "value") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConditionError(key, f"{key}: {what} {_show(value)} is not a whole number from {lo} to {hi}")
    if not lo <= value <= hi:
        raise ConditionError(key, f"{key}: {what} {value} is out of range {lo}..{hi}")
    return value


def _any_of(key: str, kind: object, values: list) -> tuple[Callable[[Any], bool], str]:
    if isinstance(kind, frozenset):
        wanted = frozenset(_closed(key, kind, v) for v in values)
        return _tagged(lambda v: v in wanted, wanted), f"{key}={'|'.join(_ordered(values, wanted))}"
    if kind == "code":
        codes = []
        for v in values:
            if not isinstance(v, str) or not _ISO2.match(v):
                raise ConditionError(key, f"{key}: {_show(v)} is not an ISO 3166 two-letter code like \"GB\"")
            if key == "country" and v.upper() not in ISO_COUNTRIES:
                hint = _COUNTRY_MISTAKES.get(v.upper())
                again = f' (did you mean "{hint}"?)' if hint else ""
                raise ConditionError(key, f"{key}: {_show(v)} is not an ISO 3166 country code{again}")
            codes.append(v.upper())
        wanted = frozenset(codes)
        return _tagged(lambda v: isinstance(v, str) and v.upper() in wanted, wanted), f"{key}={'|'.join(codes)}"
    if kind == "text" or kind == "set":
        names = []
        for v in values:
            if not isinstance(v, str) or not v.strip():
                raise ConditionError(key, f"{key}: {_show(v)} is not a non-empty text")
            names.append(v.strip())
        wanted = frozenset(n.casefold() for n in names)
        text = f"{key}={'|'.join(names)}"
        if kind == "text":
            return (lambda v: isinstance(v, str) and v.casefold() in wanted), text
        # affinity: the visitor holds a tuple of categories.
        return (lambda v: isinstance(v, tuple) and any(c.casefold() in wanted for c in v)), text
    if kind == "bool":
        flags = set()
        for v in values:
            if not isinstance(v, bool):
                raise ConditionError(key, f"{key}: {_show(v)} is not true or false (write it without quotes)")
            flags.add(v)
        return (lambda v: v in flags and isinstance(v, bool)), f"{key}={'|'.join(str(f).lower() for f in sorted(flags))}"
    if kind == "glob":
        patterns = []
        for v in values:
            if not isinstance(v, str) or not (v.startswith("/") or v.startswith("*")):
                raise ConditionError(key, f"{key}: {_show(v)} is not a path glob starting with / (e.g. \"/c/*\")")
            patterns.append(v)
        regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
        return (lambda v: isinstance(v, str) and regex.match(v) is not None), f"{key}={'|'.join(patterns)}"
    if isinstance(kind, str) and kind.startswith("int:"):
        lo, hi = (int(x) for x in kind[4:].split("-"))
        nums = frozenset(_int(key, v, lo, hi) for v in values)
        return (lambda v: v in nums and not isinstance(v, bool)), f"{key}={'|'.join(str(n) for n in sorted(nums))}"
    raise ConditionError(key, f"{key}: cannot be targeted")  # pragma: no cover - registry kinds above


def _closed(key: str, kind: frozenset, value: Any) -> str:
    if isinstance(value, str):
        for form in (value, value.lower(), value.upper()):
            if form in kind:
                return form
    raise ConditionError(key, f"{key}: {_show(value)} is not one of {', '.join(sorted(kind))}")


def _ordered(values: list, wanted: frozenset) -> list[str]:
    seen: list[str] = []
    for v in values:
        for form in (v, v.lower(), v.upper()):
            if form in wanted and form not in seen:
                seen.append(form)
                break
    return seen


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _suggest(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(CONTEXT_KEYS), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(CONTEXT_KEYS)})"
