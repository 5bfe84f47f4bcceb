"""Benchmarks for newtonjax: speed measurements, not tests (layer 6).

Each module is a command-line script (``python -m experiments.benchmarks.NAME``) that
prints a markdown table and, with ``--write``, records it as its own ``## `` section of
``experiments/benchmarks/RESULTS.md``.
"""
