"""Run every docstring example in the package, in float32 as a user would see it."""

import doctest
import importlib
import pathlib

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for p in (ROOT / "newtonjax").rglob("*.py")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    finally:
        jax.config.update("jax_enable_x64", previous)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
