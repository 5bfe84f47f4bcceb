"""Experiments for newtonjax: problems, runners and benchmarks (layer 6)."""
