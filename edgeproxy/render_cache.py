"""Rendered pages, per (cached origin body, decision): the cheapest hit.

When the origin's page came from the upstream cache (``cache.py``), every
visitor who gets the same edits gets the same bytes: the rewrite and the
re-encoding need to happen once, not per request.  ``RenderCache`` keeps
those outputs::

    key = render_key(edits, coding, content_type)
    hit = rc.get(url, body, key)            # (bytes, outcomes) or None
    ...rewrite...
    rc.put(url, body, key, out, outcomes)

What holds:

* **Only shared inputs.**  The key is the origin body (its length and hash:
  a new version of the page is a new key), the content type, the response
  coding, and the edits themselves (the fragments with merge tags already
  rendered, sort keys with the visitor's affinity order).  Nothing else of the
  visitor reaches the bytes, so equal keys give equal bytes.  Cookies and
  per-visitor headers are added by the respond stage on every request.
* **Bounded.**  At most ``max_bytes`` of output (LRU), and at most
  ``keys_per_url`` distinct decision keys per URL: a page whose edits carry
  a visitor's city in a merge tag would otherwise fill the cache with one
  entry per city.  Past that bound the least recently used key of that URL
  is dropped and the overflow counted (``stats``), so an SRE can see a URL
  whose personalisation is too fine-grained to cache.
* Outputs of a rewrite that hit the time budget (``deadline``) or failed are
  not stored: they are not what the visitor should keep getting.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from cachetools import LRUCache

from .model import Edit
from .settings import DEFAULT_RENDER_CACHE_BYTES

_UNCACHEABLE_OUTCOMES = frozenset({"deadline", "failed"})


def render_key(edits: Mapping[str, Edit], coding: str, content_type: str | None) -> tuple:
    """The decision part of a render key (hashable; edits are frozen)."""
    return (coding, content_type or "", tuple(sorted(edits.items(), key=lambda kv: kv[0])))


class _Outputs(LRUCache):
    """The LRU of outputs; an eviction also leaves the per-URL index."""

    def __init__(self, maxsize: int, per_url: dict[str, OrderedDict]) -> None:
        super().__init__(maxsize=maxsize, getsizeof=lambda v: len(v[0]) + 256)
        self._per_url = per_url

    def popitem(self):
        full, value = super().popitem()
        keys = self._per_url.get(full[0])
        if keys is not None:
            keys.pop(full, None)
            if not keys:
                del self._per_url[full[0]]
        return full, value


class RenderCache:
    """A byte-bounded LRU of rendered outputs, with a per-URL key bound."""

    def __init__(self, max_bytes: int = DEFAULT_RENDER_CACHE_BYTES, *, keys_per_url: int = 64) -> None:
        self.keys_per_url = max(1, keys_per_url)
        self._per_url: dict[str, OrderedDict] = {}
        self._store = _Outputs(max(1, max_bytes), self._per_url)
        self.hits = 0
        self.misses = 0
        self.overflows = 0

    def get(self, url: str, body: bytes, key: tuple) -> tuple[bytes, dict[str, str]] | None:
        # The store is keyed by the decision key's hash (hashing the edits
        # walks their dataclasses, and an LRU lookup hashes its key several
        # times); the key itself is kept with the output and compared once.
        full = (url, len(body), hash(body), hash(key))
        found = self._store.get(full)
        if found is None or found[2] != key:
            self.misses += 1
            return None
        self.hits += 1
        keys = self._per_url.get(url)
        if keys is not None and full in keys:
            keys.move_to_end(full)
        return found[0], found[1]

    def put(self, url: str, body: bytes, key: tuple, out: bytes, outcomes: Mapping[str, str]) -> None:
        if any(o in _UNCACHEABLE_OUTCOMES for o in outcomes.values()):
            return
        if len(out) + 256 > self._store.maxsize:
            return
        full = (url, len(body), hash(body), hash(key))
        keys = self._per_url.setdefault(url, OrderedDict())
        if full not in keys:
            while len(keys) >= self.keys_per_url:
                old, _ = keys.popitem(last=False)
                self._store.pop(old, None)
                self.overflows += 1
        keys[full] = None
        keys.move_to_end(full)
        self._store[full] = (out, dict(outcomes), key)
        if full not in self._store:  # evicted at once (it was the LRU)
            keys.pop(full, None)

    @property
    def stats(self) -> dict[str, Any]:
        widest = max((len(k) for k in self._per_url.values()), default=0)
        return {
            "entries": len(self._store),
            "bytes": int(self._store.currsize),
            "hits": self.hits,
            "misses": self.misses,
            "key_overflows": self.overflows,
            "max_keys_per_url": widest,
        }
