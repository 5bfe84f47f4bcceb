"""Test configuration: float64 by default, so accuracy tests measure the algorithms.

float32 paths are tested explicitly (arrays created with dtype=float32) with their
own tolerances.
"""

import jax

jax.config.update("jax_enable_x64", True)
