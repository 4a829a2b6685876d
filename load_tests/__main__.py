"""``python -m load_tests``: see :mod:`load_tests.runner`."""

from .runner import main

raise SystemExit(main())
