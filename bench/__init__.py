"""Benchmarks: scripts that print tables (not timed tests). A package so `bench/ohttp.py` does not
shadow the `ohttp` package for mypy."""
