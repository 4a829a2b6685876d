"""http.wire: the traffic port's wire-format helpers, as pure functions."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy.http import wire

_BYTES = st.binary(max_size=12) | st.sampled_from([b"", b"gzip, br", "caf\u00e9".encode(), b"\xe9t\xe9", b"a\nb", b"\n"])


@given(st.lists(st.tuples(st.sampled_from([b"Host", b"X-A", b"\xe9", b"a\nb", b""]), _BYTES), max_size=6))
@settings(max_examples=600, deadline=None)
def test_decode_fields_in_one_pass_reads_each_field_as_header_text_does(raw):
    """The batched decode (all-ASCII heads) and the per-field one agree on
    every head, line feeds inside names or values included."""
    expected = [(name.decode("latin-1"), wire.header_text(value)) for name, value in raw]
    assert wire.decode_fields(raw) == expected
    assert wire.decode_fields(tuple(raw)) == expected


def test_response_head_refuses_a_line_break_in_a_field_and_names_it():
    with pytest.raises(ValueError, match="X-Bad"):
        wire.response_head(200, "OK", [("X-Ok", "1"), ("X-Bad", "a\r\nSet-Cookie: x=1")])
    assert wire.response_head(204, "", [("X-Ok", "1")]) == b"HTTP/1.1 204 No Content\r\nX-Ok: 1\r\n\r\n"


async def test_wait_gives_the_result_or_times_out_and_leaves_no_timer():
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(done.set_result, 7)
    assert await wire.wait(loop, done, 5) == 7
    never = loop.create_future()
    with pytest.raises(TimeoutError):
        await wire.wait(loop, never, 0.01)
    late = loop.create_future()
    with pytest.raises(TimeoutError):
        await wire.wait_until(loop, late, loop.time() + 0.01)
    assert late.done()  # failed, so a result arriving later is ignored by its setter's done() check
