"""OPT (Zhang et al. 2022) from and to Hugging Face ``model_type: opt``.

OPT reads its learned position table at ``position + 2`` (two unused rows first), uses ReLU, and
normalises before each sublayer (``do_layer_norm_before``, most sizes) or after the residual add
with no final norm (OPT-350m).
"""

from __future__ import annotations

import numpy as np

from archzoo.convert.common import (
    ACTIVATION_TO_HF,
    TensorReader,
    activation_from_hf,
    finish_config,
    head_from_hf,
    head_to_hf,
    out_from_linear,
    out_to_linear,
    qkv_from_linear,
    qkv_to_linear,
    refuse,
    token_ids_from_hf,
)
from archzoo.models.config import AttentionConfig, EmbeddingConfig, MlpConfig, ModelConfig, NormConfig, PositionConfig

__all__ = ["config_from_hf", "config_to_hf", "weights_from_hf", "weights_to_hf"]

# The special-token ids of the transformers config class, for keys a config.json lacks.
TOKEN_DEFAULTS = dict(bos=2, eos=2, pad=1)

MODEL_TYPE = "opt"
OFFSET = 2


def config_from_hf(hf: dict) -> ModelConfig:
    """The archzoo config of an OPT ``config.json``.

    Args:
      hf: the parsed ``config.json``.

    Returns:
      a ``decoder`` ModelConfig named ``opt``: pre-norm with a final norm when
      ``do_layer_norm_before``, else post-norm without one.

    Raises:
      ValueError: when ``word_embed_proj_dim`` differs from ``hidden_size`` (OPT-350m's
        projections around the stack) or the LayerNorms have no weights.
    """
    D = hf.get("hidden_size", 768)
    proj = hf.get("word_embed_proj_dim") or D
    if proj != D:
        raise refuse(MODEL_TYPE, "word_embed_proj_dim", proj, f"differs from hidden_size={D}; archzoo has no project_in/project_out")
    if not hf.get("layer_norm_elementwise_affine", True):
        raise refuse(MODEL_TYPE, "layer_norm_elementwise_affine", False, "archzoo's LayerNorm always has a scale and bias")
    pre = hf.get("do_layer_norm_before", True)
    bias = hf.get("enable_bias", True)
    return ModelConfig(
        family="decoder",
        name=MODEL_TYPE,
        vocab_size=hf.get("vocab_size", 50272),
        d_model=D,
        num_layers=hf.get("num_hidden_layers", 12),
        attention=AttentionConfig(num_heads=hf.get("num_attention_heads", 12), bias=bias, out_bias=bias),
        mlp=MlpConfig(
            d_ff=hf.get("ffn_dim", 3072),
            activation=activation_from_hf(MODEL_TYPE, "activation_function", hf.get("activation_function", "relu")),
            gated=False,
            bias=bias,
        ),
        norm=NormConfig(
            kind="layernorm",
            eps=1e-5,
            bias=True,
            placement="pre" if pre else "post",
            final_norm=pre and not hf.get("_remove_final_layer_norm", False),
        ),
        position=PositionConfig(kind="learned", max_len=hf.get("max_position_embeddings", 2048), offset=OFFSET),
        embedding=EmbeddingConfig(tie=hf.get("tie_word_embeddings", True)),
        token_ids=token_ids_from_hf(hf, TOKEN_DEFAULTS, MODEL_TYPE),
    )


def config_to_hf(cfg: ModelConfig) -> dict:
    """The OPT ``config.json`` of an archzoo config.

    Raises:
      ValueError: naming each field OPT cannot hold.
    """
    pre = cfg.norm.placement == "pre"
    hf = {
        "model_type": MODEL_TYPE,
        "architectures": ["OPTForCausalLM"],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "word_embed_proj_dim": cfg.d_model,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.attention.num_heads,
        "ffn_dim": cfg.mlp.d_ff,
        "max_position_embeddings": cfg.position.max_len,
        "activation_function": ACTIVATION_TO_HF[cfg.mlp.activation],
        "do_layer_norm_before": pre,
        "_remove_final_layer_norm": pre and not cfg.norm.final_norm,
        "enable_bias": cfg.attention.bias,
        "layer_norm_elementwise_affine": True,
    }
    return finish_config(cfg, hf, config_from_hf, MODEL_TYPE)


def weights_from_hf(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Archzoo parameters from OPT tensors.

    Args:
      tensors: Hugging Face name -> array (``model.decoder.layers.0.self_attn.q_proj.weight``
        ``[D, D]``, ``model.decoder.embed_positions.weight`` ``[2 + max_len, D]``).
      cfg: the converted config.

    Returns:
      archzoo path -> array.
    """
    r = TensorReader(tensors, MODEL_TYPE, ("model.decoder.", "decoder.", ""), "embed_tokens.weight")
    H = cfg.attention.num_heads
    out = {"embed/table": r.take("embed_tokens.weight"), "stack/positions/table": r.take("embed_positions.weight")}
    for i in range(cfg.num_layers):
        hf, az = f"layers.{i}.", f"stack/blocks/{i}/"
        out |= qkv_from_linear(r, hf + "self_attn.", az + "attn/", {"q": H, "k": H, "v": H}, cfg.attention.bias)
        out[az + "attn/o"] = out_from_linear(r.take(hf + "self_attn.out_proj.weight"), H)
        out[az + "mlp/up"] = r.take(hf + "fc1.weight").T
        out[az + "mlp/down"] = r.take(hf + "fc2.weight").T
        if cfg.attention.bias:
            out[az + "attn/o_bias"] = r.take(hf + "self_attn.out_proj.bias")
            out[az + "mlp/up_bias"] = r.take(hf + "fc1.bias")
            out[az + "mlp/down_bias"] = r.take(hf + "fc2.bias")
        for az_norm, hf_norm in (("attn_norm", "self_attn_layer_norm"), ("mlp_norm", "final_layer_norm")):
            out[az + f"{az_norm}/scale"] = r.take(hf + f"{hf_norm}.weight")
            out[az + f"{az_norm}/bias"] = r.take(hf + f"{hf_norm}.bias")
    if cfg.norm.final_norm:
        out["stack/final_norm/scale"] = r.take("final_layer_norm.weight")
        out["stack/final_norm/bias"] = r.take("final_layer_norm.bias")
    out |= head_from_hf(r, cfg)
    r.finish()
    return out


def weights_to_hf(params: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """OPT tensors (``model.decoder.*``, ``lm_head.weight`` when untied) from archzoo parameters."""
    p, pre = params, "model.decoder."
    out = {pre + "embed_tokens.weight": p["embed/table"], pre + "embed_positions.weight": p["stack/positions/table"]}
    for i in range(cfg.num_layers):
        hf, az = f"{pre}layers.{i}.", f"stack/blocks/{i}/"
        out |= qkv_to_linear(p, az + "attn/", hf + "self_attn.", cfg.attention.bias)
        out[hf + "self_attn.out_proj.weight"] = out_to_linear(p[az + "attn/o"])
        out[hf + "fc1.weight"] = p[az + "mlp/up"].T
        out[hf + "fc2.weight"] = p[az + "mlp/down"].T
        if cfg.attention.bias:
            out[hf + "self_attn.out_proj.bias"] = p[az + "attn/o_bias"]
            out[hf + "fc1.bias"] = p[az + "mlp/up_bias"]
            out[hf + "fc2.bias"] = p[az + "mlp/down_bias"]
        for az_norm, hf_norm in (("attn_norm", "self_attn_layer_norm"), ("mlp_norm", "final_layer_norm")):
            out[hf + f"{hf_norm}.weight"] = p[az + f"{az_norm}/scale"]
            out[hf + f"{hf_norm}.bias"] = p[az + f"{az_norm}/bias"]
    if cfg.norm.final_norm:
        out[pre + "final_layer_norm.weight"] = p["stack/final_norm/scale"]
        out[pre + "final_layer_norm.bias"] = p["stack/final_norm/bias"]
    return out | head_to_hf(p, cfg)
