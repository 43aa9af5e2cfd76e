"""Mixtral (Jiang et al. 2024, "Mixtral of Experts") from and to Hugging Face
``model_type: mixtral``.

Mistral's decoder (pre-RMSNorm, grouped-query attention, RoPE in the rotate-half layout, an
optional sliding window) with every MLP replaced by a top-k Mixture-of-Experts layer of SwiGLU
experts: softmax over all experts, then the top k, always renormalised (``moe.normalize``).

Checkpoints (``save_pretrained`` and the Hub) keep each expert and the router under
``model.layers.N.block_sparse_moe``: ``experts.M.w1`` (gate), ``w3`` (up), ``w2`` (down) and
``gate`` (the router ``[E, D]``). Transformers 5 fuses the experts in memory under
``model.layers.N.mlp``: ``experts.gate_up_proj [E, 2F, D]`` and ``experts.down_proj [E, D, F]``;
a folder holding that layout is read too. The per-expert layout is written.

``router_aux_loss_coef`` is read as ``moe.load_balance_weight``; transformers' loss pools the
routing statistics of all layers and is ``top_k`` when balanced, archzoo's is per layer and 1
when balanced, so the same coefficient weighs a different loss.
"""

from __future__ import annotations

import numpy as np

from archzoo.convert.common import TensorReader, finish_config, refuse
from archzoo.convert.llama import (
    TOKEN_DEFAULTS,
    decoder_config_from_hf,
    decoder_config_to_hf,
    decoder_weights_from_hf,
    decoder_weights_to_hf,
)
from archzoo.convert.llama_moe import routed_experts_from_hf, routed_experts_to_hf
from archzoo.models.config import ModelConfig, MoeConfig

__all__ = ["config_from_hf", "config_to_hf", "weights_from_hf", "weights_to_hf"]

MODEL_TYPE = "mixtral"
# The sizes of the transformers config class, for keys a config.json lacks.
DEFAULTS = dict(hidden_size=4096, num_attention_heads=32, vocab_size=32000, num_hidden_layers=32, intermediate_size=14336, rms_norm_eps=1e-5)
# archzoo expert weight -> Mixtral's per-expert layer
EXPERTS = {"gate": "w1", "up": "w3", "down": "w2"}


def config_from_hf(hf: dict) -> ModelConfig:
    """The archzoo config of a Mixtral ``config.json``.

    Returns:
      a ``decoder`` ModelConfig named ``mixtral`` whose every layer is MoE.

    Raises:
      ValueError: naming the key, for ``router_jitter_noise`` (Mixtral's jitter scales the
        experts' input too; archzoo's only the router's) and RoPE variants other than the default
        and Llama 3's.
    """
    jitter = hf.get("router_jitter_noise", 0.0) or 0.0
    if jitter:
        raise refuse(MODEL_TYPE, "router_jitter_noise", jitter, "Mixtral jitters the input of the router and the experts; archzoo's moe.jitter only the router's")
    moe = MoeConfig(
        num_experts=hf.get("num_local_experts", 8),
        top_k=hf.get("num_experts_per_tok", 2),
        normalize=True,
        load_balance_weight=hf.get("router_aux_loss_coef", 0.001),
    )
    return decoder_config_from_hf(hf, MODEL_TYPE, DEFAULTS, TOKEN_DEFAULTS, moe, bias=False, out_bias=False, sliding_window=hf.get("sliding_window"))


def config_to_hf(cfg: ModelConfig) -> dict:
    """The Mixtral ``config.json`` of an archzoo config.

    Raises:
      ValueError: naming each field the format cannot hold (a dense layer, a shared expert,
        unnormalised routing weights, capacity dispatch, biases, ...).
    """
    if cfg.moe is None:
        raise ValueError(f"model_type {MODEL_TYPE!r} cannot hold this config: moe=None (every Mixtral layer is MoE; a dense model is 'mistral')")
    moe = cfg.moe
    hf = decoder_config_to_hf(cfg, MODEL_TYPE, "MixtralForCausalLM", moe.expert_width(cfg.mlp.d_ff)) | {
        "head_dim": cfg.head_dim,
        "sliding_window": cfg.attention.sliding_window,
        "num_local_experts": moe.experts,
        "num_experts_per_tok": moe.k,
        "router_aux_loss_coef": moe.load_balance_weight,
        "router_jitter_noise": 0.0,
    }
    return finish_config(cfg, hf, config_from_hf, MODEL_TYPE)


def _moe_prefix(r: TensorReader, i: int) -> str:
    """Where layer ``i`` keeps its MoE layer: ``block_sparse_moe.`` (checkpoints) or ``mlp.``
    (transformers 5's in-memory names)."""
    return f"layers.{i}.block_sparse_moe." if r.has(f"layers.{i}.block_sparse_moe.gate.weight") else f"layers.{i}.mlp."


def weights_from_hf(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Archzoo parameters from Mixtral tensors.

    Args:
      tensors: Hugging Face name -> array (``model.layers.0.block_sparse_moe.experts.3.w1.weight``
        ``[F, D]``, or the fused ``model.layers.0.mlp.experts.gate_up_proj`` ``[E, 2F, D]``).
      cfg: the converted config.

    Returns:
      archzoo path -> array (``stack/blocks/0/mlp/gate`` ``[E, D, F]``, ``.../mlp/router`` ``[D, E]``).

    Raises:
      ValueError: naming a missing tensor, an expert or router tensor of another shape, or a
        tensor archzoo would not use.
    """

    def layer(r, i, hf, az):
        return routed_experts_from_hf(r, cfg, _moe_prefix(r, i), az + "mlp/", EXPERTS)

    return decoder_weights_from_hf(tensors, cfg, MODEL_TYPE, layer)


def weights_to_hf(params: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Mixtral tensors in the checkpoint layout (``model.layers.N.block_sparse_moe.*``,
    ``lm_head.weight`` when untied) from archzoo parameters."""
    return decoder_weights_to_hf(params, cfg, lambda p, i, hf, az: routed_experts_to_hf(p, az + "mlp/", hf + "block_sparse_moe.", EXPERTS))
