"""The distribution: one top-level package, its data, and its command."""

import configparser
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out),
         str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = out.glob("newtonjax-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_ships_only_newtonjax(wheel):
    top = {name.split("/")[0] for name in wheel.namelist()}
    dist_info = [t for t in top if t.endswith(".dist-info")]
    assert len(dist_info) == 1 and dist_info[0].startswith("newtonjax-")
    assert top == {"newtonjax", dist_info[0]}, top


def test_runner_data_is_package_data(wheel):
    names = set(wheel.namelist())
    data = ROOT / "newtonjax" / "experiments" / "data" / "nist_strd"
    for path in sorted(data.glob("*.dat")):
        assert f"newtonjax/experiments/data/nist_strd/{path.name}" in names
    assert not any(n.startswith("newtonjax/experiments/benchmarks") for n in names)


def test_command_points_into_the_package(wheel):
    (entry,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    points = configparser.ConfigParser()
    points.read_string(wheel.read(entry).decode())
    assert points["console_scripts"]["newtonjax"] == "newtonjax.__main__:main"
