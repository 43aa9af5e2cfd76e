"""The routed experts of the Llama-style MoE decoders (Mixtral, OLMoE, Qwen2-MoE).

Each MoE layer keeps its router as ``{prefix}gate.weight`` ``[E, D]`` and its SwiGLU experts
under ``{prefix}experts.``, one layer per expert or transformers 5's fused layout.
"""

from __future__ import annotations

import numpy as np

from archzoo.convert.common import (
    TensorReader,
    experts_from_hf,
    experts_to_hf,
    take_shaped,
)
from archzoo.models.config import ModelConfig


def routed_experts_from_hf(r: TensorReader, cfg: ModelConfig, hf: str, az: str, names: dict[str, str]) -> dict[str, np.ndarray]:
    """The router ``{az}router`` ``[D, E]`` and the experts ``{az}{gate,up,down}`` ``[E, in, out]``
    of the MoE layer at ``hf``; ``names`` maps archzoo's expert weights to the format's.

    Raises:
      ValueError: naming a missing tensor or an expert or router tensor of another shape.
    """
    E, D, F = cfg.moe.experts, cfg.d_model, cfg.moe.expert_width(cfg.mlp.d_ff)
    out = {az + "router": take_shaped(r, hf + "gate.weight", (E, D), "[experts, d_model]").T}
    return out | experts_from_hf(r, hf + "experts.", az, names, (E, D, F))


def routed_experts_to_hf(p: dict[str, np.ndarray], az: str, hf: str, names: dict[str, str]) -> dict[str, np.ndarray]:
    """The inverse of :func:`routed_experts_from_hf`, in the per-expert layout."""
    return {hf + "gate.weight": p[az + "router"].T} | experts_to_hf(p, az, hf + "experts.", names)
