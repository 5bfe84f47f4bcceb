"""Experiment configs: YAML (safe loading only) into typed, frozen dataclasses.

Validation happens before anything runs: an unknown key, a wrong type or an unknown
name raises :class:`ConfigError` with the key path and the valid choices. Dotted
overrides (``run.steps=50``, ``optimizers.0.params.learning_rate=0.1``,
``optimizers.adam.params.learning_rate=0.1``) are applied to the raw mapping first,
so they are validated like the file.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "ProblemConfig",
    "OptimizerConfig",
    "RunConfig",
    "OutputConfig",
    "SweepConfig",
    "UncertaintyConfig",
    "ExperimentConfig",
    "load_config",
    "parse_config",
    "apply_overrides",
    "to_dict",
]

DEVICES = ("auto", "cpu", "gpu", "tpu")

#: Axis names of ``mesh:``. ``data`` splits a batch of problems (``batch_size > 0``:
#: every instance with its data) or, for a single problem, the rows of its data
#: (data parallel, parameters replicated).
MESH_AXES = ("data",)
#: ``uncertainty.kind``: ``nj.parameter_covariance`` or ``nj.laplace``.
UNCERTAINTY_KINDS = ("covariance", "laplace")
#: ``uncertainty.curvature`` and ``uncertainty.structure``: the choices of ``nj.laplace``.
LAPLACE_CURVATURES = ("hessian", "ggn")
LAPLACE_STRUCTURES = ("full", "diag", "lowrank")


class ConfigError(ValueError):
    """A config that cannot run; the message names the key path and the fix."""


@dataclasses.dataclass(frozen=True)
class ProblemConfig:
    """``problem:`` a registered name (or ``module:function``) and its parameters."""

    name: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """One entry of ``optimizers:``: a registered name, a label and its parameters."""

    name: str
    label: str | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """``run:`` how long to run, what counts as reaching the target, and whether XLA
    compilations are kept on disk (JAX's persistent compilation cache, in the user's
    cache folder; see :func:`newtonjax.experiments.runner.compilation_cache_dir`)."""

    steps: int = 100
    target_loss: float | None = None
    stop_at_target: bool = False
    time_limit: float | None = None
    progress: bool = True
    compilation_cache: bool = True


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """``output:`` where run folders go and whether to draw plots."""

    dir: str = "runs"
    plots: bool = True


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """``sweep:`` run one optimizer once per value of one hyperparameter."""

    optimizer: str
    param: str
    values: list[Any]


@dataclasses.dataclass(frozen=True)
class UncertaintyConfig:
    """``uncertainty:`` curvature at the solution of one optimizer's final params.

    ``kind: covariance`` takes ``nj.parameter_covariance`` (``s² (JᵀJ)⁻¹``) of a
    least-squares problem: standard errors, ``level`` confidence intervals of the
    parameters and, for a problem with a statistical model, confidence and
    prediction bands of the fitted curve. ``kind: laplace`` takes ``nj.laplace``
    with ``curvature``, ``structure``, ``rank`` and ``prior_precision`` (by default
    the problem's own prior; another value refits the mode with ``nj.minimize``);
    ``tune_prior: true`` maximizes the Laplace evidence over ``log prior_precision``
    with ``jax.grad`` and optax's L-BFGS (at most ``tune_steps`` iterations),
    refitting the mode at each one; the linearized predictive is drawn for problems
    with plot inputs. ``optimizer``
    names the run whose final params are analysed (default: the first).
    """

    kind: str = "covariance"
    optimizer: str | None = None
    level: float = 0.95
    curvature: str | None = None
    structure: str | None = None
    rank: int | None = None
    prior_precision: float | None = None
    tune_prior: bool = False
    tune_steps: int = 30


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment."""

    name: str
    problem: ProblemConfig
    optimizers: list[OptimizerConfig]
    description: str = ""
    seed: int = 0
    device: str = "auto"
    x64: bool = False
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)
    sweep: SweepConfig | None = None
    uncertainty: UncertaintyConfig | None = None
    mesh: dict[str, Any] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------- coercion


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def coerce_scalar(value: Any, tp: type, path: str) -> Any:
    """``value`` as ``tp`` (int, float, str, bool), or a :class:`ConfigError`.

    YAML 1.1 reads ``1e-3`` as a string; numeric strings are accepted for numbers.
    """
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                if not math.isnan(number):
                    return number
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    raise ConfigError(f"{path}: unsupported type {_type_name(tp)}")


def coerce_value(value: Any, path: str) -> Any:
    """A free-form hyperparameter: numbers stay numbers, numeric strings become floats."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, list):
        return [coerce_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    raise ConfigError(f"{path}: expected a number, string, boolean or list, got {value!r}")


def _build(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], value, path)
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item,) = args
        if item is Any:
            return [coerce_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return [_build(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {str(k): coerce_value(v, f"{path}.{k}") for k, v in value.items()}
    return coerce_scalar(value, tp, path)


def _build_dataclass(cls: type, value: Any, path: str) -> Any:
    where = path or "config"
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: " + ", ".join(fields))
    kwargs = {}
    for name, field in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in value:
            kwargs[name] = _build(hints[name], value[name], sub)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {name!r}")
    return cls(**kwargs)


# --------------------------------------------------------------------- overrides


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected dotted.key=value")
    key, _, raw = text.partition("=")
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: cannot parse value: {err}") from None
    return key.split("."), value


def _child(node: Any, part: str, path: str) -> tuple[Any, Any]:
    """The container key for ``part`` in ``node`` (list index, label or name)."""
    if isinstance(node, list):
        if part.isdigit():
            index = int(part)
            if index >= len(node):
                raise ConfigError(
                    f"override {path}: index {index} out of range ({len(node)} entries)"
                )
            return index, node[index]
        for index, item in enumerate(node):
            if isinstance(item, dict) and part in (item.get("label"), item.get("name")):
                return index, item
        raise ConfigError(f"override {path}: no entry named {part!r}")
    if isinstance(node, dict):
        return part, node.get(part)
    raise ConfigError(f"override {path}: cannot index into {node!r}")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a raw mapping."""
    import copy

    raw = copy.deepcopy(raw)
    for text in overrides:
        parts, value = _parse_override(text)
        node = raw
        for depth, part in enumerate(parts[:-1]):
            key, child = _child(node, part, ".".join(parts[: depth + 1]))
            if child is None:
                child = {}
                node[key] = child
            node = child
        last = parts[-1]
        if isinstance(node, list):
            key, _ = _child(node, last, text)
            node[key] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override {text!r}: {'.'.join(parts[:-1])} is not a mapping")
    return raw


# ------------------------------------------------------------------ validation


def parse_config(raw: Any) -> ExperimentConfig:
    """Validate a raw mapping into an :class:`ExperimentConfig` (structure, names)."""
    config = _build_dataclass(ExperimentConfig, raw, "")
    if config.device not in DEVICES:
        raise ConfigError(
            f"device: unknown device {config.device!r}; valid choices: " + ", ".join(DEVICES)
        )
    validate_mesh(config.mesh)
    if config.run.steps < 1:
        raise ConfigError(f"run.steps: must be >= 1, got {config.run.steps}")
    if config.run.time_limit is not None and config.run.time_limit <= 0:
        raise ConfigError(f"run.time_limit: must be > 0, got {config.run.time_limit}")
    if not config.optimizers:
        raise ConfigError("optimizers: at least one optimizer is needed")
    labels = [o.display for o in config.optimizers]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ConfigError(
            f"optimizers: label {duplicates[0]!r} is used twice; give each entry a unique label"
        )
    from newtonjax.experiments import optimizers as registry
    from newtonjax.experiments.problems import base

    for i, opt in enumerate(config.optimizers):
        registry.validate(opt.name, opt.params, f"optimizers[{i}]")
    if config.sweep is not None:
        if config.sweep.optimizer not in labels:
            raise ConfigError(
                f"sweep.optimizer: no optimizer labelled {config.sweep.optimizer!r}; "
                "valid choices: " + ", ".join(labels)
            )
        if not config.sweep.values:
            raise ConfigError("sweep.values: give at least one value")
        target = config.optimizers[labels.index(config.sweep.optimizer)]
        for value in config.sweep.values:
            registry.validate(target.name, {**target.params, config.sweep.param: value}, "sweep")
    if config.uncertainty is not None:
        validate_uncertainty(config.uncertainty, labels)
    try:
        builder = base.resolve(config.problem.name)
    except KeyError:
        raise ConfigError(
            f"problem.name: unknown problem {config.problem.name!r}; valid choices: "
            + ", ".join(sorted(base.PROBLEMS))
            + ", or module:function"
        ) from None
    except (ImportError, AttributeError, TypeError) as err:
        raise ConfigError(f"problem.name: cannot load {config.problem.name!r}: {err}") from None
    validate_params(base.builder_parameters(builder), config.problem.params, "problem.params")
    return config


def _check_choice(path: str, what: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{path}: unknown {what} {value!r}; valid choices: " + ", ".join(choices))


def validate_uncertainty(section: UncertaintyConfig, labels: list[str]) -> None:
    """Check ``uncertainty:`` (choices, ranges, keys that only one kind reads)."""
    path = "uncertainty"
    _check_choice(f"{path}.kind", "kind", section.kind, UNCERTAINTY_KINDS)
    if section.optimizer is not None:
        _check_choice(f"{path}.optimizer", "optimizer label", section.optimizer, tuple(labels))
    if not 0.0 < section.level < 1.0:
        raise ConfigError(f"{path}.level: must be in (0, 1), e.g. 0.95; got {section.level}")
    if section.kind == "covariance":
        laplace_only = [
            "curvature",
            "structure",
            "rank",
            "prior_precision",
            "tune_prior",
            "tune_steps",
        ]
        defaults = UncertaintyConfig()
        for name in laplace_only:
            if getattr(section, name) != getattr(defaults, name):
                raise ConfigError(
                    f"{path}.{name}: used only with kind: laplace (kind is covariance, "
                    "whose keys are: kind, optimizer, level)"
                )
        return
    if section.curvature is not None:
        _check_choice(f"{path}.curvature", "curvature", section.curvature, LAPLACE_CURVATURES)
    if section.structure is not None:
        _check_choice(f"{path}.structure", "structure", section.structure, LAPLACE_STRUCTURES)
    if section.structure == "lowrank":
        if section.rank is None or section.rank < 1:
            raise ConfigError(
                f"{path}.rank: structure lowrank needs rank, an integer >= 1; got {section.rank}"
            )
    elif section.rank is not None:
        raise ConfigError(
            f"{path}.rank: used only with structure: lowrank, got structure "
            f"{section.structure or 'full'}"
        )
    if section.prior_precision is not None and not (
        section.prior_precision >= 0 and math.isfinite(section.prior_precision)
    ):
        raise ConfigError(
            f"{path}.prior_precision: must be a finite number >= 0, got {section.prior_precision}"
        )
    if section.tune_prior and section.prior_precision == 0:
        raise ConfigError(
            f"{path}.prior_precision: tune_prior starts from it on a log scale, so it must be "
            "> 0 (or left out to start from the problem's own prior)"
        )
    if section.tune_steps < 1:
        raise ConfigError(f"{path}.tune_steps: must be >= 1, got {section.tune_steps}")
    if section.tune_prior and section.structure == "lowrank":
        raise ConfigError(
            f"{path}.structure: tune_prior needs the gradient of the evidence, which the "
            "Lanczos iteration of structure lowrank does not have in reverse mode; "
            "valid choices with tune_prior: full, diag"
        )


def validate_mesh(mesh: dict[str, Any]) -> None:
    """Check ``mesh:`` (axis name -> number of devices); the device count is checked
    when the run starts (:func:`newtonjax.experiments.runner.make_mesh`)."""
    for axis, size in mesh.items():
        if axis not in MESH_AXES:
            raise ConfigError(f"mesh: unknown axis {axis!r}; valid axes: " + ", ".join(MESH_AXES))
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"mesh.{axis}: expected a number of devices >= 1, got {size!r}")


def validate_params(signature: dict[str, Any], params: dict[str, Any], path: str) -> None:
    """Check hyperparameter names against a signature and scalar types against hints."""
    for name, value in params.items():
        if name not in signature:
            raise ConfigError(
                f"{path}: unknown parameter {name!r}; valid parameters: "
                + (", ".join(signature) or "(none)")
            )
        annotation = signature[name].annotation
        if isinstance(annotation, str):
            annotation = {"int": int, "float": float, "str": str, "bool": bool}.get(annotation)
        if annotation in (int, float, str, bool):
            coerce_scalar(value, annotation, f"{path}.{name}")


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML file safely, apply overrides, validate."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file ({err.reason})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config: {err.strerror or err}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_error(path, err)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys to values")
    return parse_config(apply_overrides(raw, overrides or []))


def _yaml_error(path: Path, err: yaml.YAMLError) -> str:
    """One line for a YAML error: ``file:line:column: what is wrong``."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    what = f"{problem} ({context})" if context else problem
    if mark is None:
        return f"{path}: not valid (safe) YAML: {what}"
    return f"{path}:{mark.line + 1}:{mark.column + 1}: not valid (safe) YAML: {what}"


def to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain data (for ``config.yaml`` in the run folder)."""
    return dataclasses.asdict(config)
