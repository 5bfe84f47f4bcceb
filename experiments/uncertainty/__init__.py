"""Research scripts for curvature at the solution (``nj.parameter_covariance``, ``nj.laplace``).

Each module is a command-line script (``python -m experiments.uncertainty.NAME``) that
prints its numbers and writes its figure as a PNG (``--out``, default
``runs/uncertainty/``). They call the public API only.
"""
