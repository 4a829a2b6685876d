"""Load and CPU benchmarks (run as modules, e.g. ``python -m load_tests.bench_rewrite``)."""
