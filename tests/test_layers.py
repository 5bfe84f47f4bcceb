"""Architecture checks: each module imports only from its own layer or below.

Layers (DESIGN.md): tree → curvature → linalg → spectrum → transforms → solve loops
→ uncertainty → public surface → experiments (the optional runner). A violation is an
import of a higher layer's module. Nothing in the library imports the runner: only the CLI entry
point ``newtonjax.__main__`` loads it, and only inside ``main``.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

LAYERS = {
    "newtonjax._checks": 0,
    "newtonjax._tree": 0,
    "newtonjax._status": 0,
    "newtonjax._version": 0,
    "newtonjax._objectives": 1,
    "newtonjax._curvature": 1,
    "newtonjax._critical": 1,
    "newtonjax.linalg": 2,
    "newtonjax._spectrum": 3,
    "newtonjax._transforms": 4,
    "newtonjax._solve": 5,
    "newtonjax._uncertainty": 6,  # curvature at the solution (above the solve loops)
    "newtonjax": 7,  # the public surface re-exports everything
    "newtonjax.experiments": 8,  # the optional experiment runner, top of the picture
    "newtonjax.__main__": 9,  # `python -m newtonjax`: loads the runner lazily
}


def layer_of(module: str) -> int:
    best = None
    for prefix, level in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, level)
    if best is None:
        raise KeyError(module)
    return best[1]


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(text: str):
    """Modules named by the absolute imports in ``text`` (``from a import b`` → ``a.b``)."""
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "newtonjax":
                for alias in node.names:
                    yield f"newtonjax.{alias.name}"
            else:
                yield node.module


SOURCES = sorted((ROOT / "newtonjax").rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    own = module_name(path)
    own_level = layer_of(own)
    for imported in imported_modules(path.read_text()):
        if imported.startswith("experiments"):
            pytest.fail(f"{own} imports the repository's unshipped {imported}")
        if not imported.startswith("newtonjax"):
            continue
        if imported == "newtonjax" and layer_of(own) <= layer_of("newtonjax"):
            pytest.fail(f"{own} imports the public package; import the private module instead")
        level = layer_of(imported)
        assert level <= own_level, f"{own} (layer {own_level}) imports {imported} (layer {level})"


def test_layer_table_is_complete():
    for path in SOURCES:
        layer_of(module_name(path))  # raises KeyError for an unclassified module


def test_detects_a_violation():
    # The checker must flag an upward import and accept a downward one.
    upward = list(imported_modules("from newtonjax._solve import minimize\n"))
    assert layer_of(upward[0]) > layer_of("newtonjax._tree")
    downward = list(imported_modules("from newtonjax import linalg\n"))
    assert downward == ["newtonjax.linalg"] and layer_of(downward[0]) < layer_of("newtonjax._solve")


RUNNER = "newtonjax.experiments"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_library_does_not_import_the_runner(path):
    own = module_name(path)
    if own == RUNNER or own.startswith(RUNNER + ".") or own == "newtonjax.__main__":
        return
    for imported in imported_modules(path.read_text()):
        assert not (imported == RUNNER or imported.startswith(RUNNER + ".")), (
            f"{own} imports the optional runner {imported}"
        )


def test_main_loads_the_runner_only_inside_main():
    tree = ast.parse((ROOT / "newtonjax" / "__main__.py").read_text())
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [getattr(n, "module", None) or n.names[0].name for n in top_level]
    assert not any(name.startswith(RUNNER) for name in names), names


def test_runner_check_flags_an_import():
    (imported,) = imported_modules("from newtonjax.experiments import runner\n")
    assert imported.startswith(RUNNER)
