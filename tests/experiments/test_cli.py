"""The experiment command: configs, overrides, run folders, plots and bad input."""

import json
import pathlib
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import yaml

from newtonjax.experiments import runner
from newtonjax.experiments.config import load_config
from tests.experiments._helpers import run_cli, write

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))

USER = {
    "name": "user",
    "x64": True,
    "problem": {"name": "tests.experiments.user_problem:build", "params": {"dim": 4}},
    "optimizers": [
        {"name": "newton"},
        {"name": "trust_region", "params": {"subproblem": "steihaug_cg"}},
        {"name": "adam", "params": {"learning_rate": 0.1}},
    ],
    "run": {"steps": 12, "target_loss": 1e-8, "progress": False},
}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_validates_and_has_a_header(path):
    config = load_config(path)
    header = path.read_text().splitlines()[:8]
    text = "\n".join(header)
    assert text.startswith("#") and "Command: newtonjax run configs/" in text, path
    assert "Runtime:" in text and config.name


class TestRunFolder:
    def test_files_and_contents(self, tmp_path, capsys):
        code, out, err = run_cli(
            ["run", write(tmp_path, USER), "--output-dir", tmp_path / "runs"], capsys
        )
        assert code == 0, err
        (run_dir,) = (tmp_path / "runs").iterdir()
        assert run_dir.name.startswith("user-")
        names = {p.name for p in run_dir.iterdir()}
        assert {
            "config.yaml",
            "environment.json",
            "metrics.jsonl",
            "summary.json",
            "summary.md",
            "loss_vs_step.png",
            "loss_vs_time.png",
            "grad_norm.png",
        } <= names
        resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert resolved["problem"]["params"] == {"dim": 4} and resolved["run"]["steps"] == 12
        env = json.loads((run_dir / "environment.json").read_text())
        assert env["x64"] is True and env["jax"] and env["device"]
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert len(lines) == 3 * 12
        newton = [r for r in lines if r["optimizer"] == "newton"]
        assert [r["step"] for r in newton] == list(range(12))
        assert all(np.isfinite(r["loss"]) and r["time"] >= 0 for r in lines)
        tr = [r for r in lines if r["optimizer"] == "trust_region"]
        assert "radius" in tr[0] and "rho" in tr[0] and "cg_steps" in tr[0]
        summary = json.loads((run_dir / "summary.json").read_text())
        by_label = {r["label"]: r for r in summary["optimizers"]}
        assert by_label["newton"]["final_loss"] < 1e-12
        assert by_label["newton"]["steps_to_target"] is not None
        assert summary["reports"]["newton"]["max_error"] < 1e-6
        assert "| newton |" in (run_dir / "summary.md").read_text()
        assert "results:" in out

    def test_plots_are_real_images(self, tmp_path, capsys):
        assert run_cli(["run", write(tmp_path, USER), "--output-dir", tmp_path], capsys)[0] == 0
        (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
        for name in ("loss_vs_step.png", "loss_vs_time.png", "grad_norm.png"):
            image = matplotlib.image.imread(run_dir / name)
            assert image.shape[:2] == (440, 640), name
            assert image.std() > 0.01, f"{name} is blank"

    def test_existing_run_folder_is_never_touched(self, tmp_path, capsys):
        config = write(tmp_path, USER)
        for _ in range(2):
            assert run_cli(["run", config, "--output-dir", tmp_path / "runs"], capsys)[0] == 0
        runs = sorted((tmp_path / "runs").iterdir())
        assert len(runs) == 2 and runs[0] != runs[1]
        first_metrics = (runs[0] / "metrics.jsonl").read_text()
        assert len(first_metrics.splitlines()) == 36

    def test_make_run_dir_skips_existing(self, tmp_path, monkeypatch):
        first = runner.make_run_dir(tmp_path, "x")
        (first / "keep.txt").write_text("precious")
        second = runner.make_run_dir(tmp_path, "x")
        assert second != first and (first / "keep.txt").read_text() == "precious"

    def test_overrides_and_sweep(self, tmp_path, capsys):
        data = dict(
            USER, sweep={"optimizer": "adam", "param": "learning_rate", "values": [0.01, 0.1]}
        )
        code, _, err = run_cli(
            [
                "run",
                write(tmp_path, data),
                "run.steps=5",
                "optimizers.newton.params.damping=1e-3",
                "--output-dir",
                tmp_path / "runs",
            ],
            capsys,
        )
        assert code == 0, err
        (run_dir,) = (tmp_path / "runs").iterdir()
        resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert resolved["run"]["steps"] == 5
        assert resolved["optimizers"][0]["params"] == {"damping": 1e-3}
        labels = {
            json.loads(line)["optimizer"]
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        }
        assert labels == {
            "newton",
            "trust_region",
            "adam(learning_rate=0.01)",
            "adam(learning_rate=0.1)",
        }

    def test_interrupted_run_keeps_results(self, tmp_path, capsys, monkeypatch):
        calls = []
        original = runner._run_optimizer

        def flaky(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return original(*args, **kwargs)

        monkeypatch.setattr(runner, "_run_optimizer", flaky)
        code, _, err = run_cli(
            ["run", write(tmp_path, USER), "--output-dir", tmp_path / "runs"], capsys
        )
        assert code == 2 and "interrupted during trust_region" in err
        (run_dir,) = (tmp_path / "runs").iterdir()
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "interrupted during trust_region"
        assert [r["label"] for r in summary["optimizers"]] == ["newton"]
        assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 12


BAD = [
    ("unknown top-level key", {**USER, "sed": 1}, "unknown key 'sed'; valid keys: name, problem"),
    (
        "unknown nested key",
        {**USER, "run": {"stepz": 3}},
        "run: unknown key 'stepz'; valid keys: steps",
    ),
    ("bad type", {**USER, "run": {"steps": "many"}}, "run.steps: expected an integer"),
    (
        "unknown optimizer",
        {**USER, "optimizers": [{"name": "adamm"}]},
        "unknown optimizer 'adamm'; valid choices: newton",
    ),
    (
        "unknown optimizer parameter",
        {**USER, "optimizers": [{"name": "newton", "params": {"dampign": 1}}]},
        "unknown parameter 'dampign'; valid parameters: learning_rate, damping",
    ),
    (
        "missing required parameter",
        {**USER, "optimizers": [{"name": "adam"}]},
        "adam needs learning_rate",
    ),
    (
        "unknown problem",
        {**USER, "problem": {"name": "rosenbrok"}},
        "unknown problem 'rosenbrok'; valid choices:",
    ),
    (
        "unknown problem parameter",
        {**USER, "problem": {"name": USER["problem"]["name"], "params": {"dims": 2}}},
        "unknown parameter 'dims'; valid parameters: scale, dim",
    ),
    (
        "bad device",
        {**USER, "device": "npu"},
        "device: unknown device 'npu'; valid choices: auto, cpu, gpu, tpu",
    ),
    (
        "duplicate labels",
        {**USER, "optimizers": [{"name": "newton"}, {"name": "newton"}]},
        "label 'newton' is used twice",
    ),
]


@pytest.mark.parametrize("what,data,message", BAD, ids=[b[0] for b in BAD])
def test_bad_configs_exit_2_with_message(tmp_path, capsys, what, data, message):
    out_dir = tmp_path / "runs"
    code, _, err = run_cli(["run", write(tmp_path, data), "--output-dir", out_dir], capsys)
    assert code == 2, what
    assert message in err, err
    assert "Traceback" not in err
    assert not out_dir.exists(), "nothing may be written for a config that fails validation"


def test_python_object_tag_is_rejected(tmp_path, capsys):
    text = "name: x\nproblem: !!python/object/apply:os.system ['echo pwned']\noptimizers: []\n"
    code, _, err = run_cli(["validate", write(tmp_path, text)], capsys)
    assert code == 2 and "not valid (safe) YAML" in err


def test_bad_override_and_missing_file(tmp_path, capsys):
    code, _, err = run_cli(["run", write(tmp_path, USER), "nodots"], capsys)
    assert code == 2 and "expected dotted.key=value" in err
    code, _, err = run_cli(["run", tmp_path / "missing.yaml"], capsys)
    assert code == 2 and "no such config file" in err


def test_unavailable_device_is_a_clear_error(tmp_path, capsys):
    code, _, err = run_cli(
        ["run", write(tmp_path, {**USER, "device": "tpu"}), "--output-dir", tmp_path / "r"], capsys
    )
    assert code == 2 and "'tpu' was asked for but is not available here" in err


def test_builder_returning_the_wrong_type(tmp_path, capsys):
    data = {**USER, "problem": {"name": "tests.experiments.user_problem:not_a_problem"}}
    code, _, err = run_cli(["run", write(tmp_path, data), "--output-dir", tmp_path / "r"], capsys)
    assert code == 2 and "not newtonjax.experiments.problems.base.Problem" in err


def test_real_process_exit_code_and_no_traceback(tmp_path):
    config = write(tmp_path, {**USER, "optimizers": [{"name": "nope"}]})
    proc = subprocess.run(
        [sys.executable, "-m", "newtonjax", "run", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "unknown optimizer 'nope'" in proc.stderr and "Traceback" not in proc.stderr


SMOKE = {
    "curve_fits": ["problem.params.num_fits=16"],
    "mlp_digits": ["problem.params.hidden=8"],
    "mlp_spectrum": ["problem.params.hidden=4"],
    "rosenbrock_nd": ["problem.params.dim=4"],
    "logistic_regression": ["sweep.values=[0.01]"],
}


# Configs whose smoke run compiles for most of a minute (MLPs on the digits data, a
# sweep of logistic regressions): in the slow run; every config still validates above.
HEAVY = {"mlp_digits", "mlp_spectrum", "logistic_regression"}


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if p.stem in HEAVY else p for p in CONFIGS],
    ids=lambda p: p.name,
)
def test_smoke_variant_of_every_config_runs(path, tmp_path, capsys):
    overrides = ["run.steps=3", "run.progress=false", *SMOKE.get(path.stem, [])]
    code, _, err = run_cli(["run", path, *overrides, "--output-dir", tmp_path], capsys)
    assert code == 0, err
    (run_dir,) = list(tmp_path.iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    config = load_config(path)
    assert len(summary["optimizers"]) >= len(config.optimizers)
    for record in summary["optimizers"]:
        assert record["steps"] == 3 and np.isfinite(record["final_loss"]), record
    assert (run_dir / "loss_vs_step.png").is_file()
