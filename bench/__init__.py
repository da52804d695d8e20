"""Benchmarks: `make bench` runs each one and prints its numbers (never a pass/fail on time)."""
