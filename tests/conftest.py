"""Test configuration: float64 by default, so accuracy tests measure the algorithms.

float32 paths are tested explicitly (arrays created with dtype=float32) with their
own tolerances.
"""

import jax

jax.config.update("jax_enable_x64", True)

# The experiment runner keeps XLA compilations in the user's cache folder by default;
# test runs keep theirs in a temporary folder of their own instead.
import os  # noqa: E402
import tempfile  # noqa: E402

os.environ.setdefault("NEWTONJAX_CACHE_DIR", tempfile.mkdtemp(prefix="newtonjax-test-cache-"))
