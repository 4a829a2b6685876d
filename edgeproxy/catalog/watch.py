"""Hot reload of slots/: the live ``Catalog`` and the polling task.

``CatalogStore.current`` is the catalog requests read.  It is replaced by
one attribute assignment with a new immutable ``Catalog``, so a request sees
the old one or the new one, never a mix, and none is dropped.

``reload()`` compares the folder's stat fingerprint (paths, mtimes, sizes,
inodes: no file is read) with the current catalog's, and only when it
differs re-reads the changed files (``load_catalog(previous=…)``).  A broken
edit keeps the file's previous version serving and logs ``file:line:
reason`` at WARNING on ``edgeproxy.catalog`` (once per new problem, not on
every poll).  If the whole folder disappears (e.g. mid-way through a deploy
that swaps it), the current catalog is kept and a warning logged; deleting
single files removes their variants.

``watch(store, interval)`` polls from the event loop, running each check in
a worker thread (``asyncio.to_thread``) so a big folder never blocks it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from pathlib import Path

from ..settings import DEFAULT_MAX_FRAGMENT_BYTES, DEFAULT_RELOAD_INTERVAL
from .load import fingerprint, load_catalog
from .model import Catalog

log = logging.getLogger("edgeproxy.catalog")


class CatalogStore:
    """Holds the live catalog of one slots folder.

    The constructor loads the folder once (synchronously: call it before
    serving).  ``reload()`` is thread-safe; concurrent calls are serialised.
    """

    def __init__(self, directory: Path | str, *, max_fragment_bytes: int = DEFAULT_MAX_FRAGMENT_BYTES) -> None:
        self.directory = Path(directory)
        self.max_fragment_bytes = max_fragment_bytes
        self._lock = threading.Lock()
        self._warned_missing = False
        self._current = load_catalog(self.directory, max_fragment_bytes=max_fragment_bytes)
        if self._current.missing:
            log.warning("%s: slots folder not found; serving the origin's content until it appears", self.directory)
            self._warned_missing = True
        self._log_errors(self._current, None)

    @property
    def current(self) -> Catalog:
        return self._current

    def reload(self, *, now: dt.datetime | None = None) -> bool:
        """Pick up changes on disk; return whether the catalog changed."""
        with self._lock:
            old = self._current
            marks = fingerprint(self.directory)
            if marks is None:
                if not old.missing and not self._warned_missing:
                    log.warning("%s: slots folder disappeared; keeping the variants loaded before", self.directory)
                    self._warned_missing = True
                return False
            self._warned_missing = False
            if marks == old.fingerprint and not old.missing:
                return False
            new = load_catalog(self.directory, max_fragment_bytes=self.max_fragment_bytes, previous=old, now=now)
            if new.missing:  # vanished between the two looks
                return False
            self._current = new
            self._log_errors(new, old)
            log.info(
                "%s: reloaded, %d slots, %d variants, %d errors",
                self.directory, len(new.slots), len(new), len(new.errors),
            )
            return True

    async def reload_async(self) -> bool:
        """``reload()`` in a worker thread, off the event loop."""
        return await asyncio.to_thread(self.reload)

    @staticmethod
    def _log_errors(new: Catalog, old: Catalog | None) -> None:
        seen = {str(e) for e in old.errors} if old is not None else set()
        for err in new.errors:
            if str(err) in seen:
                continue
            rel = err.path
            state = None
            parts = Path(rel).parts
            if len(parts) >= 2:
                state = new.files.get(f"{parts[-2]}/{parts[-1]}")
            if state is not None and state.good is not None:
                log.warning("%s (the previous version keeps serving)", err)
            else:
                log.warning("%s", err)


async def watch(store: CatalogStore, interval: float = DEFAULT_RELOAD_INTERVAL) -> None:
    """Poll ``store`` every ``interval`` seconds until cancelled.

    A failing check is logged and retried on the next tick; it never ends
    the task.  Run it as a background task (e.g. in aiohttp's
    ``cleanup_ctx``) and cancel it on shutdown.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            await store.reload_async()
        except asyncio.CancelledError:
            raise
        except Exception:  # keep watching: the next tick may succeed
            log.exception("%s: reloading slots failed", store.directory)
