"""Run a validated experiment: build, jit the step, log metrics, write the run folder.

The run folder (never an existing one) holds ``config.yaml`` (the resolved
config), ``environment.json`` (versions, device, command), ``metrics.jsonl`` (one
JSON object per step and optimizer, flushed as it is written), ``summary.json`` and
``summary.md`` (final loss, steps and time to the target, reports), and the PNG
plots. A config with an ``uncertainty:`` section adds the analysis of the chosen
optimizer's solution (:mod:`newtonjax.experiments.uncertainty`) to the summaries and
draws it in ``uncertainty_<label>.png``. An interrupted run keeps all of that and
records where it stopped.
"""

from __future__ import annotations

import datetime
import inspect
import json
import math
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml

from newtonjax.experiments import optimizers as registry
from newtonjax.experiments import uncertainty
from newtonjax.experiments.config import ConfigError, ExperimentConfig, OptimizerConfig, to_dict
from newtonjax.experiments.problems import base

__all__ = [
    "setup_platform",
    "make_mesh",
    "compilation_cache_dir",
    "make_run_dir",
    "run_experiment",
    "expand_sweep",
    "RunError",
    "RunInterrupted",
]

DIAGNOSTICS = ("radius", "damping", "rho", "cg_steps", "rejected", "learning_rate")


class RunError(RuntimeError):
    """A run that cannot go on for a reason outside the config (an unwritable output
    folder, a full disk); the message names the path and the cause, and whatever was
    written before stays where it is."""


class RunInterrupted(Exception):
    """Raised after an interrupted run has written what it had."""

    def __init__(self, run_dir: Path, where: str):
        super().__init__(f"interrupted during {where}; results so far are in {run_dir}")
        self.run_dir = run_dir
        self.where = where


def _os_reason(err: OSError) -> str:
    return err.strerror or str(err)


# ------------------------------------------------------------------- platform


def compilation_cache_dir() -> Path:
    """Where the runner keeps XLA compilations between processes.

    ``$NEWTONJAX_CACHE_DIR`` if set, else ``newtonjax/jax-compilation-cache`` in the
    user's cache folder (``$XDG_CACHE_HOME``, by default ``~/.cache``; on macOS
    ``~/Library/Caches``). An entry is keyed by JAX on the program, the compile options,
    the backend and the jax/jaxlib versions, so a changed objective or a new JAX never
    reads a stale one.
    """
    explicit = os.environ.get("NEWTONJAX_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "darwin":
        base_dir = Path.home() / "Library" / "Caches"
    else:
        base_dir = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base_dir / "newtonjax" / "jax-compilation-cache"


# Persistent-cache events counted in this process (JAX's monitoring events).
_CACHE_EVENTS = {
    "/jax/compilation_cache/cache_hits": "hits",
    "/jax/compilation_cache/cache_misses": "misses",
}
_cache_counts = {"hits": 0, "misses": 0}
_cache_listening = False


def _count_cache_event(event: str, **_) -> None:
    if event in _CACHE_EVENTS:
        _cache_counts[_CACHE_EVENTS[event]] += 1


def compilation_cache_counts() -> dict[str, int]:
    """Persistent compilation cache hits and misses of this process so far."""
    return dict(_cache_counts)


def enable_compilation_cache(path: Path) -> bool:
    """Turn on JAX's persistent compilation cache in ``path``; False if it cannot be made.

    Every compilation is kept (no minimum compile time or size), since an experiment's
    steps are small programs whose compiles still dominate a short run.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    global _cache_listening
    if not _cache_listening:
        jax.monitoring.register_event_listener(_count_cache_event)
        _cache_listening = True
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return True


def setup_platform(config: ExperimentConfig) -> jax.Device:
    """Apply ``x64``, the compilation cache and the device choice.

    A device that is not there is a :class:`ConfigError`. The persistent compilation
    cache (``run.compilation_cache``, on by default) is best effort: a cache folder
    that cannot be created only means compiling again.
    """
    jax.config.update("jax_enable_x64", bool(config.x64))
    if config.run.compilation_cache:
        enable_compilation_cache(compilation_cache_dir())
    if config.device == "auto":
        device = jax.devices()[0]
    else:
        try:
            devices = jax.devices(config.device)
        except RuntimeError:
            devices = []
        if not devices:
            present = sorted({d.platform for d in jax.devices()})
            raise ConfigError(
                f"device: {config.device!r} was asked for but is not available here; "
                f"present: {', '.join(present)} (use device: auto to take the best one)"
            )
        device = devices[0]
    jax.config.update("jax_default_device", device)
    return device


def make_mesh(config: ExperimentConfig, device: jax.Device) -> jax.sharding.Mesh | None:
    """The device mesh of ``mesh:`` on ``device``'s platform, or ``None`` without one.

    ``mesh: {data: 4}`` takes the first 4 devices of the platform; asking for more
    devices than there are is a :class:`ConfigError` (on a CPU, more can be emulated
    with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``, set before JAX
    starts).
    """
    if not config.mesh:
        return None
    names = tuple(config.mesh)
    sizes = tuple(config.mesh[a] for a in names)
    needed = math.prod(sizes)
    devices = jax.devices(device.platform)
    if needed > len(devices):
        layout = ", ".join(f"{a}: {n}" for a, n in config.mesh.items())
        hint = (
            "; set XLA_FLAGS=--xla_force_host_platform_device_count=N before starting "
            "to emulate N CPU devices"
            if device.platform == "cpu"
            else ""
        )
        raise ConfigError(
            f"mesh: {{{layout}}} needs {needed} devices, but {len(devices)} "
            f"{device.platform} device(s) are present{hint}"
        )
    return jax.sharding.Mesh(np.array(devices[:needed]).reshape(sizes), names)


def _shard_inputs(problem: base.Problem, mesh: jax.sharding.Mesh, params, state, data):
    """``params``, ``state`` and ``data`` placed on ``mesh``.

    A batch of problems is split over the ``data`` axis (every leaf whose leading
    axis is the batch; the batch must divide evenly); a single problem keeps its
    parameters and state replicated and splits the rows of each data leaf whose
    leading axis divides evenly (data parallel: XLA then reduces the gradient and
    each curvature product with one all-reduce). Everything else is replicated.
    """
    from jax.sharding import NamedSharding, PartitionSpec

    size = mesh.shape["data"]
    split = NamedSharding(mesh, PartitionSpec("data"))
    whole = NamedSharding(mesh, PartitionSpec())

    def place(tree, rows):
        def one(x):
            if not hasattr(x, "shape"):
                return x
            ok = rows is not None and x.ndim >= 1 and (x.shape[0] == rows or (
                rows == 0 and x.shape[0] % size == 0))  # fmt: skip
            return jax.device_put(x, split if ok else whole)

        return jax.tree.map(one, tree)

    if problem.batch_size:  # divisible: checked by run_experiment
        rows = problem.batch_size
        return place(params, rows), place(state, rows), place(data, rows)
    return place(params, None), place(state, None), place(data, 0)


# ------------------------------------------------------------------ run folder


def make_run_dir(root: str | Path, name: str) -> Path:
    """A new folder ``root/name-YYYYmmdd-HHMMSS[-k]``; an existing one is never reused.

    ``root`` is created when missing; one that cannot be created or written to is a
    :class:`RunError` naming it.
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"output folder {root}: cannot create it: {_os_reason(err)}") from None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        candidate = root / (f"{name}-{stamp}" + (f"-{k}" if k else ""))
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            raise RunError(
                f"output folder {root}: cannot create a run folder in it: {_os_reason(err)}"
            ) from None
        return candidate
    raise RunError(f"output folder {root}: cannot create a new run folder in it")


def environment(device: jax.Device) -> dict[str, Any]:
    import newtonjax

    return {
        "newtonjax": newtonjax.__version__,
        "jax": jax.__version__,
        "jaxlib": getattr(jax.lib, "__version__", None) or _version("jaxlib"),
        "optax": optax.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": str(device),
        "device_kind": getattr(device, "device_kind", device.platform),
        "x64": bool(jax.config.jax_enable_x64),
        "command": " ".join(sys.argv),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


# -------------------------------------------------------------- optimizers


def expand_sweep(config: ExperimentConfig) -> list[OptimizerConfig]:
    """The optimizer list with the swept entry replaced by one entry per value."""
    if config.sweep is None:
        return list(config.optimizers)
    out = []
    for opt in config.optimizers:
        if opt.display != config.sweep.optimizer:
            out.append(opt)
            continue
        for value in config.sweep.values:
            out.append(
                OptimizerConfig(
                    name=opt.name,
                    label=f"{opt.display}({config.sweep.param}={value})",
                    params={**opt.params, config.sweep.param: value},
                )
            )
    return out


def _find(state: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """Scalar diagnostics named ``names`` in a (nested) optax state: for each name the
    first array field or dict entry of that name (the solves' state protocol, read
    with ``optax.tree_utils.tree_get_all_with_path``)."""
    found: dict[str, Any] = {}
    for name in names:
        for _, value in optax.tree_utils.tree_get_all_with_path(state, name):
            if hasattr(value, "dtype"):
                found[name] = value
                break
    return found


def _tree_inf_norm(tree) -> jax.Array:
    leaves = [jnp.max(jnp.abs(x)) for x in jax.tree.leaves(tree)]
    return jnp.max(jnp.stack(leaves))


def _make_step(problem: base.Problem, tx: optax.GradientTransformation):
    objective = problem.objective
    has_data = problem.data is not None

    def single(params, state, data):
        args = (data,) if has_data else ()
        kwargs = {"data": data} if has_data else {}
        value, grad = jax.value_and_grad(objective)(params, *args)
        updates, state = tx.update(
            grad, state, params, value_fn=objective, value=value, grad=grad, **kwargs
        )
        new_params = optax.apply_updates(params, updates)
        diag = {k: jnp.asarray(v, jnp.float32) for k, v in _find(state, DIAGNOSTICS).items()}
        metrics = problem.metrics(params, *args) if problem.metrics else {}
        return new_params, state, value, _tree_inf_norm(grad), diag, metrics

    if problem.batch_size:
        batched = jax.vmap(single)

        def step(params, state, data):
            new_params, state, value, gnorm, diag, metrics = batched(params, state, data)
            diag = {k: jnp.mean(v) for k, v in diag.items()}
            metrics = {k: jnp.mean(v) for k, v in metrics.items()}
            metrics["loss_max"] = jnp.max(value)
            return new_params, state, jnp.mean(value), jnp.max(gnorm), diag, metrics

        return jax.jit(step)
    return jax.jit(single)


def _init_state(problem: base.Problem, tx):
    if problem.batch_size:
        return jax.vmap(tx.init)(problem.init_params)
    return tx.init(problem.init_params)


def _final_loss(problem: base.Problem, params) -> float:
    args = (problem.data,) if problem.data is not None else ()
    if problem.batch_size:
        values = jax.vmap(problem.objective)(params, *args)
        return float(jnp.mean(values))
    return float(problem.objective(params, *args))


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, jax.Array)):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else str(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


# --------------------------------------------------------------------- the run


def _run_optimizer(problem, opt, config, metrics_file, progress, mesh=None):
    from tqdm.auto import tqdm

    try:
        tx = registry.build(opt.name, opt.params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"optimizer {opt.display!r}: {err}") from None
    state = _init_state(problem, tx)
    params = problem.init_params
    data = problem.data
    if mesh is not None:
        params, state, data = _shard_inputs(problem, mesh, params, state, data)
    step = _make_step(problem, tx)
    t0 = time.perf_counter()
    compiled = step.lower(params, state, data).compile()
    compile_time = time.perf_counter() - t0

    target = config.run.target_loss if config.run.target_loss is not None else problem.target_loss
    record = {"label": opt.display, "optimizer": opt.name, "compile_time": compile_time}
    steps_to_target = time_to_target = None
    status = "completed"
    elapsed = 0.0
    bar = tqdm(
        total=config.run.steps,
        desc=opt.display,
        disable=not progress,
        leave=True,
        dynamic_ncols=True,
    )
    k = 0
    try:
        for k in range(config.run.steps):
            t_start = time.perf_counter()
            new_params, state, value, gnorm, diag, metrics = compiled(params, state, data)
            value = float(value)  # synchronizes
            elapsed += time.perf_counter() - t_start
            line = {
                "optimizer": opt.display,
                "step": k,
                "loss": value,
                "grad_norm": float(gnorm),
                "time": elapsed,
            }
            line.update({key: float(v) for key, v in diag.items()})
            line.update({key: float(v) for key, v in metrics.items()})
            _append(metrics_file, json.dumps(_jsonable(line)) + "\n")
            bar.set_postfix(loss=f"{value:.3e}", refresh=False)  # drawn by update()
            bar.update(1)
            if not math.isfinite(value):
                status = "non-finite loss"
                break
            if target is not None and value <= target and steps_to_target is None:
                steps_to_target, time_to_target = k, elapsed
                if config.run.stop_at_target:
                    params = new_params
                    status = "reached target"
                    break
            params = new_params
            if config.run.time_limit is not None and elapsed > config.run.time_limit:
                status = "time limit"
                break
        else:
            k = config.run.steps
    finally:
        bar.close()
    final = _final_loss(problem, params)
    record.update(
        {
            "status": status,
            "steps": int(k if status == "completed" else k + 1),
            "final_loss": final,
            "time": elapsed,
            "target_loss": target,
            "steps_to_target": steps_to_target,
            "time_to_target": time_to_target,
        }
    )
    return record, params


class _MetricsWriteFailed(Exception):
    """``metrics.jsonl`` could not take another line (a full disk, a lost mount)."""

    def __init__(self, err: OSError):
        super().__init__(f"cannot write metrics.jsonl: {_os_reason(err)}")


def _append(metrics_file, line: str) -> None:
    """Write one metrics line and flush it, so that every finished step is on disk."""
    try:
        metrics_file.write(line)
        metrics_file.flush()
    except OSError as err:
        raise _MetricsWriteFailed(err) from None


def _summary_markdown(config, records, reports, status) -> str:
    lines = [
        f"# {config.name}",
        "",
        config.description.strip() or "",
        "",
        f"status: {status}",
        "",
        "| optimizer | final loss | steps | time (s) | compile (s) | steps to target "
        "| time to target (s) | status |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        stt = "—" if r["steps_to_target"] is None else str(r["steps_to_target"])
        ttt = "—" if r["time_to_target"] is None else f"{r['time_to_target']:.3f}"
        lines.append(
            f"| {r['label']} | {r['final_loss']:.6e} | {r['steps']} | {r['time']:.3f} | "
            f"{r['compile_time']:.2f} | {stt} | {ttt} | {r['status']} |"
        )
    if reports:
        lines += ["", "## Reports", ""]
        for label, report in reports.items():
            lines += [f"### {label}", "", "```", json.dumps(_jsonable(report), indent=2), "```", ""]
    return "\n".join(lines) + "\n"


def run_experiment(
    config: ExperimentConfig, *, device: jax.Device, output_dir: str | Path | None = None
) -> Path:
    """Run every optimizer of ``config`` on its problem; return the new run folder."""
    key = jax.random.PRNGKey(config.seed)
    problem = _build_problem(config, key)
    optimizers = expand_sweep(config)
    _check_structure(config, problem, optimizers)
    analysed = _uncertainty_targets(config, problem, optimizers)
    mesh = _checked_mesh(config, device, problem)

    run_dir = make_run_dir(output_dir or config.output.dir, config.name)
    _write(run_dir / "config.yaml", yaml.safe_dump(to_dict(config), sort_keys=False))
    _write(run_dir / "environment.json", json.dumps(environment(device), indent=2))
    with _open_metrics(run_dir) as metrics_file:
        outcome = _run_optimizers(problem, optimizers, config, metrics_file, mesh, analysed, key)
    _finish(run_dir, config, problem, outcome)
    return run_dir


def _build_problem(config: ExperimentConfig, key: jax.Array) -> base.Problem:
    """The config's problem from its registered builder (given ``key`` if it takes one)."""
    builder = base.resolve(config.problem.name)
    kwargs = dict(config.problem.params)
    if "key" in inspect.signature(builder).parameters:
        kwargs["key"] = key
    try:
        problem = builder(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"problem {config.problem.name!r}: {err}") from None
    except ImportError as err:
        raise RunError(f"problem {config.problem.name!r}: {err}") from None
    if not isinstance(problem, base.Problem):
        raise ConfigError(
            f"problem {config.problem.name!r}: the builder returned {type(problem).__name__}, "
            "not newtonjax.experiments.problems.base.Problem"
        )
    return problem


def _check_structure(
    config: ExperimentConfig, problem: base.Problem, optimizers: list[OptimizerConfig]
) -> None:
    """Optimizers that need a least-squares or composite objective get one."""
    import newtonjax as nj

    for opt in optimizers:
        if registry.needs_structure(opt.name) and not isinstance(
            problem.objective, nj.CompositeObjective
        ):
            raise ConfigError(
                f"optimizer {opt.display!r} needs a least-squares or composite objective, "
                f"but problem {config.problem.name!r} is a plain scalar function"
            )


def _uncertainty_targets(
    config: ExperimentConfig, problem: base.Problem, optimizers: list[OptimizerConfig]
) -> list[str]:
    """Labels of the optimizers whose solutions the ``uncertainty:`` section analyses."""
    if config.uncertainty is None:
        return []
    uncertainty.check_problem(config.uncertainty, problem, config.problem.name)
    swept = config.sweep.optimizer if config.sweep is not None else None
    return uncertainty.targets(config.uncertainty, [o.display for o in optimizers], swept)


def _checked_mesh(config: ExperimentConfig, device: jax.Device, problem: base.Problem):
    """The config's device mesh (or ``None``), whose data axis divides the batch."""
    mesh = make_mesh(config, device)
    if mesh is not None and problem.batch_size % mesh.shape["data"]:
        raise ConfigError(
            f"mesh.data: {mesh.shape['data']} devices do not divide the batch of "
            f"{problem.batch_size} instances of problem {config.problem.name!r}"
        )
    return mesh


def _open_metrics(run_dir: Path):
    """``metrics.jsonl`` of the run folder, open for writing."""
    try:
        return open(run_dir / "metrics.jsonl", "w")  # noqa: SIM115 (closed by the caller)
    except OSError as err:
        raise RunError(
            f"{run_dir / 'metrics.jsonl'}: cannot create it: {_os_reason(err)}"
        ) from None


class _Outcome(NamedTuple):
    """What the optimizers left and how their loop ended."""

    records: list[dict[str, Any]]
    finals: dict[str, Any]  # label -> final params
    reports: dict[str, Any]  # label -> problem report
    analyses: dict[str, Any]  # label -> uncertainty.Analysis
    status: str  # "completed", "interrupted during <label>" or "failed: <reason>"
    current: str | None  # label of the last optimizer started
    failure: str | None  # why the metrics could not be written, if so


def _run_optimizers(problem, optimizers, config, metrics_file, mesh, analysed, key) -> _Outcome:
    """Run each optimizer in turn; an interrupt or a failed metrics write ends the loop
    and is recorded in the outcome, which keeps the optimizers finished before it."""
    records, finals, reports, analyses = [], {}, {}, {}
    status = "completed"
    current = None
    failure = None
    try:
        for opt in optimizers:
            current = opt.display
            record, params = _run_optimizer(
                problem, opt, config, metrics_file, config.run.progress, mesh
            )
            records.append(record)
            finals[opt.display] = params
            if problem.report is not None:
                reports[opt.display] = problem.report(params)
            if opt.display in analysed:
                analyses[opt.display] = uncertainty.analyse(
                    config.uncertainty, problem, params, jax.random.fold_in(key, 1)
                )
    except KeyboardInterrupt:
        status = f"interrupted during {current}"
    except _MetricsWriteFailed as err:
        failure = f"{err} (during {current})"
        status = f"failed: {failure}"
    return _Outcome(records, finals, reports, analyses, status, current, failure)


def _finish(run_dir: Path, config: ExperimentConfig, problem: base.Problem, outcome: _Outcome):
    """Write the summaries and plots; then raise if the loop did not complete."""
    status = outcome.status
    try:
        _write_results(
            run_dir,
            config,
            problem,
            outcome.records,
            outcome.finals,
            outcome.reports,
            status,
            outcome.analyses,
        )
    except OSError as err:
        lost = f"cannot write the summary and plots: {_os_reason(err)}"
        what = "" if status == "completed" else status.removeprefix("failed: ") + "; "
        raise RunError(f"{run_dir}: {what}{lost}; metrics.jsonl is kept") from None
    if outcome.failure is not None:
        raise RunError(f"{run_dir}: {outcome.failure}; the steps before it are kept")
    if status != "completed":
        raise RunInterrupted(run_dir, outcome.current or "setup")


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as err:
        raise RunError(f"{path}: cannot write it: {_os_reason(err)}") from None


def _write_results(
    run_dir, config, problem, records, finals, reports, status, analyses=None
) -> None:
    """``summary.json``, ``summary.md`` and the plots; an :class:`OSError` propagates.

    ``analyses`` (``{label: uncertainty.Analysis}``) add ``summary["uncertainty"]``, a
    section of ``summary.md`` and one ``uncertainty_<label>.png`` each."""
    analyses = analyses or {}
    summary = {
        "name": config.name,
        "problem": problem.name,
        "description": problem.description,
        "status": status,
        "optimizers": records,
        "reports": reports,
        "compilation_cache": {
            "enabled": bool(config.run.compilation_cache),
            **compilation_cache_counts(),
        },
    }
    if analyses:
        summary["uncertainty"] = {label: a.report for label, a in analyses.items()}
    (run_dir / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2))
    markdown = _summary_markdown(config, records, reports, status)
    if analyses:
        markdown += "\n## Uncertainty\n\n" + "".join(
            f"### {label}\n\n```\n{json.dumps(_jsonable(_brief(a.report)), indent=2)}\n```\n\n"
            for label, a in analyses.items()
        )
    (run_dir / "summary.md").write_text(markdown)
    if config.output.plots and records:
        from newtonjax.experiments import plots

        plots.write_plots(run_dir)
        if problem.plot is not None and finals:
            problem.plot(finals, run_dir)
        for label, analysis in analyses.items():
            uncertainty.write_figure(analysis, run_dir, label)


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    """An uncertainty report without its long traces and matrices (for summary.md)."""
    out = {k: v for k, v in report.items() if k not in ("covariance", "tuning")}
    if "tuning" in report:
        out["tuning"] = {k: v for k, v in report["tuning"].items() if not k.startswith("trace")}
    return out
