"""Qwen1.5-MoE / Qwen2-MoE (Qwen Team 2024) from and to Hugging Face ``model_type: qwen2_moe``.

A Llama-style decoder (pre-RMSNorm, RoPE in the rotate-half layout, SwiGLU) with biases on q, k
and v (``qkv_bias``) and Mixture-of-Experts layers: top-k routed experts of width
``moe_intermediate_size`` whose weights are the softmax probabilities over all experts
(renormalised only with ``norm_topk_prob``), plus one shared SwiGLU expert of width
``shared_expert_intermediate_size`` that every token passes through, scaled by
``sigmoid(x . shared_expert_gate)`` (``moe.num_shared_experts: 1``, ``moe.shared_gate``).

Layer ``i`` is MoE when ``(i + 1) % decoder_sparse_step == 0`` and ``i`` is not in
``mlp_only_layers`` (``moe.every``/``moe.offset``, or ``moe.layers`` when layers are excluded);
the others are dense SwiGLU MLPs of width ``intermediate_size`` (``mlp.d_ff``).

Checkpoints keep each expert as ``model.layers.N.mlp.experts.M.{gate,up,down}_proj``, the router
as ``model.layers.N.mlp.gate`` ``[E, D]`` and the shared expert under ``mlp.shared_expert`` and
``mlp.shared_expert_gate`` ``[1, D]``; transformers 5's fused in-memory experts
(``experts.gate_up_proj [E, 2F, D]``, ``experts.down_proj [E, D, F]``) are read too. The
per-expert layout is written.

``router_aux_loss_coef`` is read as ``moe.load_balance_weight`` (see :mod:`archzoo.convert.mixtral`
for how the two losses differ). Sliding-window attention (``use_sliding_window``), which
Qwen2-MoE applies to some layers only, is refused.
"""

from __future__ import annotations

import numpy as np

from archzoo.convert.common import finish_config, refuse, take_shaped
from archzoo.convert.llama import (
    MLP,
    decoder_config_from_hf,
    decoder_config_to_hf,
    decoder_weights_from_hf,
    decoder_weights_to_hf,
    mlp_from_hf,
    mlp_to_hf,
)
from archzoo.convert.llama_moe import routed_experts_from_hf, routed_experts_to_hf
from archzoo.models.config import ModelConfig, MoeConfig

__all__ = ["config_from_hf", "config_to_hf", "weights_from_hf", "weights_to_hf"]

MODEL_TYPE = "qwen2_moe"
# The special-token ids of the transformers config class (none), for keys a config.json lacks.
TOKEN_DEFAULTS = {}
# The sizes of the transformers config class, for keys a config.json lacks.
DEFAULTS = dict(hidden_size=2048, num_attention_heads=16, vocab_size=151936, num_hidden_layers=24, intermediate_size=5632, rms_norm_eps=1e-6)
# archzoo expert weight -> Qwen's per-expert layer (Llama's MLP names, as the shared and the dense MLPs use)
EXPERTS = MLP


def _layer_types(hf: dict, num_layers: int) -> list[str]:
    """The attention kind of each layer, as ``Qwen2MoeConfig`` derives it when not given."""
    if hf.get("layer_types"):
        return list(hf["layer_types"])
    sliding, max_window = hf.get("use_sliding_window", False), hf.get("max_window_layers", 28)
    return ["sliding_attention" if sliding and i % 2 == 0 and i < max_window else "full_attention" for i in range(num_layers)]


def _moe_layers(hf: dict, num_layers: int) -> list[int]:
    step = hf.get("decoder_sparse_step", 1)
    if not isinstance(step, int) or step < 1:
        raise refuse(MODEL_TYPE, "decoder_sparse_step", step, "an MoE layer every decoder_sparse_step layers needs a step >= 1")
    dense = set(hf.get("mlp_only_layers") or [])
    if hf.get("num_experts", 60) <= 0:
        return []
    return [i for i in range(num_layers) if i not in dense and (i + 1) % step == 0]


def config_from_hf(hf: dict) -> ModelConfig:
    """The archzoo config of a Qwen2-MoE ``config.json``.

    Returns:
      a ``decoder`` ModelConfig named ``qwen2_moe`` (``moe`` None when no layer is MoE).

    Raises:
      ValueError: naming the key, for sliding-window layers, a shared expert of width 0 and RoPE
        variants other than the default and Llama 3's.
    """
    L = hf.get("num_hidden_layers", DEFAULTS["num_hidden_layers"])
    if "sliding_attention" in _layer_types(hf, L):
        key = "layer_types" if hf.get("layer_types") else "use_sliding_window"
        raise refuse(MODEL_TYPE, key, hf.get(key), "Qwen2-MoE slides the window of some layers only; archzoo's attention.sliding_window is every layer's")
    moe_layers = _moe_layers(hf, L)
    moe = None
    if moe_layers:
        step = hf.get("decoder_sparse_step", 1)
        placement = dict(every=step, offset=step - 1)
        if moe_layers != [i for i in range(L) if (i + 1) % step == 0]:
            placement = dict(layers=tuple(moe_layers))
        shared = hf.get("shared_expert_intermediate_size", 5632)
        if shared < 1:
            raise refuse(MODEL_TYPE, "shared_expert_intermediate_size", shared, "archzoo's shared expert has a width >= 1")
        moe = MoeConfig(
            num_experts=hf.get("num_experts", 60),
            top_k=hf.get("num_experts_per_tok", 4),
            normalize=hf.get("norm_topk_prob", False),
            d_ff=hf.get("moe_intermediate_size", 1408),
            num_shared_experts=1,
            shared_d_ff=shared,
            shared_gate=True,
            load_balance_weight=hf.get("router_aux_loss_coef", 0.001),
            **placement,
        )
    return decoder_config_from_hf(hf, MODEL_TYPE, DEFAULTS, TOKEN_DEFAULTS, moe, bias=hf.get("qkv_bias", True), out_bias=False)


def _placement_to_hf(cfg: ModelConfig) -> dict:
    """``decoder_sparse_step`` and ``mlp_only_layers`` that make exactly the config's layers MoE."""
    L = cfg.num_layers
    moe_layers = [i for i in range(L) if cfg.moe is not None and cfg.moe.is_moe("decoder", i)]
    for step in range(1, L + 1):
        if moe_layers == [i for i in range(L) if (i + 1) % step == 0]:
            return {"decoder_sparse_step": step, "mlp_only_layers": []}
    return {"decoder_sparse_step": 1, "mlp_only_layers": [i for i in range(L) if i not in moe_layers]}


def config_to_hf(cfg: ModelConfig) -> dict:
    """The Qwen2-MoE ``config.json`` of an archzoo config.

    Raises:
      ValueError: naming each field the format cannot hold (no shared expert or no gate on it,
        a sliding window, an output bias, capacity dispatch, ...).
    """
    att, moe = cfg.attention, cfg.moe
    if moe is not None and not moe.shared_width(cfg.mlp.d_ff):
        raise ValueError(
            f"model_type {MODEL_TYPE!r} cannot hold this config: moe.num_shared_experts=0 (every Qwen2-MoE layer has a shared expert)"
        )
    hf = decoder_config_to_hf(cfg, MODEL_TYPE, "Qwen2MoeForCausalLM", cfg.mlp.d_ff) | {
        "qkv_bias": att.bias,
        "use_sliding_window": False,
    } | _placement_to_hf(cfg)
    if cfg.head_dim != cfg.d_model // att.num_heads:
        hf["head_dim"] = cfg.head_dim
    if moe is not None:
        hf |= {
            "num_experts": moe.experts,
            "num_experts_per_tok": moe.k,
            "moe_intermediate_size": moe.expert_width(cfg.mlp.d_ff),
            "shared_expert_intermediate_size": moe.shared_width(cfg.mlp.d_ff),
            "norm_topk_prob": moe.normalize,
            "router_aux_loss_coef": moe.load_balance_weight,
        }
    return finish_config(cfg, hf, config_from_hf, MODEL_TYPE)


def weights_from_hf(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Archzoo parameters from Qwen2-MoE tensors.

    Args:
      tensors: Hugging Face name -> array (``model.layers.1.mlp.experts.3.gate_proj.weight``
        ``[F, D]`` or the fused ``model.layers.1.mlp.experts.gate_up_proj`` ``[E, 2F, D]``,
        ``model.layers.1.mlp.shared_expert_gate.weight`` ``[1, D]``).
      cfg: the converted config.

    Returns:
      archzoo path -> array (``stack/blocks/1/mlp/gate`` ``[E, D, F]``, ``.../mlp/shared/up``
      ``[D, Fs]``, ``.../mlp/shared_gate`` ``[D]``).

    Raises:
      ValueError: naming a missing tensor, an expert, router or shared-gate tensor of another
        shape, or a tensor archzoo would not use.
    """
    moe, D = cfg.moe, cfg.d_model

    def layer(r, i, hf, az):
        if moe is None or not moe.is_moe("decoder", i):
            return mlp_from_hf(r, hf + "mlp.", az + "mlp/")
        out = routed_experts_from_hf(r, cfg, hf + "mlp.", az + "mlp/", EXPERTS)
        out |= mlp_from_hf(r, hf + "mlp.shared_expert.", az + "mlp/shared/")
        out[az + "mlp/shared_gate"] = take_shaped(r, hf + "mlp.shared_expert_gate.weight", (1, D), "[1, d_model]")[0]
        return out

    return decoder_weights_from_hf(tensors, cfg, MODEL_TYPE, layer)


def weights_to_hf(params: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Qwen2-MoE tensors in the checkpoint layout (``model.layers.N.mlp.experts.M.*``,
    ``lm_head.weight`` when untied) from archzoo parameters."""
    moe = cfg.moe

    def layer(p, i, hf, az):
        if moe is None or not moe.is_moe("decoder", i):
            return mlp_to_hf(p, az + "mlp/", hf + "mlp.")
        out = routed_experts_to_hf(p, az + "mlp/", hf + "mlp.", EXPERTS)
        out |= mlp_to_hf(p, az + "mlp/shared/", hf + "mlp.shared_expert.")
        out[hf + "mlp.shared_expert_gate.weight"] = p[az + "mlp/shared_gate"][None, :]
        return out

    return decoder_weights_to_hf(params, cfg, layer)
