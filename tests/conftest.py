"""Test configuration: float64 by default, so accuracy tests measure the algorithms.

float32 paths are tested explicitly (arrays created with dtype=float32) with their
own tolerances.

Compiling dominates the suite's time (about two thirds of it is XLA:CPU's backend),
while the compiled programs run for milliseconds. The tests therefore compile with
LLVM's optimizations off and XLA:CPU's elemental fusion emitter, which compile
about twice as fast; both keep IEEE semantics (no fast-math), so every comparison
against a reference means the same. Set ``NEWTONJAX_TEST_XLA_DEFAULTS=1`` to run
the suite with XLA's default compiler settings instead, as users and the
benchmarks do.
"""

import os
import tempfile

if os.environ.get("NEWTONJAX_TEST_XLA_DEFAULTS") != "1":
    _FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
    _flags = os.environ.get("XLA_FLAGS", "")
    _names = {flag.split("=")[0] for flag in _flags.split()}
    os.environ["XLA_FLAGS"] = " ".join(
        [_flags] + [flag for flag in _FAST_COMPILE if flag.split("=")[0] not in _names]
    ).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

# The experiment runner keeps XLA compilations in the user's cache folder by default;
# test runs keep theirs in a temporary folder of their own instead.
os.environ.setdefault("NEWTONJAX_CACHE_DIR", tempfile.mkdtemp(prefix="newtonjax-test-cache-"))
