"""The built-in demo: a storefront origin, the proxy in front of it and
example slots (``edgeproxy demo``).

- ``storefront.py``: the demo shop (``build_storefront()``), also runnable
  alone with ``python -m edgeproxy.demo.storefront``;
- ``run.py``: ``run_demo(args)``, which starts both and prints what to try;
- ``slots/``: the example variants, a copy of the repository's ``slots/``
  so that ``pip install`` users get them too (a test keeps them identical).
"""

from .run import run_demo, what_to_try

__all__ = ["run_demo", "what_to_try"]
