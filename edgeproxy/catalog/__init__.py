"""The merchandisers' slots/ folder, compiled (CONTRACT §2).

``load_catalog(dir, …) -> Catalog`` reads and validates every file (pure
apart from reading the folder); ``watch.CatalogStore`` holds the live
catalog and reloads it when files change.  ``choose.choose`` reads the
catalog per request and never touches the disk.
"""

from .load import fingerprint, load_catalog, parse_variant
from .watch import CatalogStore, watch
from .model import EMPTY_CATALOG, Arm, Cap, Catalog, Condition, Experiment, FileStamp, FileState, Slot, Variant

__all__ = [
    "EMPTY_CATALOG",
    "Arm",
    "Cap",
    "Catalog",
    "CatalogStore",
    "Condition",
    "Experiment",
    "FileStamp",
    "FileState",
    "Slot",
    "Variant",
    "fingerprint",
    "load_catalog",
    "parse_variant",
    "watch",
]
