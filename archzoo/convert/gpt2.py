"""GPT-2 (Radford et al. 2019) from and to Hugging Face ``model_type: gpt2``.

GPT-2's Conv1D layers store weights as ``[in, out]``, and ``c_attn`` holds q, k and v side by
side along its output axis, each head-major ``(H, Dh)``.
"""

from __future__ import annotations

import numpy as np
from einops import rearrange

from archzoo.convert.common import (
    ACTIVATION_TO_HF,
    TensorReader,
    activation_from_hf,
    finish_config,
    fused_qkv_from_hf,
    fused_qkv_to_hf,
    head_from_hf,
    head_to_hf,
    refuse,
    token_ids_from_hf,
)
from archzoo.models.config import AttentionConfig, EmbeddingConfig, MlpConfig, ModelConfig, NormConfig, PositionConfig

__all__ = ["config_from_hf", "config_to_hf", "weights_from_hf", "weights_to_hf"]

# The special-token ids of the transformers config class, for keys a config.json lacks.
TOKEN_DEFAULTS = dict(bos=50256, eos=50256)

MODEL_TYPE = "gpt2"


def config_from_hf(hf: dict) -> ModelConfig:
    """The archzoo config of a GPT-2 ``config.json``.

    Args:
      hf: the parsed ``config.json``.

    Returns:
      a ``decoder`` ModelConfig named ``gpt2``.

    Raises:
      ValueError: for settings archzoo has no equivalent of (cross-attention, attention scaled by
        the inverse layer index).
    """
    for key in ("add_cross_attention", "scale_attn_by_inverse_layer_idx"):
        if hf.get(key, False):
            raise refuse(MODEL_TYPE, key, hf[key], "archzoo's decoder has no such attention")
    D = hf.get("n_embd", 768)
    return ModelConfig(
        family="decoder",
        name=MODEL_TYPE,
        vocab_size=hf.get("vocab_size", 50257),
        d_model=D,
        num_layers=hf.get("n_layer", 12),
        attention=AttentionConfig(num_heads=hf.get("n_head", 12), bias=True, out_bias=True, scale=hf.get("scale_attn_weights", True)),
        mlp=MlpConfig(
            d_ff=hf.get("n_inner") or 4 * D,
            activation=activation_from_hf(MODEL_TYPE, "activation_function", hf.get("activation_function", "gelu_new")),
            gated=False,
            bias=True,
        ),
        norm=NormConfig(kind="layernorm", eps=hf.get("layer_norm_epsilon", 1e-5), bias=True, placement="pre", final_norm=True),
        position=PositionConfig(kind="learned", max_len=hf.get("n_positions", 1024), offset=0),
        embedding=EmbeddingConfig(tie=hf.get("tie_word_embeddings", True)),
        token_ids=token_ids_from_hf(hf, TOKEN_DEFAULTS, MODEL_TYPE),
    )


def config_to_hf(cfg: ModelConfig) -> dict:
    """The GPT-2 ``config.json`` of an archzoo config.

    Raises:
      ValueError: naming each field GPT-2 cannot hold (RMSNorm, RoPE, gated MLP, ...).
    """
    hf = {
        "model_type": MODEL_TYPE,
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size,
        "n_embd": cfg.d_model,
        "n_layer": cfg.num_layers,
        "n_head": cfg.attention.num_heads,
        "n_inner": cfg.mlp.d_ff,
        "n_positions": cfg.position.max_len,
        "activation_function": ACTIVATION_TO_HF[cfg.mlp.activation],
        "layer_norm_epsilon": cfg.norm.eps,
        "scale_attn_weights": cfg.attention.scale,
    }
    return finish_config(cfg, hf, config_from_hf, MODEL_TYPE)


def weights_from_hf(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Archzoo parameters from GPT-2 tensors.

    Args:
      tensors: Hugging Face name -> array (``transformer.h.0.attn.c_attn.weight`` ``[D, 3D]``).
      cfg: the converted config.

    Returns:
      archzoo path -> array (``stack/blocks/0/attn/q`` ``[D, H, Dh]``).
    """
    r = TensorReader(tensors, MODEL_TYPE, ("transformer.", ""), "wte.weight")
    H = cfg.attention.num_heads
    out = {"embed/table": r.take("wte.weight"), "stack/positions/table": r.take("wpe.weight")}
    for i in range(cfg.num_layers):
        hf, az = f"h.{i}.", f"stack/blocks/{i}/"
        out |= fused_qkv_from_hf(r, hf + "attn.c_attn", az + "attn/", "D (S H K)", "(S H K)", H)
        out |= {
            az + "attn/o": rearrange(r.take(hf + "attn.c_proj.weight"), "(H K) D -> H K D", H=H),
            az + "attn/o_bias": r.take(hf + "attn.c_proj.bias"),
            az + "attn_norm/scale": r.take(hf + "ln_1.weight"),
            az + "attn_norm/bias": r.take(hf + "ln_1.bias"),
            az + "mlp_norm/scale": r.take(hf + "ln_2.weight"),
            az + "mlp_norm/bias": r.take(hf + "ln_2.bias"),
            az + "mlp/up": r.take(hf + "mlp.c_fc.weight"),
            az + "mlp/up_bias": r.take(hf + "mlp.c_fc.bias"),
            az + "mlp/down": r.take(hf + "mlp.c_proj.weight"),
            az + "mlp/down_bias": r.take(hf + "mlp.c_proj.bias"),
        }
    out["stack/final_norm/scale"] = r.take("ln_f.weight")
    out["stack/final_norm/bias"] = r.take("ln_f.bias")
    out |= head_from_hf(r, cfg)
    r.finish(ignore=(r"attn\.bias$", r"attn\.masked_bias$"))
    return out


def weights_to_hf(params: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """GPT-2 tensors (``transformer.*``, ``lm_head.weight`` when untied) from archzoo parameters."""
    p = params
    out = {"transformer.wte.weight": p["embed/table"], "transformer.wpe.weight": p["stack/positions/table"]}
    for i in range(cfg.num_layers):
        hf, az = f"transformer.h.{i}.", f"stack/blocks/{i}/"
        out |= fused_qkv_to_hf(p, az + "attn/", hf + "attn.c_attn", "D (S H K)", "(S H K)")
        out |= {
            hf + "attn.c_proj.weight": rearrange(p[az + "attn/o"], "H K D -> (H K) D"),
            hf + "attn.c_proj.bias": p[az + "attn/o_bias"],
            hf + "ln_1.weight": p[az + "attn_norm/scale"],
            hf + "ln_1.bias": p[az + "attn_norm/bias"],
            hf + "ln_2.weight": p[az + "mlp_norm/scale"],
            hf + "ln_2.bias": p[az + "mlp_norm/bias"],
            hf + "mlp.c_fc.weight": p[az + "mlp/up"],
            hf + "mlp.c_fc.bias": p[az + "mlp/up_bias"],
            hf + "mlp.c_proj.weight": p[az + "mlp/down"],
            hf + "mlp.c_proj.bias": p[az + "mlp/down_bias"],
        }
    out["transformer.ln_f.weight"] = p["stack/final_norm/scale"]
    out["transformer.ln_f.bias"] = p["stack/final_norm/bias"]
    return out | head_to_hf(p, cfg)
