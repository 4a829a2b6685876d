"""Merge tags in content variants: ``{{ key | default: "text" }}``.

Compiled once at load into literal and placeholder parts; rendering is a
join.  Every inserted value (and every default) is HTML-escaped with
``html.escape(quote=True)``, so it is safe in text and in quoted attribute
values alike.  Values: strings as they are, numbers in decimal, flags as
``true``/``false``, affinity categories joined with ``", "``.  A key the
visitor's context does not have (or an empty value) renders the default,
or nothing without one.
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Mapping

from ..model import CONTEXT_KEYS

# Anything between {{ and }} is a tag; its inside is checked separately so a
# malformed tag gets a precise message instead of passing through as text.
_TAG = re.compile(r"\{\{(.*?)\}\}", re.S)
_INSIDE = re.compile(
    r"""^\s*(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*
        (?:\|\s*(?P<filter>[A-Za-z_]+)\s*(?::\s*(?P<arg>"(?:[^"\\]|\\.)*"|'[^']*'))?\s*)?$""",
    re.X | re.S,
)
FILTERS = ("default",)


class TemplateError(ValueError):
    """A merge tag is malformed; ``offset`` is its position in the text."""

    def __init__(self, offset: int, reason: str) -> None:
        self.offset, self.reason = offset, reason
        super().__init__(reason)


@dataclasses.dataclass(frozen=True, slots=True)
class Template:
    """A fragment with its merge tags: ``parts`` alternates literal text and
    ``(key, escaped default)`` pairs."""

    parts: tuple[str | tuple[str, str], ...]
    source: str

    @property
    def is_static(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p[0] for p in self.parts if not isinstance(p, str))

    def render(self, context: Mapping[str, object]) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            key, default = part
            value = context.get(key)
            text = _text(value)
            out.append(html.escape(text, quote=True) if text else default)
        return "".join(out)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _unquote(arg: str) -> str:
    if arg.startswith('"'):
        return re.sub(r"\\(.)", r"\1", arg[1:-1])
    return arg[1:-1]


def compile_template(source: str) -> Template:
    """Compile ``source``; raises ``TemplateError`` at the first bad tag."""
    parts: list[str | tuple[str, str]] = []
    pos = 0
    for m in _TAG.finditer(source):
        inside = _INSIDE.match(m.group(1))
        if inside is None:
            raise TemplateError(
                m.start(), f"malformed merge tag {m.group(0)!r}: expected {{{{ key }}}} or {{{{ key | default: \"text\" }}}}"
            )
        key = inside["key"]
        if key not in CONTEXT_KEYS:
            raise TemplateError(m.start(), f"unknown merge tag key {key!r}{_suggest(key, CONTEXT_KEYS)}")
        default = ""
        if inside["filter"] is not None:
            if inside["filter"] not in FILTERS:
                raise TemplateError(m.start(), f"unknown merge tag filter {inside['filter']!r}: only default is supported")
            if inside["arg"] is None:
                raise TemplateError(m.start(), 'the default filter needs a quoted text: default: "text"')
            default = html.escape(_unquote(inside["arg"]), quote=True)
        if m.start() > pos:
            parts.append(source[pos : m.start()])
        parts.append((key, default))
        pos = m.end()
    rest = source[pos:]
    unclosed = rest.find("{{")
    if unclosed >= 0:
        raise TemplateError(pos + unclosed, "merge tag opened with {{ is never closed with }}")
    if rest:
        parts.append(rest)
    return Template(parts=tuple(parts), source=source)


def _suggest(word: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (known: {', '.join(sorted(choices))})"
