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

MODEL_TYPE = "mixtral"
# The special-token ids of the transformers config class, for keys a config.json lacks.
TOKEN_DEFAULTS = dict(bos=1, eos=2)
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
    D, H = hf.get("hidden_size", 4096), hf.get("num_attention_heads", 32)
    G = hf.get("num_key_value_heads") or H
    head_dim = hf.get("head_dim") or D // H
    return ModelConfig(
        family="decoder",
        name=MODEL_TYPE,
        vocab_size=hf.get("vocab_size", 32000),
        d_model=D,
        num_layers=hf.get("num_hidden_layers", 32),
        attention=AttentionConfig(
            num_heads=H,
            num_kv_heads=None if G == H else G,
            head_dim=None if head_dim == D // H else head_dim,
            bias=False,
            out_bias=False,
            sliding_window=hf.get("sliding_window"),
        ),
        mlp=MlpConfig(
            d_ff=hf.get("intermediate_size", 14336),
            activation=activation_from_hf(MODEL_TYPE, "hidden_act", hf.get("hidden_act", "silu")),
            gated=True,
            bias=False,
        ),
        norm=NormConfig(kind="rmsnorm", eps=hf.get("rms_norm_eps", 1e-5), bias=False, placement="pre", final_norm=True),
        position=_rope_from_hf(hf, MODEL_TYPE),
        embedding=EmbeddingConfig(tie=hf.get("tie_word_embeddings", False)),
        token_ids=token_ids_from_hf(hf, TOKEN_DEFAULTS, MODEL_TYPE),
        moe=MoeConfig(
            num_experts=hf.get("num_local_experts", 8),
            top_k=hf.get("num_experts_per_tok", 2),
            normalize=True,
            load_balance_weight=hf.get("router_aux_loss_coef", 0.001),
        ),
    )


def config_to_hf(cfg: ModelConfig) -> dict:
    """The Mixtral ``config.json`` of an archzoo config.

    Raises:
      ValueError: naming each field the format cannot hold (a dense layer, a shared expert,
        unnormalised routing weights, capacity dispatch, biases, ...).
    """
    if cfg.moe is None:
        raise ValueError(f"model_type {MODEL_TYPE!r} cannot hold this config: moe=None (every Mixtral layer is MoE; a dense model is 'mistral')")
    att, moe = cfg.attention, cfg.moe
    hf = {
        "model_type": MODEL_TYPE,
        "architectures": ["MixtralForCausalLM"],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": moe.expert_width(cfg.mlp.d_ff),
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": att.num_heads,
        "num_key_value_heads": att.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": _ACTIVATION_TO_HF[cfg.mlp.activation],
        "rms_norm_eps": cfg.norm.eps,
        "max_position_embeddings": cfg.position.max_len,
        "rope_theta": cfg.position.rope_theta,
        "rope_parameters": _rope_to_hf(cfg.position),
        "sliding_window": att.sliding_window,
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
    r = TensorReader(tensors, MODEL_TYPE, ("model.", ""), "embed_tokens.weight")
    H, G = cfg.attention.num_heads, cfg.attention.kv_heads
    E, D, F = cfg.moe.experts, cfg.d_model, cfg.moe.expert_width(cfg.mlp.d_ff)
    out = {"embed/table": r.take("embed_tokens.weight")}
    for i in range(cfg.num_layers):
        hf, az = f"layers.{i}.", f"stack/blocks/{i}/"
        out |= qkv_from_linear(r, hf + "self_attn.", az + "attn/", {"q": H, "k": G, "v": G}, False)
        out[az + "attn/o"] = out_from_linear(r.take(hf + "self_attn.o_proj.weight"), H)
        moe = _moe_prefix(r, i)
        out[az + "mlp/router"] = take_shaped(r, moe + "gate.weight", (E, D), "[experts, d_model]").T
        out |= experts_from_hf(r, moe + "experts.", az + "mlp/", EXPERTS, (E, D, F))
        out[az + "attn_norm/scale"] = r.take(hf + "input_layernorm.weight")
        out[az + "mlp_norm/scale"] = r.take(hf + "post_attention_layernorm.weight")
    out["stack/final_norm/scale"] = r.take("norm.weight")
    out |= head_from_hf(r, cfg)
    r.finish(ignore=(r"rotary_emb\.inv_freq$",))
    return out


def weights_to_hf(params: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Mixtral tensors in the checkpoint layout (``model.layers.N.block_sparse_moe.*``,
    ``lm_head.weight`` when untied) from archzoo parameters."""
    p = params
    out = {"model.embed_tokens.weight": p["embed/table"]}
    for i in range(cfg.num_layers):
        hf, az = f"model.layers.{i}.", f"stack/blocks/{i}/"
        out |= qkv_to_linear(p, az + "attn/", hf + "self_attn.", False)
        out[hf + "self_attn.o_proj.weight"] = out_to_linear(p[az + "attn/o"])
        out[hf + "block_sparse_moe.gate.weight"] = p[az + "mlp/router"].T
        out |= experts_to_hf(p, az + "mlp/", hf + "block_sparse_moe.experts.", EXPERTS)
        out[hf + "input_layernorm.weight"] = p[az + "attn_norm/scale"]
        out[hf + "post_attention_layernorm.weight"] = p[az + "mlp_norm/scale"]
    out["model.norm.weight"] = p["stack/final_norm/scale"]
    return out | head_to_hf(p, cfg)
