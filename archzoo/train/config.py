"""The run config: everything one training run needs, typed and composable (DESIGN.md §4).

A YAML file may name a ``base`` file (a path relative to itself) whose keys it overrides, and an
experiment file lists ``runs``, each a set of overrides on the shared config (for example a
family and a size), or declares ``axes`` whose product gives the runs (:mod:`archzoo.train.axes`),
so every run shares the corpus, tokenizer, objective and budget.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from archzoo.config import (
    ConfigError,
    _Located,
    _where,
    apply_overrides,
    from_dict,
    invalid,
    load_yaml,
)
from archzoo.data.config import DataConfig
from archzoo.features.pipeline import check_row_lengths
from archzoo.models.config import ModelConfig, check_seed
from archzoo.models.ladder import LadderConfig, size_model
from archzoo.objectives import ObjectiveConfig
from archzoo.plugins import add_paths, sources
from archzoo.distributed import DistributedConfig
from archzoo.sharding import MeshConfig
from archzoo.tasks.config import EvalConfig
from archzoo.train.optimizer import OptimizerConfig

__all__ = ["BudgetConfig", "Experiment", "RunConfig", "TrainConfig", "from_resolved", "load_experiment", "load_run_configs"]


@dataclass(frozen=True)
class BudgetConfig:
    """When a run stops.

    Attributes:
      kind: ``steps``, ``target_tokens`` (tokens the loss is computed on; the same for every
        family on the same data), ``tokens`` (every real token a model reads, inputs included)
        or ``flops`` (training FLOPs computed per family, see :mod:`archzoo.train.flops`).
      value: the amount (100 when neither it nor ``per_param`` is given).
      per_param: derive the value from the model's size: ``per_param`` tokens (or target
        tokens) per parameter, ``20`` being Hoffmann et al. 2022's compute-optimal ratio. Only
        for ``target_tokens`` and ``tokens`` budgets; a config that gives both keys must give
        the value they imply.
      params: which count ``per_param`` multiplies: ``non_embedding`` (N of Kaplan et al.
        2020 and of the size ladder) or ``total``.
    """

    kind: Literal["steps", "target_tokens", "tokens", "flops"] = "steps"
    value: float | None = None
    per_param: float | None = None
    params: Literal["non_embedding", "total"] = "non_embedding"

    def __post_init__(self):
        if self.per_param is not None:
            if self.kind not in ("target_tokens", "tokens"):
                raise invalid("budget.per_param", f"derives a token budget (kind target_tokens or tokens), not kind {self.kind!r}")
            if not self.per_param > 0:
                raise invalid("budget.per_param", f"must be > 0, got {self.per_param}")
            return  # the value comes with the model (RunConfig)
        if self.value is None:
            object.__setattr__(self, "value", 100)
        self._check_value(self.value)

    def _check_value(self, value) -> None:
        if not value > 0:
            raise invalid("budget.value", f"must be > 0, got {value}")
        if self.kind != "flops" and value != int(value):
            raise invalid("budget.value", f"a {self.kind} budget counts whole {self.kind.replace('_', ' ')}; got {value}")

    def derived(self, counts) -> "BudgetConfig":
        """The budget with ``value`` set from ``per_param`` and the model's parameter counts
        (``total``, ``non_embedding``); itself without ``per_param``."""
        if self.per_param is None:
            return self
        n = counts.non_embedding if self.params == "non_embedding" else counts.total
        value = max(round(self.per_param * n), 1)
        if self.value is not None and self.value != value:
            raise invalid(
                "budget.value",
                f"{self.value:g} disagrees with budget.per_param={self.per_param:g} x {n:,} {self.params.replace('_', '-')} "
                f"parameters = {value:,}; give one of the two",
            )
        return dataclasses.replace(self, value=value)


@dataclass(frozen=True)
class TrainConfig:
    """Batching, evaluation, logging and checkpoints.

    Attributes:
      batch_size: rows per micro-batch.
      seq_len: row length of a decoder (inputs and targets together) or encoder (MLM).
      encoder_len, decoder_len: row lengths of an encoder-decoder (None = seq_len).
      chunk_len: tokens of a document fed to the objective at once (None = chosen so every
        objective's examples fit the rows).
      seed: model initialisation seed (the data seed is ``data.seed``).
      eval_every: validate every N steps (and at the end).
      eval_examples: validation examples, the first of the held-out chunks (None = all); the same
        examples for every family, however each packs them.
      log_every: write metrics every N steps.
      checkpoint_every: save a checkpoint every N steps (and at the end).
      keep_checkpoints: how many checkpoints to keep.
      progress: show a progress bar on the console.
    """

    batch_size: int = 16
    seq_len: int = 128
    encoder_len: int | None = None
    decoder_len: int | None = None
    chunk_len: int | None = None
    seed: int = 0
    eval_every: int = 50
    eval_examples: int | None = 128
    log_every: int = 1
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    progress: bool = True

    def __post_init__(self):
        for name in ("batch_size", "seq_len", "eval_every", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise invalid(f"train.{name}", f"must be >= 1, got {getattr(self, name)}")
        for name in ("encoder_len", "decoder_len", "chunk_len", "eval_examples"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise invalid(f"train.{name}", f"must be >= 1 or null, got {v}")
        check_seed(self.seed, "train.seed")


@dataclass(frozen=True)
class RunConfig:
    """One training run.

    Attributes:
      name: the run's name (its directory under ``out_dir``).
      out_dir: parent directory of run directories.
      model, data, objective, optimizer, budget, train: the sections.
      size: the size ladder's rule (:mod:`archzoo.models.ladder`): when given, it sets the
        model's width, depth, heads and MLP width for a target non-embedding parameter count,
        the same rule for every family (the ``model`` section gives the rest).
      eval: task evaluation at checkpoints and at the end (None: none); see
        :class:`~archzoo.tasks.config.EvalConfig`. It changes no training number, so a run
        resumes across a changed ``eval`` section.
      mesh: the device mesh and sharding rules (:class:`~archzoo.sharding.MeshConfig`); None:
        one device, the default one. Only the mesh changes between a laptop and a pod; a run
        resumes across a changed mesh (its checkpoints restore onto the new one).
      distributed: how this process joins the others of a run of several processes
        (:class:`~archzoo.distributed.DistributedConfig`; the ``ARCHZOO_*`` environment
        variables override it); None: one process, unless the environment says otherwise.
      plugin_paths: folders put on ``sys.path`` before the config's plug-ins are imported
        (relative to the file that lists them, a ``base`` file's too; the resolved config holds
        them absolute). Read by
        :func:`load_experiment`: in a mapping built in Python, import the packages yourself.
    """

    name: str = "run"
    out_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    size: LadderConfig | None = None
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig | None = None
    mesh: MeshConfig | None = None
    distributed: DistributedConfig | None = None
    plugin_paths: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise invalid("name", f"must be a non-empty name without '/' (and not '.' or '..'), got {self.name!r}")
        # derived sections (frozen: set once, here): the ladder's shape, then a per-parameter budget
        if self.size is not None:
            object.__setattr__(self, "model", size_model(self.model, self.size))
        if self.budget.per_param is not None:
            from archzoo.models import count_params

            object.__setattr__(self, "budget", self.budget.derived(count_params(self.model)))
        if self.model.position.kind == "learned":
            t = self.train
            for key, length in (("train.seq_len", t.seq_len), ("train.encoder_len", t.encoder_len), ("train.decoder_len", t.decoder_len)):
                if length is not None and length > self.model.position.max_len:
                    raise invalid(key, f"rows of {length} tokens need {length} learned positions but model.position.max_len={self.model.position.max_len}")
        # the encoder family reads its targets off the inputs' positions (Example.target_positions)
        at_positions = self.objective.name == "mlm" or getattr(self.objective.name, "targets_at_positions", False)
        if at_positions and self.model.family != "encoder":
            raise invalid(
                "objective.name",
                f"{self.objective.label} gives targets at input positions (an MLM-style objective), which train the encoder "
                f"family, not model.family={self.model.family!r}",
            )
        if self.model.family == "encoder" and not at_positions:
            raise invalid(
                "model.family",
                f"the encoder family trains with an MLM-style objective (mlm, or one whose examples carry target_positions), "
                f"not {self.objective.label!r}",
            )
        check_row_lengths(self.objective.name, self.model.family, self.train)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


def _merge(base: dict, over: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else replaces (keeps line info of both)."""
    out = copy.copy(base)
    if isinstance(over, _Located):
        merged = _Located(out)
        merged.lines = {**getattr(base, "lines", {}), **over.lines}
        merged.file = over.file
        out = merged
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _load_with_base(path: Path, seen: tuple = ()) -> dict:
    if path.resolve() in seen:
        raise ConfigError(f"{path}: base files form a cycle: {' -> '.join(str(p) for p in (*seen, path))}")
    data = load_yaml(path)
    if "plugin_paths" in data:  # relative to the file that lists them, before any plug-in is imported
        data["plugin_paths"] = list(add_paths(data["plugin_paths"], path.parent, _where(data, "plugin_paths")))
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be a path to another config file, got {base!r}")
    return _merge(_load_with_base((path.parent / base), (*seen, path.resolve())), data)


@dataclass(frozen=True)
class Experiment:
    """The runs a config file describes, and the axis values that name each of them.

    Attributes:
      path: the config file.
      runs: the run configs, in the file's order.
      axes: per run name, its axis values' names by dotted key (empty for a file without axes).
    """

    path: Path
    runs: list[RunConfig]
    axes: dict[str, dict[str, str]]

    @property
    def name(self) -> str:
        return self.path.stem


def load_run_configs(path: str | Path, overrides: list[str] = ()) -> list[RunConfig]:
    """The runs a config file describes: one, or one per entry of its ``runs`` list, or one per
    point of its ``axes`` (see :func:`load_experiment`).

    Raises:
      ConfigError: naming the key, the file and the line.
    """
    return load_experiment(path, overrides).runs


def load_experiment(path: str | Path, overrides: list[str] = ()) -> Experiment:
    """The runs a config file describes, with the axis values of each.

    Args:
      path: a YAML file (may name a ``base``; may list ``runs`` of overrides or declare ``axes``).
      overrides: ``key.sub=value`` strings applied to every run, last.

    Raises:
      ConfigError: naming the key, the file and the line.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a YAML file path, got {type(path).__name__} {path!r}")
    path = Path(path)
    data = _load_with_base(path)
    if "axes" in data:
        return _axis_runs(path, data, overrides)
    if "exclude" in data:
        raise ConfigError(f"{_where(data, 'exclude')}exclude needs axes to leave points out of")
    runs = data.pop("runs", None)
    if runs is None:
        return Experiment(path, [from_dict(RunConfig, apply_overrides(data, overrides))], {})
    if not isinstance(runs, list) or not runs:
        raise ConfigError(f"{path}: runs must be a non-empty list of per-run overrides")
    configs = []
    for i, run in enumerate(runs):
        if not isinstance(run, dict) or "name" not in run:
            raise ConfigError(f"{path}: runs[{i}] must be a mapping with a name")
        merged = _merge(copy.deepcopy(data), run)
        configs.append(from_dict(RunConfig, apply_overrides(merged, overrides)))
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: run names must differ; got {names}")
    return Experiment(path, configs, {})


def _nested(key: str, value) -> dict:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def _axis_runs(path: Path, data: dict, overrides: list[str]) -> Experiment:
    """One run per point of the experiment's axes (see :mod:`archzoo.train.axes`)."""
    from archzoo.train.axes import expand_axes

    if "runs" in data:
        raise ConfigError(f"{_where(data, 'runs')}an experiment lists runs or declares axes, not both")
    axes, exclude = data.pop("axes"), data.pop("exclude", None)
    configs, labels = [], {}
    for point in expand_axes(axes, exclude, data=data, root=RunConfig):
        merged = copy.deepcopy(data)
        for key, value in point.settings:
            merged = _merge(merged, _nested(key, value))
        merged["name"] = point.name
        try:
            configs.append(from_dict(RunConfig, apply_overrides(merged, overrides)))
        except ConfigError as e:
            raise ConfigError(f"{path}: run {point.name}: {e}") from None
        labels[point.name] = dict(point.names)
    return Experiment(path, configs, labels)


def resolved(cfg: RunConfig) -> dict:
    """The config as plain data, every default filled in (written to the run directory); with
    plug-ins, a ``plugins`` section records each one's path, source file and its SHA-256 by the
    key that names it, so a resumed run notices a changed plug-in."""
    from archzoo.config import to_dict

    out = to_dict(cfg)
    found = sources(cfg)
    if found:
        out["plugins"] = found
    return out


def from_resolved(data: dict) -> RunConfig:
    """The run config a run directory's ``config.yaml`` holds (what :func:`resolved` wrote),
    its plug-in folders put on ``sys.path`` first.

    Raises:
      ConfigError: naming the key (a plug-in that no longer imports, among others).
    """
    data = {k: v for k, v in data.items() if k != "plugins"}
    if data.get("plugin_paths"):
        add_paths(data["plugin_paths"], Path("."))
    return from_dict(RunConfig, data)
