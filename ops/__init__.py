"""Ops daemon: metrics collection, resource monitor, anomaly detection, scheduled benchmarks."""
