"""What a model returns to the loss, the train loop and generation: one value for every family.

Layers that have something to say to the loss (an MoE layer's balancing loss, its router
statistics) return it beside their hidden states; each stack gathers its layers' reports under
``"{stack}/{layer}/{name}"`` and the family returns them in a :class:`ModelOutput` with the
logits and, when decoding, the updated cache. The loss adds ``aux_loss``; the train loop writes
``stats`` to ``metrics.jsonl``. A dense model's ``losses`` and ``stats`` are empty.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from archzoo.layers.report import LayerReport

__all__ = ["ModelOutput", "LayerReport", "StackOutput"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StackOutput:
    """What a stack returns beside its hidden states.

    Attributes:
      kv: per layer, the (keys, values) of its self-attention (the cache's, when decoding).
      report: its layers' reports, named ``{stack}/{layer}/{name}``.
    """

    kv: list
    report: LayerReport


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ModelOutput:
    """A family's forward pass.

    Attributes:
      logits: float32 ``[B, L, V]`` of the stream with the output head.
      losses: ``"{stack}/{layer}/{name}"`` -> weighted auxiliary loss (float32 scalar).
      stats: ``"{stack}/{layer}/{name}"`` -> statistic (float32 scalar or ``[E]``).
      cache: the updated :class:`~archzoo.models.cache.KVCache` when decoding; else None.
    """

    logits: jax.Array
    losses: dict = dataclasses.field(default_factory=dict)
    stats: dict = dataclasses.field(default_factory=dict)
    cache: object = None

    @property
    def aux_loss(self) -> jax.Array:
        """The sum of every auxiliary loss (0 for a dense model)."""
        return sum(self.losses.values(), jnp.zeros((), jnp.float32))

    @classmethod
    def of(cls, logits, reports, cache=None) -> "ModelOutput":
        """Logits with the reports of the stacks that ran and a cache."""
        merged = LayerReport.merge(reports)
        return cls(logits, merged.losses, merged.stats, cache)
