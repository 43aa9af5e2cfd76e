"""OLMoE (Muennighoff et al. 2024, "OLMoE: Open Mixture-of-Experts Language Models") from and
to Hugging Face ``model_type: olmoe``.

A Llama-style decoder (pre-RMSNorm, RoPE in the rotate-half layout, SwiGLU) whose every MLP is a
top-k Mixture-of-Experts layer, with two differences: queries and keys are RMS-normed over their
full projected width before RoPE (``attention.qk_norm: full``), and the top-k router weights are
the softmax probabilities over all experts, renormalised only with ``norm_topk_prob``
(``moe.normalize``; false in the published model). ``intermediate_size`` is each expert's width.

Checkpoints keep each expert as ``model.layers.N.mlp.experts.M.{gate,up,down}_proj`` and the
router as ``model.layers.N.mlp.gate`` ``[E, D]``; transformers 5's fused in-memory layout
(``experts.gate_up_proj [E, 2F, D]``, ``experts.down_proj [E, D, F]``) is read too. The
per-expert layout is written.

``router_aux_loss_coef`` is read as ``moe.load_balance_weight`` (see :mod:`archzoo.convert.mixtral`
for how the two losses differ).
"""

from __future__ import annotations

import numpy as np

from archzoo.convert.common import finish_config, refuse
from archzoo.convert.llama import (
    MLP,
    decoder_config_from_hf,
    decoder_config_to_hf,
    decoder_weights_from_hf,
    decoder_weights_to_hf,
)
from archzoo.convert.llama_moe import routed_experts_from_hf, routed_experts_to_hf
from archzoo.models.config import ModelConfig, MoeConfig

__all__ = ["config_from_hf", "config_to_hf", "weights_from_hf", "weights_to_hf"]

MODEL_TYPE = "olmoe"
# The special-token ids of the transformers config class, for keys a config.json lacks.
TOKEN_DEFAULTS = dict(eos=50279, pad=1)
# The sizes of the transformers config class, for keys a config.json lacks.
DEFAULTS = dict(hidden_size=2048, num_attention_heads=16, vocab_size=50304, num_hidden_layers=16, intermediate_size=2048, rms_norm_eps=1e-5)
# archzoo expert weight -> OLMoE's per-expert layer (Llama's MLP names)
EXPERTS = MLP


def config_from_hf(hf: dict) -> ModelConfig:
    """The archzoo config of an OLMoE ``config.json``.

    Returns:
      a ``decoder`` ModelConfig named ``olmoe`` whose every layer is MoE.

    Raises:
      ValueError: naming the key, for ``clip_qkv`` (archzoo does not clamp q, k and v) and
        RoPE variants other than the default and Llama 3's.
    """
    if hf.get("clip_qkv") is not None:
        raise refuse(MODEL_TYPE, "clip_qkv", hf["clip_qkv"], "archzoo does not clamp queries, keys and values")
    D, H = hf.get("hidden_size", DEFAULTS["hidden_size"]), hf.get("num_attention_heads", DEFAULTS["num_attention_heads"])
    if hf.get("head_dim") not in (None, D // H):
        raise refuse(MODEL_TYPE, "head_dim", hf["head_dim"], f"OLMoE's q_norm is hidden_size={D} wide, so a head is hidden_size / num_attention_heads = {D // H}")
    bias = hf.get("attention_bias", False)
    moe = MoeConfig(
        num_experts=hf.get("num_experts", 64),
        top_k=hf.get("num_experts_per_tok", 8),
        normalize=hf.get("norm_topk_prob", False),
        load_balance_weight=hf.get("router_aux_loss_coef", 0.01),
    )
    return decoder_config_from_hf(hf, MODEL_TYPE, DEFAULTS, TOKEN_DEFAULTS, moe, bias=bias, out_bias=bias, qk_norm="full")


def config_to_hf(cfg: ModelConfig) -> dict:
    """The OLMoE ``config.json`` of an archzoo config.

    Raises:
      ValueError: naming each field the format cannot hold (no full-width q/k norm, a dense
        layer, a shared expert, a sliding window, capacity dispatch, ...).
    """
    if cfg.moe is None:
        raise ValueError(f"model_type {MODEL_TYPE!r} cannot hold this config: moe=None (every OLMoE layer is MoE)")
    moe = cfg.moe
    hf = decoder_config_to_hf(cfg, MODEL_TYPE, "OlmoeForCausalLM", moe.expert_width(cfg.mlp.d_ff)) | {
        "attention_bias": cfg.attention.bias,
        "clip_qkv": None,
        "num_experts": moe.experts,
        "num_experts_per_tok": moe.k,
        "norm_topk_prob": moe.normalize,
        "router_aux_loss_coef": moe.load_balance_weight,
    }
    return finish_config(cfg, hf, config_from_hf, MODEL_TYPE)


def weights_from_hf(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Archzoo parameters from OLMoE tensors.

    Args:
      tensors: Hugging Face name -> array (``model.layers.0.mlp.experts.3.gate_proj.weight``
        ``[F, D]``, or the fused ``model.layers.0.mlp.experts.gate_up_proj`` ``[E, 2F, D]``;
        ``model.layers.0.self_attn.q_norm.weight`` ``[H * Dh]``).
      cfg: the converted config.

    Returns:
      archzoo path -> array (``stack/blocks/0/mlp/gate`` ``[E, D, F]``, ``.../attn/q_norm/scale``).

    Raises:
      ValueError: naming a missing tensor, an expert or router tensor of another shape, or a
        tensor archzoo would not use.
    """

    def layer(r, i, hf, az):
        out = {az + f"attn/{n}_norm/scale": r.take(hf + f"self_attn.{n}_norm.weight") for n in "qk"}
        return out | routed_experts_from_hf(r, cfg, hf + "mlp.", az + "mlp/", EXPERTS)

    return decoder_weights_from_hf(tensors, cfg, MODEL_TYPE, layer)


def weights_to_hf(params: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """OLMoE tensors in the checkpoint layout (``model.layers.N.mlp.experts.M.*``,
    ``lm_head.weight`` when untied) from archzoo parameters."""

    def layer(p, i, hf, az):
        out = {hf + f"self_attn.{n}_norm.weight": p[az + f"attn/{n}_norm/scale"] for n in "qk"}
        return out | routed_experts_to_hf(p, az + "mlp/", hf + "mlp.", EXPERTS)

    return decoder_weights_to_hf(params, cfg, layer)
