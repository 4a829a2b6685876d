"""Stage 4, rewrite: origin HTML bytes + ``Decision.edits`` -> personalised bytes.

Pure and streaming; no I/O, no aiohttp.  The pieces:

* ``stream.SlotRewriter`` / ``rewrite_document``: find ``data-edge-slot``
  elements and apply each slot's ``Edit``, byte-faithfully (``scanner`` holds
  the byte-level primitives, ``sort`` the child reordering);
* ``codec``: Content-Encoding decoders/encoders and ``negotiate``;
* ``charset``: the page charset, and encoding a fragment into it.
"""

from .charset import encode_fragment, page_charset
from .codec import (
    ACCEPT_ENCODING_UPSTREAM,
    CodecError,
    CorruptBody,
    DecodedTooLarge,
    decoder_for,
    encoder_for,
    negotiate,
)
from . import native
from .sort import SortError, sort_children
from .stream import OUTCOMES, SlotRewriter, rewrite_document

__all__ = [
    "ACCEPT_ENCODING_UPSTREAM",
    "CodecError",
    "CorruptBody",
    "DecodedTooLarge",
    "OUTCOMES",
    "SlotRewriter",
    "SortError",
    "decoder_for",
    "encode_fragment",
    "encoder_for",
    "native",
    "negotiate",
    "page_charset",
    "rewrite_document",
    "sort_children",
]
