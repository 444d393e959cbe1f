"""Benchmark scripts and their shared timing harness (``python -m benchmarks.<script>``)."""
