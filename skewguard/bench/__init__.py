"""Benchmarks: skewguard against its peers on identical data, timed in one run."""
