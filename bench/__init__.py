"""Benchmarks. Each prints figures and writes JSON (and a readable report) to bench/results/."""
