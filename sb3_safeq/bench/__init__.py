"""Benchmarks of sb3-safeq."""
