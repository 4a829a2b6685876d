"""edgeproxy.rewrite.codec: incremental decoders/encoders and Accept-Encoding negotiation."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import brotli
import pytest

from edgeproxy.errors import RewriteError
from edgeproxy.rewrite import codec
from edgeproxy.rewrite.codec import (
    ACCEPT_ENCODING_UPSTREAM,
    CorruptBody,
    DecodedTooLarge,
    decoder_for,
    encoder_for,
    negotiate,
)

zstandard = pytest.importorskip("zstandard", reason="zstd codec tests need the zstandard package")

PAGE = (Path(__file__).parent / "data" / "html" / "etsy-listing-es.html").read_bytes()[:150_000]


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


ENCODED = {
    "gzip": gzip.compress(PAGE),
    "x-gzip": gzip.compress(PAGE),
    "deflate": zlib.compress(PAGE),
    "deflate-raw": raw_deflate(PAGE),
    "br": brotli.compress(PAGE),
    "zstd": zstandard.ZstdCompressor().compress(PAGE),
}


def decode_in_chunks(coding: str, body: bytes, size: int) -> bytes:
    d = decoder_for("deflate" if coding == "deflate-raw" else coding)
    assert d is not None
    out = [d.decompress(body[i : i + size]) for i in range(0, len(body), size)]
    out.append(d.flush())
    return b"".join(out)


# ---------------------------------------------------------------------------
# Decoding real bodies fed in odd chunk sizes
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("coding", sorted(ENCODED))
@pytest.mark.parametrize("size", [7, 1000, 65536])
def test_decoder_restores_the_body_fed_in_odd_chunks(coding, size):
    assert decode_in_chunks(coding, ENCODED[coding], size) == PAGE


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_decoder_restores_a_body_fed_one_byte_at_a_time(coding):
    small = PAGE[:4000]
    body = {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "br": brotli.compress,
        "zstd": zstandard.ZstdCompressor().compress,
    }[coding](small)
    assert decode_in_chunks(coding, body, 1) == small


def test_concatenated_gzip_members_decode_to_the_concatenation():
    body = gzip.compress(b"<p>one</p>") + gzip.compress(b"<p>two</p>")
    assert decode_in_chunks("gzip", body, 5) == b"<p>one</p><p>two</p>"


@pytest.mark.parametrize("header", ["identity", "", None, " Identity "])
def test_identity_or_absent_encoding_gives_a_pass_through_decoder(header):
    d = decoder_for(header)
    assert d.decompress(b"abc") + d.flush() == b"abc"


@pytest.mark.parametrize("header", ["gzip, br", "br,gzip", "compress", "x-unknown", "zstd;q=1"])
def test_stacked_or_unknown_encoding_has_no_decoder(header):
    assert decoder_for(header) is None


@pytest.mark.parametrize(
    "coding, body",
    [
        ("gzip", b"\x1f\x8b\x08\x00garbage-garbage-garbage"),
        ("gzip", b"not gzip at all"),
        ("deflate", b"\xff\xff\xff\xff\xff"),
        ("br", b"\xff\xff\xff\xff garbage"),
        ("zstd", b"\x28\xb5\x2f\xfd garbage"),
    ],
)
def test_corrupt_body_raises_corrupt_body(coding, body):
    d = decoder_for(coding)
    with pytest.raises(CorruptBody, match=f"corrupt {coding} body|truncated {coding} body"):
        d.decompress(body)
        d.flush()


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_truncated_body_raises_on_flush(coding):
    body = ENCODED[coding][: len(ENCODED[coding]) // 2]
    d = decoder_for(coding)
    d.decompress(body)
    with pytest.raises(CorruptBody, match=f"truncated {coding} body"):
        d.flush()


def test_codec_errors_are_rewrite_errors_so_the_caller_passes_through():
    assert issubclass(CorruptBody, RewriteError) and issubclass(DecodedTooLarge, RewriteError)


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd", "identity"])
def test_decoded_size_guard_stops_a_decompression_bomb(coding):
    bomb = b"\0" * 2_000_000
    body = {"gzip": gzip.compress, "br": brotli.compress, "zstd": zstandard.ZstdCompressor().compress}.get(
        coding, bytes
    )(bomb)
    d = decoder_for(coding, max_bytes=1_000_000)
    with pytest.raises(DecodedTooLarge, match="more than 1000000 bytes"):
        for i in range(0, len(body), 4096):
            d.decompress(body[i : i + 4096])


# ---------------------------------------------------------------------------
# Encoding: round trips, and bytes flushed per chunk
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd", "identity"])
def test_encoder_output_decodes_back_to_the_input(coding):
    e = encoder_for(coding)
    chunks = [PAGE[i : i + 9000] for i in range(0, len(PAGE), 9000)]
    body = b"".join(e.compress(c) for c in chunks) + e.flush()
    assert decode_in_chunks(coding, body, 4096) == PAGE


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_encoder_flushes_each_chunk_so_the_client_can_decode_it_early(coding):
    e = encoder_for(coding)
    d = decoder_for(coding)
    first = e.compress(b"<html><head><title>early</title>")
    assert d.decompress(first) == b"<html><head><title>early</title>"


def test_unknown_encoder_is_none():
    assert encoder_for("compress") is None


# ---------------------------------------------------------------------------
# Negotiation (RFC 9110 §12.5.3)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "accept, expected",
    [
        # no header / empty: identity
        (None, "identity"),
        ("", "identity"),
        # server preference at equal q: br > zstd > gzip > deflate
        ("gzip, deflate, br", "br"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip, deflate, br", "br"),
        ("gzip, zstd", "zstd"),
        ("deflate, gzip", "gzip"),
        ("GZIP", "gzip"),
        ("x-gzip", "gzip"),
        # q-values
        ("br;q=0.5, gzip", "gzip"),
        ("br;q=0.5, gzip;q=0.8, deflate;q=0.9", "deflate"),
        ("gzip;q=0, br;q=0", "identity"),
        ("gzip;q=0.001", "gzip"),
        ("br; q=1.0, gzip; Q=0.9", "br"),
        ("gzip;q=2, deflate", "deflate"),  # an out-of-range qvalue drops the entry
        ("gzip;q=abc, deflate", "deflate"),
        # wildcards
        ("*", "zstd"),  # zstd: the cheapest to produce for the same size
        ("*;q=0.1, gzip", "gzip"),
        ("zstd;q=0, *", "br"),
        # identity
        ("identity", "identity"),
        ("identity, gzip", "gzip"),
        ("identity;q=1, gzip;q=0.5", "identity"),
        ("identity;q=0", "identity"),  # nothing acceptable: identity anyway
        ("*;q=0", "identity"),
        ("compress, sdch", "identity"),
    ],
)
def test_negotiate_picks_the_clients_best_coding(accept, expected):
    assert negotiate(accept, frozenset({"br", "zstd", "gzip", "deflate"})) == expected


def test_negotiate_offers_only_available_codings():
    assert negotiate("zstd, br", frozenset({"gzip"})) == "identity"
    assert negotiate("zstd, br, gzip;q=0.1", frozenset({"gzip"})) == "gzip"


def test_upstream_is_asked_only_for_codings_the_proxy_can_decode():
    offered = [c.strip() for c in ACCEPT_ENCODING_UPSTREAM.split(",")]
    assert set(offered) <= {"gzip", "deflate", "br", "zstd"}
    assert all(decoder_for(c) is not None for c in offered)
    assert ("zstd" in offered) == codec.HAVE_ZSTD
