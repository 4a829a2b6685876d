"""Load and CPU benchmarks.

``python -m load_tests`` runs edgeproxy against its peers (see README.md);
``python -m load_tests.bench_rewrite`` measures the slot rewriter alone.

Modules: ``runner`` (the command), ``origin`` and ``pages`` (what is served),
``proxies`` and ``nginx`` (the peers), ``loadgen`` and ``wrk`` (the load),
``procs`` (child processes, CPU and memory from /proc), ``budgets``,
``report``, ``progress``, ``profile``.
"""
