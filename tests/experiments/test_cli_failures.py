"""Every CLI failure a user can cause: one line on stderr, exit 2, no traceback, and
nothing written before it is lost."""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import yaml

from newtonjax.experiments import runner
from tests.experiments._helpers import run_cli, write

ROOT = pathlib.Path(__file__).resolve().parents[2]

CONFIG = {
    "name": "failing",
    "x64": True,
    "problem": {"name": "rosenbrock"},
    "optimizers": [{"name": "newton"}, {"name": "adam", "params": {"learning_rate": 0.01}}],
    "run": {"steps": 8, "progress": False},
    "output": {"plots": False},
}

# Makes the runner's optional dependencies unimportable in a child process.
NO_EXTRAS = "import sys\nsys.modules['tqdm'] = None\nsys.modules['matplotlib'] = None\n"


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("newtonjax"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def child(args, tmp_path, *, sitecustomize=None, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if sitecustomize is not None:
        site = tmp_path / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(sitecustomize)
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    return subprocess.run(
        args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, **kwargs
    )


# ------------------------------------------------------------- missing extras


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "newtonjax", "run", "configs/quickstart.yaml"],
        [sys.executable, "-c", "import sys, newtonjax.__main__ as m; sys.exit(m.main())", "run",
         "configs/quickstart.yaml"],
    ],
    ids=["python -m newtonjax", "console entry point"],
)
def test_missing_extra_is_one_line_naming_the_install(command, tmp_path):
    proc = child(command, tmp_path, sitecustomize=NO_EXTRAS)
    assert_one_line_error(proc.returncode, proc.stderr, 'pip install "newtonjax[experiments]"')
    assert "tqdm" in proc.stderr and "matplotlib" in proc.stderr
    assert not (ROOT / "runs").exists() or not any(
        p.stat().st_mtime > time.time() - 60 for p in (ROOT / "runs").iterdir()
    )


def test_library_imports_without_the_extra(tmp_path):
    code = "import newtonjax as nj, sys; assert 'newtonjax.experiments' not in sys.modules"
    proc = child([sys.executable, "-c", code], tmp_path, sitecustomize=NO_EXTRAS)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------ unreadable config


def test_yaml_syntax_error_gives_line_and_column(tmp_path, capsys):
    text = "name: x\nproblem:\n  name: rosenbrock\noptimizers: [newton\nrun: {}\n"
    code, _, err = run_cli(["run", write(tmp_path, text)], capsys)
    assert_one_line_error(code, err, "config.yaml:5:4", "not valid (safe) YAML")


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda d: d / "missing.yaml", "no such config file"),
        (lambda d: d, "is a folder"),
        (lambda d: (d / "bin.yaml").write_bytes(b"name: \xff\xfe\n") and d / "bin.yaml", "UTF-8"),
    ],
    ids=["missing", "folder", "not text"],
)
def test_unreadable_config(tmp_path, capsys, make, needle):
    code, _, err = run_cli(["run", make(tmp_path)], capsys)
    assert_one_line_error(code, err, needle)


# ------------------------------------------------------------- output folder


@pytest.mark.parametrize(
    "where", ["/proc/newtonjax-runs", "file/runs"], ids=["not creatable", "under a file"]
)
def test_output_folder_that_cannot_be_made(tmp_path, capsys, where):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    out = where if where.startswith("/") else tmp_path / where
    code, _, err = run_cli(["run", write(tmp_path, CONFIG), "--output-dir", out], capsys)
    assert_one_line_error(code, err, "output folder", str(out))
    assert blocker.read_text() == "keep me"


def test_output_folder_that_cannot_be_written(tmp_path, capsys, monkeypatch):
    # A read-only folder (root may write anywhere, so the refusal is simulated at mkdir).
    root = tmp_path / "runs"
    (root / "earlier-run").mkdir(parents=True)
    (root / "earlier-run" / "metrics.jsonl").write_text("{}\n")
    real_mkdir = pathlib.Path.mkdir

    def refuse(self, *args, **kwargs):
        if self.parent == root and self.name != "earlier-run":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", refuse)
    code, _, err = run_cli(["run", write(tmp_path, CONFIG), "--output-dir", root], capsys)
    assert_one_line_error(code, err, "Permission denied", str(root))
    assert sorted(p.name for p in root.iterdir()) == ["earlier-run"]
    assert (root / "earlier-run" / "metrics.jsonl").read_text() == "{}\n"


# ----------------------------------------------------------------- full disk


class _FillingFile:
    """A metrics file on a disk that fills up after ``room`` lines."""

    def __init__(self, path, room):
        self._file = open(path, "w")  # noqa: SIM115
        self._room = room

    def write(self, text):
        if self._room == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= 1
        return self._file.write(text)

    def flush(self):
        self._file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def test_full_disk_while_writing_metrics(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "open", lambda path, mode: _FillingFile(path, 5), raising=False)
    out = tmp_path / "runs"
    code, _, err = run_cli(["run", write(tmp_path, CONFIG), "--output-dir", out], capsys)
    assert_one_line_error(code, err, "No space left on device", "metrics.jsonl")
    (run_dir,) = out.iterdir()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 1, 2, 3, 4]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["name"] == "failing"
    assert json.loads((run_dir / "environment.json").read_text())["x64"] is True
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"].startswith("failed: cannot write metrics.jsonl")


# -------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_keeps_what_was_written(tmp_path):
    config = {**CONFIG, "run": {"steps": 10**7, "progress": False}}
    config["optimizers"] = [{"name": "adam", "params": {"learning_rate": 1e-9}}]
    path = write(tmp_path, config)
    out = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "newtonjax", "run", str(path), "--output-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 240
        metrics = None
        while time.time() < deadline:
            found = list(out.glob("*/metrics.jsonl")) if out.exists() else []
            if found and found[0].stat().st_size > 2000:
                metrics = found[0]
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        assert metrics is not None, "the run never started writing metrics"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_one_line_error(proc.returncode, err, "interrupted")
    run_dir = metrics.parent
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted during adam"
    lines = metrics.read_text().splitlines()
    assert len(lines) > 10 and all(json.loads(line)["optimizer"] == "adam" for line in lines)
    assert (run_dir / "config.yaml").exists() and (run_dir / "environment.json").exists()


# ---------------------------------------------------------- compilation cache


def test_compilation_cache_goes_to_the_user_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("NEWTONJAX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "newtonjax" / "jax-compilation-cache"
    if sys.platform != "darwin":
        assert runner.compilation_cache_dir() == expected
    monkeypatch.setenv("NEWTONJAX_CACHE_DIR", str(tmp_path / "mine"))
    assert runner.compilation_cache_dir() == tmp_path / "mine"


@pytest.mark.parametrize(
    "switch_off", [[], ["--no-compilation-cache"], ["run.compilation_cache=false"]]
)
def test_second_process_reads_the_compilation_cache(tmp_path, switch_off):
    cache = tmp_path / "cache"
    path = write(tmp_path, {**CONFIG, "optimizers": [{"name": "newton"}]})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NEWTONJAX_CACHE_DIR": str(cache)}
    summaries = []
    for k in range(1 if switch_off else 2):
        out = tmp_path / f"runs{k}"
        command = [sys.executable, "-m", "newtonjax", "run", str(path), *switch_off,
                   "--output-dir", str(out)]
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        (run_dir,) = out.iterdir()
        summaries.append(json.loads((run_dir / "summary.json").read_text())["compilation_cache"])
    if switch_off:
        assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))
        assert summaries == [{"enabled": False, "hits": 0, "misses": 0}]
    else:
        first, second = summaries
        assert first["enabled"] and first["misses"] > 0
        # Every compile of the first run is read back by the second.
        assert second["hits"] >= first["misses"] and second["misses"] == 0
