"""The rewriter tests run once per byte loop this build has (compiled, pure).

A test module opts in with::

    from rewrite_impls import each_scanner  # noqa: F401
    pytestmark = pytest.mark.usefixtures("each_scanner")

Module scope, so pytest runs a module's tests per implementation in turn
(and hypothesis sees no function-scoped fixture).
"""

from __future__ import annotations

import pytest

from edgeproxy.rewrite import native


@pytest.fixture(scope="module", params=native.available())
def each_scanner(request):
    before = native.ACTIVE
    native.use(request.param)
    yield request.param
    native.use(before)
