"""The upstream cache's store: a byte-bounded LRU of stored responses.

URL → ``_Entry`` (a stored response) or ``_VaryIndex`` (which request fields
key the URL's responses), and (URL, names, values) → ``_Entry``.  Freshness
arithmetic on an entry is here; the rules that decide it are in
``cache_rules``; lookups, coalescing and serving are in ``cache``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cachetools import Cache, LRUCache

# Bytes charged per stored entry on top of its body and headers.
ENTRY_OVERHEAD = 256


# ---------------------------------------------------------------------------
# Stored records


@dataclasses.dataclass(slots=True, eq=False)
class _Entry:
    """One stored response.  ``headers`` exclude ``Age`` (computed on serve)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float  # clock() when the response head arrived
    initial_age: float  # its Age + the time we waited for it
    lifetime: float
    swr: float
    sie: float
    etag: str | None
    last_modified: str | None
    vary: tuple[str, ...]
    vary_values: tuple[str | None, ...]
    size: int = 0
    # The lower-cased first value of each header (``fetch.Upstream.header``
    # reads it), built once per stored response, not per hit.
    index: dict[str, str] = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = self.index
        for name, value in self.headers:
            index.setdefault(name.lower(), value)

    def age(self, now: float) -> float:
        return self.initial_age + max(0.0, now - self.stored_at)

    def fresh(self, age: float) -> bool:
        return age < self.lifetime

    def within_swr(self, age: float) -> bool:
        return age < self.lifetime + self.swr

    def within_sie(self, age: float) -> bool:
        return age < self.lifetime + self.sie

    @property
    def has_validators(self) -> bool:
        return self.etag is not None or self.last_modified is not None


@dataclasses.dataclass(frozen=True, slots=True)
class _VaryIndex:
    """Stored at the URL when its responses vary: which fields key them."""

    names: tuple[str, ...]
    size: int


def _sizeof(record: _Entry | _VaryIndex) -> int:
    return record.size


class _Store(LRUCache):
    """The byte-bounded LRU map: URL → entry or vary index, (URL, names,
    values) → entry.  Counts responses and evictions for metrics."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize, getsizeof=_sizeof)
        self.responses = 0
        self.evictions = 0

    def __setitem__(self, key: Any, value: Any) -> None:
        if Cache.__contains__(self, key):
            del self[key]
        super().__setitem__(key, value)
        if isinstance(value, _Entry):
            self.responses += 1

    def __delitem__(self, key: Any) -> None:
        value = Cache.__getitem__(self, key)
        super().__delitem__(key)
        if isinstance(value, _Entry):
            self.responses -= 1

    def popitem(self) -> tuple[Any, Any]:
        item = super().popitem()
        self.evictions += 1
        return item


def _entry_size(url: str, entry: _Entry) -> int:
    return (
        len(entry.body)
        + sum(len(n) + len(v) for n, v in entry.headers)
        + len(url)
        + sum(len(v or "") for v in entry.vary_values)
        + ENTRY_OVERHEAD
    )
