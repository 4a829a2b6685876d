"""A variant's ``when`` in plain words, for people who do not read TOML.

``describe_when(conditions)`` turns the compiled conditions of a variant
into one phrase: ``device = "mobile"`` and ``country = ["GB", "IE"]`` read
"mobile visitors in GB or IE"; no ``when`` reads "everyone".  It works from
``Condition.text`` (``"country=GB|IE"``, ``"device!=bot"``, ``"hour=22..5"``),
the same summary ``edgeproxy check`` prints, so the words never disagree
with what the loader compiled.

Who comes first (device, visitor, customer, …: "returning mobile
customers"), then where and when ("in GB or IE", "in the evening"), in the
order the keys appear in the file.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..catalog.model import Condition

# Keys that describe *who* the visitor is: they qualify "visitors".
_WHO = ("visitor", "device", "customer", "logged_in", "cart")
_DAYS = {"mon": "Monday", "tue": "Tuesday", "wed": "Wednesday", "thu": "Thursday", "fri": "Friday", "sat": "Saturday", "sun": "Sunday"}
_CONTINENTS = {"AF": "Africa", "AN": "Antarctica", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania", "SA": "South America"}


def _parse(text: str) -> tuple[str, bool, list[str], tuple[int, int] | None]:
    """``"country!=GB|IE"`` -> ``("country", True, ["GB", "IE"], None)``;
    ``"hour=22..5"`` -> ``("hour", False, [], (22, 5))``."""
    eq = text.index("=")
    negated = text[eq - 1] == "!"
    key, values = text[: eq - 1 if negated else eq], text[eq + 1 :]
    if ".." in values and key == "hour":
        lo, _, hi = values.partition("..")
        return key, negated, [], (int(lo), int(hi))
    return key, negated, values.split("|"), None


def either(values: Sequence[str], word: str = "or") -> str:
    """``["GB", "IE", "FR"]`` -> ``"GB, IE or FR"``."""
    values = list(values)
    if len(values) <= 1:
        return "".join(values)
    return f"{', '.join(values[:-1])} {word} {values[-1]}"


def _hour(h: int) -> str:
    return f"{h:02d}:00"


# What a condition on each key (other than who, hour and consent) reads as:
# the words before its values ("in GB or IE", "on /c/*").
_PREFIXES = {
    "country": "in", "city": "in", "region": "in", "continent": "in",
    "source": "arriving from", "utm_campaign": "from the campaign",
    "utm_source": "from utm_source", "utm_medium": "from utm_medium",
    "affinity": "interested in", "os": "using", "browser": "using",
    "weekday": "on", "daypart": "in the", "path": "on",
}
# Keys whose values read better by name ("EU" -> "Europe", "mon" -> "Monday").
_NAMES = {"continent": _CONTINENTS, "weekday": _DAYS}


def _phrase(key: str, negated: bool, values: list[str], bounds: tuple[int, int] | None) -> str:
    """One condition that is not about who: "in GB or IE", "on /c/*"."""
    no = "not " if negated else ""
    if key == "hour":
        if bounds is not None:
            lo, hi = bounds
            return f"{no}between {_hour(lo)} and {hi:02d}:59"
        return f"{no}in the hour of {either([_hour(int(v)) for v in values])}"
    if key == "consent":
        return "who gave consent" if (values == ["true"]) != negated else "without consent"
    prefix = _PREFIXES.get(key)
    if prefix is None:  # pragma: no cover - every key is above
        return f"{key} {'is not' if negated else 'is'} {either(values)}"
    names = _NAMES.get(key, {})
    return f"{no}{prefix} {either([names.get(v, v) for v in values])}"


def _who(key: str, negated: bool, values: list[str]) -> tuple[str, str]:
    """(an adjective before "visitors", a phrase after it)."""
    if key == "visitor" or key == "device":
        if negated:
            return "", f"other than {either(values, 'and')} ones"
        return either(values), ""
    if key in ("customer", "logged_in"):
        yes = (values == ["true"]) != negated
        if key == "customer":
            return ("", "who are customers") if yes else ("", "who are not customers")
        return ("", "who are logged in") if yes else ("", "who are not logged in")
    if key == "cart":
        carts = [{"filled": "a filled", "empty": "an empty"}.get(v, v) for v in values]
        return "", f"{'without' if negated else 'with'} {either(carts)} cart"
    return "", ""  # pragma: no cover


def describe_when(conditions: Sequence[Condition]) -> str:
    """The variant's audience in plain words ("everyone" without ``when``)."""
    if not conditions:
        return "everyone"
    adjectives: list[str] = []
    after_who: list[str] = []
    rest: list[str] = []
    for cond in conditions:
        key, negated, values, bounds = _parse(cond.text)
        if key in _WHO:
            adjective, phrase = _who(key, negated, values)
            if adjective:
                adjectives.append(adjective)
            if phrase:
                after_who.append(phrase)
        else:
            rest.append(_phrase(key, negated, values, bounds))
    # "returning" before "mobile": the visitor key reads best first.
    subject = " ".join([*adjectives, "visitors"])
    return " ".join([subject, *after_who, *rest]) if (after_who or rest) else subject
