"""The errors edgeproxy raises, and what the proxy does about each.

The tree (every class is importable from here)::

    EdgeProxyError
    ├── SettingsError           bad flag / TOML key / env value. Fallback: none,
    │                           the process refuses to start and names key + value.
    ├── SlotFileError           a file in slots/ is invalid (``file:line: reason``).
    │                           Fallback: the file's previous good version keeps
    │                           serving; a new bad file is simply not live.
    ├── PersonalisationError    classify / choose / rewrite failed for a request.
    │   ├── BudgetExceeded      the personalisation time budget ran out.
    │   └── RewriteError        the rewriter could not apply an edit.
    │                           Fallback (both): the origin's bytes for the
    │                           affected slots, never a 5xx.
    └── UpstreamError           the origin could not be reached or answered badly.
        ├── UpstreamConnectError   connect failed / refused      → 502 Bad Gateway
        ├── UpstreamTimeout        no first byte / idle in body  → 504 Gateway Timeout
        └── UpstreamBodyError      the origin died mid-body      → the client's
                                   response is aborted (no fake clean end)

Lower-level exceptions (aiohttp, zlib, brotli, OSError) are mapped to the most
specific of these with ``raise … from exc`` at the stage that sees them.
"""

from __future__ import annotations


class EdgeProxyError(Exception):
    """Base of every error edgeproxy raises on purpose."""


class SettingsError(EdgeProxyError, ValueError):
    """A setting has a bad value; the message names the key and the value."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        self.key, self.value, self.reason = key, value, reason
        super().__init__(f"setting {key}={value!r}: {reason}")


class SlotFileError(EdgeProxyError):
    """A slot file is invalid.  ``str(err)`` is ``file:line: reason``."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path}:{line}: {reason}")


class PersonalisationError(EdgeProxyError):
    """Personalising one response failed; the origin's bytes are served."""


class BudgetExceeded(PersonalisationError):
    """The personalisation time budget for this request ran out."""


class RewriteError(PersonalisationError):
    """An edit could not be applied to a slot."""


class UpstreamError(EdgeProxyError):
    """The origin failed; ``status`` is what the client receives."""

    status = 502


class UpstreamConnectError(UpstreamError):
    status = 502


class UpstreamTimeout(UpstreamError):
    status = 504


class UpstreamBodyError(UpstreamError):
    """The origin's body broke off; the client response is aborted."""

    status = 502
