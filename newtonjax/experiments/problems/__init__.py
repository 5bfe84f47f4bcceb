"""Test and benchmark problems for newtonjax (NIST StRD nonlinear regression, ...)."""
