"""AdamW with decoupled weight decay and learning-rate schedules over training progress.

Budgets may be steps, target tokens, tokens processed or FLOPs, so a schedule is a function of
*progress* (the fraction of the budget spent, 0 to 1), not of the step: a run decays to its end
value exactly where its budget ends, whatever the unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import jax
import optax
from flax import nnx

from archzoo.config import invalid
from archzoo.layers.init import WIDTH_ROLES, parametrisation
from archzoo.models.config import ModelConfig

__all__ = ["OptimizerConfig", "learning_rate", "build_optimizer", "decay_mask", "lr_multipliers"]


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW and its schedule.

    Attributes:
      lr: peak learning rate.
      b1, b2, eps: Adam moments.
      weight_decay: decoupled weight decay (Loshchilov & Hutter 2019); not applied to norms,
        biases or position tables.
      clip_norm: clip gradients to this global norm (None = no clipping).
      schedule: ``cosine`` (warmup then cosine to ``min_lr_ratio``), ``wsd`` (warmup, stable,
        then linear decay over the last ``decay_fraction``), ``linear`` (warmup then linear to
        ``min_lr_ratio``) or ``constant`` (warmup then flat).
      warmup_fraction: fraction of the budget spent warming up linearly from 0.
      decay_fraction: wsd only: fraction of the budget spent decaying.
      min_lr_ratio: end learning rate as a fraction of ``lr``.
      accumulation_steps: micro-batches whose gradients are summed before one update.
      z_loss: coefficient of the log(Z)^2 auxiliary loss (0 = off).
    """

    lr: float = 3e-3
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip_norm: float | None = 1.0
    schedule: Literal["cosine", "wsd", "linear", "constant"] = "cosine"
    warmup_fraction: float = 0.05
    decay_fraction: float = 0.2
    min_lr_ratio: float = 0.1
    accumulation_steps: int = 1
    z_loss: float = 0.0

    def __post_init__(self):
        if not self.lr > 0:
            raise invalid("optimizer.lr", f"must be > 0, got {self.lr}")
        if not self.eps > 0:
            raise invalid("optimizer.eps", f"must be > 0, got {self.eps}")
        for name in ("b1", "b2"):
            if not 0 <= getattr(self, name) < 1:
                raise invalid(f"optimizer.{name}", f"must be in [0, 1), got {getattr(self, name)}")
        for name in ("warmup_fraction", "decay_fraction", "min_lr_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise invalid(f"optimizer.{name}", f"must be in [0, 1], got {getattr(self, name)}")
        if self.schedule == "wsd" and self.warmup_fraction + self.decay_fraction > 1:
            raise invalid("optimizer.decay_fraction", "warmup_fraction + decay_fraction must be <= 1")
        if self.weight_decay < 0:
            raise invalid("optimizer.weight_decay", f"must be >= 0, got {self.weight_decay}")
        if self.clip_norm is not None and self.clip_norm <= 0:
            raise invalid("optimizer.clip_norm", f"must be > 0 or null, got {self.clip_norm}")
        if self.accumulation_steps < 1:
            raise invalid("optimizer.accumulation_steps", f"must be >= 1, got {self.accumulation_steps}")
        if self.z_loss < 0:
            raise invalid("optimizer.z_loss", f"must be >= 0, got {self.z_loss}")


def learning_rate(cfg: OptimizerConfig, progress: float) -> float:
    """The learning rate at ``progress`` (fraction of the budget spent before this update)."""
    p = min(max(progress, 0.0), 1.0)
    end = cfg.lr * cfg.min_lr_ratio
    if cfg.warmup_fraction > 0 and p < cfg.warmup_fraction:
        return cfg.lr * p / cfg.warmup_fraction
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "wsd":
        start = 1.0 - cfg.decay_fraction
        if p < start or cfg.decay_fraction == 0:
            return cfg.lr
        return cfg.lr + (end - cfg.lr) * (p - start) / cfg.decay_fraction
    after = (p - cfg.warmup_fraction) / max(1.0 - cfg.warmup_fraction, 1e-12)
    if cfg.schedule == "linear":
        return cfg.lr + (end - cfg.lr) * after
    return end + 0.5 * (cfg.lr - end) * (1 + math.cos(math.pi * after))


def decay_mask(params) -> object:
    """True for weights that decay: matrices, not norms, biases or position tables."""

    def decays(path, leaf) -> bool:
        names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
        if any("norm" in n for n in names) or any(n.endswith("bias") for n in names):
            return False
        if "positions" in names or "relative_bias" in names:
            return False
        return getattr(leaf, "ndim", 0) >= 2

    return jax.tree_util.tree_map_with_path(decays, params)


def lr_multipliers(model_config: ModelConfig, params):
    """Per-parameter learning-rate multipliers: μP's ``base_width / d_model`` on the hidden
    matrices (TP5, Table 8, Adam), 1 on everything else and on every parameter of other inits.

    Args:
      model_config: the model's config (its init and widths).
      params: the model's parameters as split by the step (``nnx.State`` of ``nnx.Param``), each
        carrying the ``width_role`` it was created with.

    Returns:
      ``params``' structure with a Python float in place of each array.
    """
    hidden_lr = parametrisation(model_config.init, model_config.d_model, model_config.head_dim).hidden_lr

    def multiplier(variable):
        assert isinstance(variable, nnx.Variable), f"expected nnx parameters, got {type(variable).__name__}"
        role = variable.get_metadata().get("width_role")
        assert role in WIDTH_ROLES, f"a parameter without a width role ({role!r}): create it with layers.params.param"
        return variable.replace(hidden_lr if role == "hidden" else 1.0)

    return jax.tree.map(multiplier, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def build_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
    """Clipping then AdamW at unit learning rate: the step multiplies the update by the
    schedule's learning rate and each parameter's :func:`lr_multipliers` (decay stays decoupled
    and scales with them: ``lr * m * (adam + wd * w)``, as AdamW couples decay to the lr)."""
    adamw = optax.adamw(learning_rate=1.0, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask)
    if cfg.clip_norm is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw)
