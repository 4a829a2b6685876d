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


def _phrase(key: str, negated: bool, values: list[str], bounds: tuple[int, int] | None) -> str:
    """One condition that is not about who: "in GB or IE", "on /c/*"."""
    no = "not " if negated else ""
    if key == "country":
        return f"{no}in {either(values)}"
    if key in ("city", "region"):
        return f"{no}in {either(values)}"
    if key == "continent":
        return f"{no}in {either([_CONTINENTS.get(v, v) for v in values])}"
    if key == "source":
        return f"{no}arriving from {either(values)}"
    if key == "utm_campaign":
        return f"{no}from the campaign {either(values)}"
    if key == "utm_source":
        return f"{no}from utm_source {either(values)}"
    if key == "utm_medium":
        return f"{no}from utm_medium {either(values)}"
    if key == "affinity":
        return f"{no}interested in {either(values)}"
    if key in ("os", "browser"):
        return f"{no}using {either(values)}"
    if key == "hour":
        if bounds is not None:
            lo, hi = bounds
            return f"{no}between {_hour(lo)} and {hi:02d}:59"
        return f"{no}in the hour of {either([_hour(int(v)) for v in values])}"
    if key == "weekday":
        return f"{no}on {either([_DAYS.get(v, v) for v in values])}"
    if key == "daypart":
        return f"{no}in the {either(values)}"
    if key == "path":
        return f"{no}on {either(values)}"
    if key == "consent":
        return "who gave consent" if (values == ["true"]) != negated else "without consent"
    return f"{key} {'is not' if negated else 'is'} {either(values)}"  # pragma: no cover - every key is above


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
