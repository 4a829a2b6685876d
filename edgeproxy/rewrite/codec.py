"""Incremental body codecs: decode the origin's ``Content-Encoding``, encode
for the client's ``Accept-Encoding``.

* ``decoder_for(content_encoding)`` -> a ``Decoder`` (``decompress(chunk)``,
  ``flush()``), or ``None`` when the body must pass through untouched: an
  unknown coding, or several stacked codings (``gzip, br``).  ``identity`` and
  an absent header give a pass-through decoder.  Decoded output beyond
  ``max_bytes`` raises ``DecodedTooLarge`` (a decompression bomb guard); a
  corrupt or truncated body raises ``CorruptBody``.  Both are
  ``CodecError``, a ``RewriteError``: the caller falls back to passing the
  origin's bytes through.
* ``encoder_for(name)`` -> an ``Encoder`` (``compress(chunk)``, ``flush()``)
  that flushes after every chunk, so the client can start parsing the page
  while the origin is still sending it.
* ``negotiate(accept_encoding)`` picks the client's preferred coding (RFC 9110
  §12.5.3).
* ``ACCEPT_ENCODING_UPSTREAM``: what the proxy may ask the origin for, i.e.
  exactly what it can decode (CONTRACT §4).

Error tree (below ``errors.RewriteError``)::

    CodecError
    ├── CorruptBody       the encoded bytes are invalid or end early
    └── DecodedTooLarge   decoding would exceed max_bytes
"""

from __future__ import annotations

import functools

import zlib
from typing import Protocol

import brotli

from ..errors import RewriteError

try:  # zstd is optional: without it the proxy neither asks for nor offers it
    import zstandard
except ImportError:  # pragma: no cover - depends on the environment
    zstandard = None

# A decompression bomb guard: decoded bytes per body.
DEFAULT_MAX_DECODED_BYTES = 64 * 1024 * 1024
# Compression levels tuned for per-request CPU, not ratio: every personalised
# page is compressed anew.  Measured on a 120 KB product page (load_tests):
# gzip 1 ~1.0 ms / 36 KB (nginx's default gzip_comp_level is 1; level 6 costs
# ~3.1 ms for 30 KB), brotli 3 ~0.9 ms / 32 KB (quality 5: ~2.2 ms / 28 KB),
# zstd 3 ~0.45 ms / 32 KB.
DEFAULT_GZIP_LEVEL = 1
DEFAULT_BROTLI_QUALITY = 3
DEFAULT_ZSTD_LEVEL = 3

HAVE_ZSTD = zstandard is not None
# Server preference among codings the client rates equally: the cheapest to
# produce for the same size first.
PREFERENCE = ("zstd", "br", "gzip", "deflate") if HAVE_ZSTD else ("br", "gzip", "deflate")
AVAILABLE = frozenset(PREFERENCE)
ACCEPT_ENCODING_UPSTREAM = ", ".join(c for c in ("gzip", "deflate", "br", "zstd") if c in AVAILABLE)
_ALIASES = {"x-gzip": "gzip"}  # RFC 9110 §8.4.1.3


class CodecError(RewriteError):
    """The body could not be decoded; pass the origin's bytes through."""


class CorruptBody(CodecError):
    """The encoded body is invalid or truncated."""


class DecodedTooLarge(CodecError):
    """Decoding the body would exceed the decoded-size guard."""


class Decoder(Protocol):
    coding: str

    def decompress(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class Encoder(Protocol):
    coding: str

    def compress(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


# -- decoders ------------------------------------------------------------------
class _Guarded:
    coding = "identity"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.total = 0

    def _count(self, out: bytes) -> bytes:
        self.total += len(out)
        if self.total > self.max_bytes:
            raise DecodedTooLarge(f"{self.coding} body decodes to more than {self.max_bytes} bytes")
        return out


class IdentityDecoder(_Guarded):
    def decompress(self, chunk: bytes) -> bytes:
        return self._count(bytes(chunk))

    def flush(self) -> bytes:
        return b""


class ZlibDecoder(_Guarded):
    """gzip (possibly several members) or deflate.

    ``deflate`` should be zlib-wrapped (RFC 9110 §8.4.1.2) but some servers
    send raw deflate; like browsers, a body whose first two bytes are not a
    zlib header is read as raw deflate.
    """

    def __init__(self, coding: str, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self.coding = coding
        self._d: zlib._Decompress | None = zlib.decompressobj(16 + zlib.MAX_WBITS) if coding == "gzip" else None
        self._head = b""
        self._seen = False

    def decompress(self, chunk: bytes) -> bytes:
        if self._d is None:
            self._head += chunk
            if len(self._head) < 2:
                return b""
            cmf, flg = self._head[0], self._head[1]
            wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
            self._d = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            chunk, self._head = self._head, b""
        out = []
        try:
            while chunk:
                self._seen = True
                out.append(self._count(self._d.decompress(chunk)))
                chunk = b""
                if self._d.eof and self._d.unused_data:
                    rest = self._d.unused_data
                    if self.coding != "gzip" or not rest.lstrip(b"\x00"):
                        break  # trailing garbage / padding after the stream: ignored, as browsers do
                    self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    chunk = rest
        except zlib.error as exc:
            raise CorruptBody(f"corrupt {self.coding} body: {exc}") from exc
        return b"".join(out)

    def flush(self) -> bytes:
        if self._d is None:
            if self._head:
                raise CorruptBody(f"truncated {self.coding} body")
            return b""
        try:
            out = self._count(self._d.flush())
        except zlib.error as exc:
            raise CorruptBody(f"corrupt {self.coding} body: {exc}") from exc
        if self._seen and not self._d.eof:
            raise CorruptBody(f"truncated {self.coding} body")
        return out


class BrotliDecoder(_Guarded):
    coding = "br"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self._d = brotli.Decompressor()
        self._seen = False

    def decompress(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        self._seen = True
        try:
            return self._count(self._d.process(chunk))
        except brotli.error as exc:
            raise CorruptBody(f"corrupt br body: {exc}") from exc

    def flush(self) -> bytes:
        if self._seen and not self._d.is_finished():
            raise CorruptBody("truncated br body")
        return b""


class ZstdDecoder(_Guarded):
    coding = "zstd"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self._z = zstandard.ZstdDecompressor()
        self._d = self._z.decompressobj()
        self._seen = False

    def decompress(self, chunk: bytes) -> bytes:
        out = []
        try:
            while chunk:
                self._seen = True
                out.append(self._count(self._d.decompress(chunk)))
                chunk = b""
                if self._d.eof and self._d.unused_data:  # concatenated frames
                    chunk = self._d.unused_data
                    self._d = self._z.decompressobj()
        except zstandard.ZstdError as exc:
            raise CorruptBody(f"corrupt zstd body: {exc}") from exc
        return b"".join(out)

    def flush(self) -> bytes:
        if self._seen and not self._d.eof:
            raise CorruptBody("truncated zstd body")
        return b""


def decoder_for(content_encoding: str | None, *, max_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> Decoder | None:
    """A fresh decoder for one body, or ``None``: pass the body through."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    codings = [_ALIASES.get(c, c) for c in codings if c != "identity"]
    if not codings:
        return IdentityDecoder(max_bytes)
    if len(codings) > 1:
        return None
    coding = codings[0]
    if coding in ("gzip", "deflate"):
        return ZlibDecoder(coding, max_bytes)
    if coding == "br":
        return BrotliDecoder(max_bytes)
    if coding == "zstd" and HAVE_ZSTD:
        return ZstdDecoder(max_bytes)
    return None


# -- encoders ------------------------------------------------------------------
class IdentityEncoder:
    coding = "identity"

    def compress(self, chunk: bytes) -> bytes:
        return bytes(chunk)

    def flush(self) -> bytes:
        return b""


class ZlibEncoder:
    def __init__(self, coding: str, level: int = DEFAULT_GZIP_LEVEL) -> None:
        self.coding = coding
        self._c = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS)

    def compress(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        return self._c.compress(chunk) + self._c.flush(zlib.Z_SYNC_FLUSH)

    def flush(self) -> bytes:
        return self._c.flush(zlib.Z_FINISH)


class BrotliEncoder:
    coding = "br"

    def __init__(self, quality: int = DEFAULT_BROTLI_QUALITY) -> None:
        self._c = brotli.Compressor(quality=quality)

    def compress(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        return self._c.process(chunk) + self._c.flush()

    def flush(self) -> bytes:
        return self._c.finish()


class ZstdEncoder:
    coding = "zstd"

    def __init__(self, level: int = DEFAULT_ZSTD_LEVEL) -> None:
        self._c = zstandard.ZstdCompressor(level=level).compressobj()

    def compress(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        return self._c.compress(chunk) + self._c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def flush(self) -> bytes:
        return self._c.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


def encoder_for(name: str) -> Encoder | None:
    """A fresh encoder for ``name`` (as returned by ``negotiate``), ``None`` if
    the coding is not available."""
    name = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if name == "identity":
        return IdentityEncoder()
    if name in ("gzip", "deflate"):
        return ZlibEncoder(name)
    if name == "br":
        return BrotliEncoder()
    if name == "zstd" and HAVE_ZSTD:
        return ZstdEncoder()
    return None


# -- negotiation ---------------------------------------------------------------
def parse_accept(value: str) -> dict[str, float]:
    """``coding -> qvalue`` from an Accept-Encoding value (first mention wins).
    Entries with a malformed qvalue are ignored."""
    out: dict[str, float] = {}
    for item in value.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        for param in params.split(";"):
            k, _, v = param.partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v.strip())
                except ValueError:
                    q = -1.0
                if not 0.0 <= q <= 1.0:  # RFC 9110 §12.4.2: qvalue is 0 to 1
                    q = -1.0
        if q < 0:
            continue
        out.setdefault(_ALIASES.get(coding, coding), q)
    return out


def negotiate(accept_encoding: str | None, available: frozenset[str] | set[str] = AVAILABLE) -> str:
    """The content coding to send (RFC 9110 §12.5.3); see ``_negotiate``.
    Memoised for the codings this process has (browsers send a handful of
    distinct values)."""
    if available is AVAILABLE:
        return _negotiate_here(accept_encoding)
    return _negotiate(accept_encoding, available)


@functools.lru_cache(maxsize=512)
def _negotiate_here(accept_encoding: str | None) -> str:
    return _negotiate(accept_encoding, AVAILABLE)


def _negotiate(accept_encoding: str | None, available: frozenset[str] | set[str]) -> str:
    """The content coding to send (RFC 9110 §12.5.3).

    The highest qvalue wins; ``*`` rates every coding not listed; among equal
    qvalues the server prefers zstd > br > gzip > deflate > identity.  No
    header, or nothing acceptable (even ``identity;q=0``), gives
    ``"identity"``: an unencoded body is what every client can read.
    """
    if accept_encoding is None:
        return "identity"
    ranks = parse_accept(accept_encoding)
    star = ranks.get("*")
    best, best_q = "identity", -1.0
    for coding in (*(c for c in PREFERENCE if c in available), "identity"):
        q = ranks.get(coding)
        if q is None:
            # identity is acceptable unless excluded explicitly or by "*;q=0",
            # but an unlisted identity loses to any coding the client listed.
            q = star if star is not None else (0.001 if coding == "identity" else 0.0)
        if q > 0 and q > best_q:
            best, best_q = coding, q
    return best
