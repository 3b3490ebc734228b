"""Benchmarks: measurements, not tests. ``python -m bench`` (make bench) runs them all."""
