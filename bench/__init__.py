"""Benchmarks: every figure is measured in the same run as its reference (`python -m bench`)."""
