"""Benchmarks and the result tables the docs quote."""
