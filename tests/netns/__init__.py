"""Namespace lab and interop tests (need root; see tests/lab)."""
