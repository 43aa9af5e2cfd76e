"""BLOOM (BigScience 2022) from and to Hugging Face ``model_type: bloom``.

BLOOM uses ALiBi, a LayerNorm right after the embedding, and one fused ``query_key_value``
projection whose ``3 D`` output rows are ordered per head: for head h, its q, k and v rows
(``[H, 3, Dh]``).
"""

from __future__ import annotations

import numpy as np

from archzoo.convert.common import (
    TensorReader,
    finish_config,
    fused_qkv_from_hf,
    fused_qkv_to_hf,
    head_from_hf,
    head_to_hf,
    out_from_linear,
    out_to_linear,
    refuse,
    token_ids_from_hf,
)
from archzoo.models.config import AttentionConfig, EmbeddingConfig, MlpConfig, ModelConfig, NormConfig, PositionConfig

__all__ = ["config_from_hf", "config_to_hf", "weights_from_hf", "weights_to_hf"]

# The special-token ids of the transformers config class, for keys a config.json lacks.
TOKEN_DEFAULTS = dict(bos=1, eos=2)

MODEL_TYPE = "bloom"


def config_from_hf(hf: dict) -> ModelConfig:
    """The archzoo config of a BLOOM ``config.json``.

    Args:
      hf: the parsed ``config.json``.

    Returns:
      a ``decoder`` ModelConfig named ``bloom`` (ALiBi, embedding norm, GELU MLP of width 4 D).

    Raises:
      ValueError: for ``apply_residual_connection_post_layernorm`` (the residual taken after the
        norm), which archzoo's blocks do not have.
    """
    if hf.get("apply_residual_connection_post_layernorm", False):
        raise refuse(MODEL_TYPE, "apply_residual_connection_post_layernorm", True, "archzoo adds the residual before the norm")
    D = hf.get("hidden_size", hf.get("n_embed", 64))
    return ModelConfig(
        family="decoder",
        name=MODEL_TYPE,
        vocab_size=hf.get("vocab_size", 250880),
        d_model=D,
        num_layers=hf.get("n_layer", hf.get("num_hidden_layers", 2)),
        attention=AttentionConfig(num_heads=hf.get("n_head", hf.get("num_attention_heads", 8)), bias=True, out_bias=True),
        mlp=MlpConfig(d_ff=4 * D, activation="gelu_tanh", gated=False, bias=True),
        norm=NormConfig(
            kind="layernorm",
            eps=hf.get("layer_norm_epsilon", 1e-5),
            bias=True,
            placement="pre",
            embedding_norm=True,
            final_norm=True,
        ),
        position=PositionConfig(kind="alibi"),
        embedding=EmbeddingConfig(tie=hf.get("tie_word_embeddings", True)),
        token_ids=token_ids_from_hf(hf, TOKEN_DEFAULTS, MODEL_TYPE),
    )


def config_to_hf(cfg: ModelConfig) -> dict:
    """The BLOOM ``config.json`` of an archzoo config.

    Raises:
      ValueError: naming each field BLOOM cannot hold (an MLP width other than 4 D, ...).
    """
    hf = {
        "model_type": MODEL_TYPE,
        "architectures": ["BloomForCausalLM"],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "n_layer": cfg.num_layers,
        "n_head": cfg.attention.num_heads,
        "layer_norm_epsilon": cfg.norm.eps,
        "apply_residual_connection_post_layernorm": False,
    }
    return finish_config(cfg, hf, config_from_hf, MODEL_TYPE)


def weights_from_hf(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Archzoo parameters from BLOOM tensors.

    Args:
      tensors: Hugging Face name -> array (``transformer.h.0.self_attention.query_key_value.weight``
        ``[3 D, D]``, rows ordered ``(H, 3, Dh)``).
      cfg: the converted config.

    Returns:
      archzoo path -> array.
    """
    r = TensorReader(tensors, MODEL_TYPE, ("transformer.", ""), "word_embeddings.weight")
    H = cfg.attention.num_heads
    out = {
        "embed/table": r.take("word_embeddings.weight"),
        "stack/embed_norm/scale": r.take("word_embeddings_layernorm.weight"),
        "stack/embed_norm/bias": r.take("word_embeddings_layernorm.bias"),
    }
    for i in range(cfg.num_layers):
        hf, az = f"h.{i}.", f"stack/blocks/{i}/"
        out |= fused_qkv_from_hf(r, hf + "self_attention.query_key_value", az + "attn/", "(H S K) D", "(H S K)", H)
        out |= {
            az + "attn/o": out_from_linear(r.take(hf + "self_attention.dense.weight"), H),
            az + "attn/o_bias": r.take(hf + "self_attention.dense.bias"),
            az + "attn_norm/scale": r.take(hf + "input_layernorm.weight"),
            az + "attn_norm/bias": r.take(hf + "input_layernorm.bias"),
            az + "mlp_norm/scale": r.take(hf + "post_attention_layernorm.weight"),
            az + "mlp_norm/bias": r.take(hf + "post_attention_layernorm.bias"),
            az + "mlp/up": r.take(hf + "mlp.dense_h_to_4h.weight").T,
            az + "mlp/up_bias": r.take(hf + "mlp.dense_h_to_4h.bias"),
            az + "mlp/down": r.take(hf + "mlp.dense_4h_to_h.weight").T,
            az + "mlp/down_bias": r.take(hf + "mlp.dense_4h_to_h.bias"),
        }
    out["stack/final_norm/scale"] = r.take("ln_f.weight")
    out["stack/final_norm/bias"] = r.take("ln_f.bias")
    out |= head_from_hf(r, cfg)
    r.finish()
    return out


def weights_to_hf(params: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """BLOOM tensors (``transformer.*``, ``lm_head.weight`` when untied) from archzoo parameters."""
    p = params
    out = {
        "transformer.word_embeddings.weight": p["embed/table"],
        "transformer.word_embeddings_layernorm.weight": p["stack/embed_norm/scale"],
        "transformer.word_embeddings_layernorm.bias": p["stack/embed_norm/bias"],
    }
    for i in range(cfg.num_layers):
        hf, az = f"transformer.h.{i}.", f"stack/blocks/{i}/"
        out |= fused_qkv_to_hf(p, az + "attn/", hf + "self_attention.query_key_value", "(H S K) D", "(H S K)")
        out |= {
            hf + "self_attention.dense.weight": out_to_linear(p[az + "attn/o"]),
            hf + "self_attention.dense.bias": p[az + "attn/o_bias"],
            hf + "input_layernorm.weight": p[az + "attn_norm/scale"],
            hf + "input_layernorm.bias": p[az + "attn_norm/bias"],
            hf + "post_attention_layernorm.weight": p[az + "mlp_norm/scale"],
            hf + "post_attention_layernorm.bias": p[az + "mlp_norm/bias"],
            hf + "mlp.dense_h_to_4h.weight": p[az + "mlp/up"].T,
            hf + "mlp.dense_h_to_4h.bias": p[az + "mlp/up_bias"],
            hf + "mlp.dense_4h_to_h.weight": p[az + "mlp/down"].T,
            hf + "mlp.dense_4h_to_h.bias": p[az + "mlp/down_bias"],
        }
    out["transformer.ln_f.weight"] = p["stack/final_norm/scale"]
    out["transformer.ln_f.bias"] = p["stack/final_norm/bias"]
    return out | head_to_hf(p, cfg)
