"""Benchmark scripts (run as ``python benchmarks/NAME.py``; never tests) and what they share."""
