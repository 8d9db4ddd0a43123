"""Squall benchmarks: ``python -m bench run`` (WORKLOADS.md W1-W4) and ``python -m bench
scaling``. See bench/README.md."""
