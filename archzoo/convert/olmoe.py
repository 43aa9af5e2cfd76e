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

from archzoo.convert.common import (
    TensorReader,
    activation_from_hf,
    experts_from_hf,
    experts_to_hf,
    finish_config,
    head_from_hf,
    head_to_hf,
    out_from_linear,
    out_to_linear,
    qkv_from_linear,
    qkv_to_linear,
    refuse,
    take_shaped,
    token_ids_from_hf,
)
from archzoo.convert.llama import _ACTIVATION_TO_HF, _rope_from_hf, _rope_to_hf
from archzoo.models.config import (
    AttentionConfig,
    EmbeddingConfig,
    MlpConfig,
    ModelConfig,
    MoeConfig,
    NormConfig,
)

__all__ = ["config_from_hf", "config_to_hf", "weights_from_hf", "weights_to_hf"]

MODEL_TYPE = "olmoe"
# The special-token ids of the transformers config class, for keys a config.json lacks.
TOKEN_DEFAULTS = dict(eos=50279, pad=1)
# archzoo expert weight -> OLMoE's per-expert layer
EXPERTS = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


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
    D, H = hf.get("hidden_size", 2048), hf.get("num_attention_heads", 16)
    G = hf.get("num_key_value_heads") or H
    if hf.get("head_dim") not in (None, D // H):
        raise refuse(MODEL_TYPE, "head_dim", hf["head_dim"], f"OLMoE's q_norm is hidden_size={D} wide, so a head is hidden_size / num_attention_heads = {D // H}")
    bias = hf.get("attention_bias", False)
    return ModelConfig(
        family="decoder",
        name=MODEL_TYPE,
        vocab_size=hf.get("vocab_size", 50304),
        d_model=D,
        num_layers=hf.get("num_hidden_layers", 16),
        attention=AttentionConfig(
            num_heads=H,
            num_kv_heads=None if G == H else G,
            bias=bias,
            out_bias=bias,
            qk_norm="full",
        ),
        mlp=MlpConfig(
            d_ff=hf.get("intermediate_size", 2048),
            activation=activation_from_hf(MODEL_TYPE, "hidden_act", hf.get("hidden_act", "silu")),
            gated=True,
            bias=False,
        ),
        norm=NormConfig(kind="rmsnorm", eps=hf.get("rms_norm_eps", 1e-5), bias=False, placement="pre", final_norm=True),
        position=_rope_from_hf(hf, MODEL_TYPE),
        embedding=EmbeddingConfig(tie=hf.get("tie_word_embeddings", False)),
        token_ids=token_ids_from_hf(hf, TOKEN_DEFAULTS, MODEL_TYPE),
        moe=MoeConfig(
            num_experts=hf.get("num_experts", 64),
            top_k=hf.get("num_experts_per_tok", 8),
            normalize=hf.get("norm_topk_prob", False),
            load_balance_weight=hf.get("router_aux_loss_coef", 0.01),
        ),
    )


def config_to_hf(cfg: ModelConfig) -> dict:
    """The OLMoE ``config.json`` of an archzoo config.

    Raises:
      ValueError: naming each field the format cannot hold (no full-width q/k norm, a dense
        layer, a shared expert, a sliding window, capacity dispatch, ...).
    """
    if cfg.moe is None:
        raise ValueError(f"model_type {MODEL_TYPE!r} cannot hold this config: moe=None (every OLMoE layer is MoE)")
    att, moe = cfg.attention, cfg.moe
    hf = {
        "model_type": MODEL_TYPE,
        "architectures": ["OlmoeForCausalLM"],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": moe.expert_width(cfg.mlp.d_ff),
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": att.num_heads,
        "num_key_value_heads": att.kv_heads,
        "hidden_act": _ACTIVATION_TO_HF[cfg.mlp.activation],
        "rms_norm_eps": cfg.norm.eps,
        "max_position_embeddings": cfg.position.max_len,
        "rope_theta": cfg.position.rope_theta,
        "rope_parameters": _rope_to_hf(cfg.position),
        "attention_bias": att.bias,
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
    r = TensorReader(tensors, MODEL_TYPE, ("model.", ""), "embed_tokens.weight")
    att = cfg.attention
    H, G = att.num_heads, att.kv_heads
    E, D, F = cfg.moe.experts, cfg.d_model, cfg.moe.expert_width(cfg.mlp.d_ff)
    out = {"embed/table": r.take("embed_tokens.weight")}
    for i in range(cfg.num_layers):
        hf, az = f"layers.{i}.", f"stack/blocks/{i}/"
        out |= qkv_from_linear(r, hf + "self_attn.", az + "attn/", {"q": H, "k": G, "v": G}, att.bias)
        out[az + "attn/o"] = out_from_linear(r.take(hf + "self_attn.o_proj.weight"), H)
        if att.out_bias:
            out[az + "attn/o_bias"] = r.take(hf + "self_attn.o_proj.bias")
        out[az + "attn/q_norm/scale"] = r.take(hf + "self_attn.q_norm.weight")
        out[az + "attn/k_norm/scale"] = r.take(hf + "self_attn.k_norm.weight")
        out[az + "mlp/router"] = take_shaped(r, hf + "mlp.gate.weight", (E, D), "[experts, d_model]").T
        out |= experts_from_hf(r, hf + "mlp.experts.", az + "mlp/", EXPERTS, (E, D, F))
        out[az + "attn_norm/scale"] = r.take(hf + "input_layernorm.weight")
        out[az + "mlp_norm/scale"] = r.take(hf + "post_attention_layernorm.weight")
    out["stack/final_norm/scale"] = r.take("norm.weight")
    out |= head_from_hf(r, cfg)
    r.finish(ignore=(r"rotary_emb\.inv_freq$",))
    return out


def weights_to_hf(params: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """OLMoE tensors in the checkpoint layout (``model.layers.N.mlp.experts.M.*``,
    ``lm_head.weight`` when untied) from archzoo parameters."""
    p = params
    att = cfg.attention
    out = {"model.embed_tokens.weight": p["embed/table"]}
    for i in range(cfg.num_layers):
        hf, az = f"model.layers.{i}.", f"stack/blocks/{i}/"
        out |= qkv_to_linear(p, az + "attn/", hf + "self_attn.", att.bias)
        out[hf + "self_attn.o_proj.weight"] = out_to_linear(p[az + "attn/o"])
        if att.out_bias:
            out[hf + "self_attn.o_proj.bias"] = p[az + "attn/o_bias"]
        out[hf + "self_attn.q_norm.weight"] = p[az + "attn/q_norm/scale"]
        out[hf + "self_attn.k_norm.weight"] = p[az + "attn/k_norm/scale"]
        out[hf + "mlp.gate.weight"] = p[az + "mlp/router"].T
        out |= experts_to_hf(p, az + "mlp/", hf + "mlp.experts.", EXPERTS)
        out[hf + "input_layernorm.weight"] = p[az + "attn_norm/scale"]
        out[hf + "post_attention_layernorm.weight"] = p[az + "mlp_norm/scale"]
    out["model.norm.weight"] = p["stack/final_norm/scale"]
    return out | head_to_hf(p, cfg)
