"""What a layer reports to the loss and the logs besides its output (:mod:`archzoo.models.output`)."""

from __future__ import annotations

import dataclasses

import jax

__all__ = ["LayerReport"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerReport:
    """What one layer reports.

    Attributes:
      losses: name -> float32 scalar, already weighted by its config coefficient, added to the
        training loss (a mean over the layer's real tokens).
      stats: name -> float32 array (a scalar, or ``[E]`` per expert): logged, never trained on.
    """

    losses: dict = dataclasses.field(default_factory=dict)
    stats: dict = dataclasses.field(default_factory=dict)

    def prefixed(self, prefix: str) -> "LayerReport":
        """The same report with every name as ``{prefix}/{name}``."""
        return LayerReport(
            {f"{prefix}/{k}": v for k, v in self.losses.items()}, {f"{prefix}/{k}": v for k, v in self.stats.items()}
        )

    @staticmethod
    def merge(reports) -> "LayerReport":
        """One report holding every name of ``reports`` (names must not repeat)."""
        losses, stats = {}, {}
        for r in reports:
            losses.update(r.losses)
            stats.update(r.stats)
        return LayerReport(losses, stats)
