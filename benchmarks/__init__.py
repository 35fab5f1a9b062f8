"""Benchmarks: ours against the task queues users would pick instead (see docs/benchmarks.md)."""
