"""Benchmarks: run with `make bench`. They print throughput, ratios and memory; they never assert."""
