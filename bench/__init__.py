"""Benchmarks: latency and throughput (student backends vs teacher), quality per backend, profiles, stage times."""
