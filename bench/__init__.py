"""Benchmarks: each script prints ratios against a baseline run in the same invocation."""
