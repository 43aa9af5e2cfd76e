"""Llama (Touvron et al. 2023) and Mistral (Jiang et al. 2023) from and to Hugging Face
``model_type: llama`` and ``model_type: mistral``.

Both are pre-RMSNorm decoders with SwiGLU, grouped-query attention and RoPE in the rotate-half
layout that archzoo uses too, so projections need no permutation. Mistral adds a sliding window
(keys ``i - w < j <= i``); Llama 3 adds RoPE frequency scaling (``rope_type: llama3``).
Transformers 5 keeps the RoPE settings in ``rope_parameters``; older configs in ``rope_theta``
and ``rope_scaling``. Both are read; ``rope_parameters`` (with ``rope_theta`` beside it) is
written.
"""

from __future__ import annotations

import numpy as np

from archzoo.convert.common import (
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
from archzoo.models.config import (
    AttentionConfig,
    EmbeddingConfig,
    MlpConfig,
    ModelConfig,
    NormConfig,
    PositionConfig,
    RopeScaling,
)

__all__ = ["config_from_hf", "config_to_hf", "weights_from_hf", "weights_to_hf"]

# The special-token ids of the transformers config class, for keys a config.json lacks.
TOKEN_DEFAULTS = dict(bos=1, eos=2)
# The sizes of the transformers config class, for keys a config.json lacks.
DEFAULTS = dict(hidden_size=4096, num_attention_heads=32, vocab_size=32000, num_hidden_layers=32, intermediate_size=11008, rms_norm_eps=1e-6)
# archzoo MLP weight -> the SwiGLU projection of Llama-style decoders
MLP = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}

_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}
_ACTIVATION_TO_HF = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}
_LLAMA3_KEYS = {
    "factor": "factor",
    "low_freq_factor": "low_freq_factor",
    "high_freq_factor": "high_freq_factor",
    "original_max_position_embeddings": "original_max_position",
}


def _rope_from_hf(hf: dict, model_type: str) -> PositionConfig:
    """RoPE settings from ``rope_parameters`` (transformers 5) or ``rope_theta``/``rope_scaling``."""
    params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if any(isinstance(v, dict) for v in params.values()):
        raise refuse(model_type, "rope_parameters", params, "RoPE settings per layer type are not supported")
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))
    partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise refuse(model_type, "partial_rotary_factor", partial, "archzoo rotates the whole head")
    max_len = hf.get("max_position_embeddings", 2048)
    if rope_type == "default":
        return PositionConfig(kind="rope", max_len=max_len, rope_theta=theta)
    if rope_type != "llama3":
        raise refuse(model_type, "rope_type", rope_type, "supported: default, llama3")
    values = {"original_max_position_embeddings": hf.get("original_max_position_embeddings", max_len)} | params
    missing = [k for k in _LLAMA3_KEYS if k not in values]
    if missing:
        raise refuse(model_type, "rope_parameters", params, f"llama3 RoPE scaling needs {', '.join(missing)}")
    scaling = RopeScaling(**{ours: values[theirs] for theirs, ours in _LLAMA3_KEYS.items()})
    return PositionConfig(kind="rope", max_len=max_len, rope_theta=theta, rope_scaling=scaling)


def _rope_to_hf(pos: PositionConfig) -> dict:
    params = {"rope_type": "default", "rope_theta": pos.rope_theta}
    if pos.rope_scaling is not None:
        params["rope_type"] = "llama3"
        params |= {theirs: getattr(pos.rope_scaling, ours) for theirs, ours in _LLAMA3_KEYS.items()}
    return params


def decoder_config_from_hf(hf: dict, model_type: str, defaults: dict, token_defaults: dict, moe=None, **attention) -> ModelConfig:
    """The archzoo config of a Llama-style decoder ``config.json``: pre-RMSNorm, grouped-query
    attention, a SwiGLU MLP of width ``intermediate_size`` and RoPE.

    Args:
      hf: the parsed ``config.json``.
      model_type: the config's name, and the model type named in errors.
      defaults: the values of ``hidden_size``, ``num_attention_heads``, ``vocab_size``,
        ``num_hidden_layers``, ``intermediate_size`` and ``rms_norm_eps`` for a config.json that
        lacks them.
      token_defaults: the special-token ids for keys a config.json lacks.
      moe: the MoE layers, if any.
      **attention: the other AttentionConfig fields (``bias``, ``sliding_window``, ...).

    Raises:
      ValueError: for RoPE variants other than the default and Llama 3's.
    """
    D, H = hf.get("hidden_size", defaults["hidden_size"]), hf.get("num_attention_heads", defaults["num_attention_heads"])
    G = hf.get("num_key_value_heads") or H
    head_dim = hf.get("head_dim") or D // H
    return ModelConfig(
        family="decoder",
        name=model_type,
        vocab_size=hf.get("vocab_size", defaults["vocab_size"]),
        d_model=D,
        num_layers=hf.get("num_hidden_layers", defaults["num_hidden_layers"]),
        attention=AttentionConfig(
            num_heads=H,
            num_kv_heads=None if G == H else G,
            head_dim=None if head_dim == D // H else head_dim,
            **attention,
        ),
        mlp=MlpConfig(
            d_ff=hf.get("intermediate_size", defaults["intermediate_size"]),
            activation=activation_from_hf(model_type, "hidden_act", hf.get("hidden_act", "silu")),
            gated=True,
            bias=False,
        ),
        norm=NormConfig(kind="rmsnorm", eps=hf.get("rms_norm_eps", defaults["rms_norm_eps"]), bias=False, placement="pre", final_norm=True),
        position=_rope_from_hf(hf, model_type),
        embedding=EmbeddingConfig(tie=hf.get("tie_word_embeddings", False)),
        token_ids=token_ids_from_hf(hf, token_defaults, model_type),
        moe=moe,
    )


def decoder_config_to_hf(cfg: ModelConfig, model_type: str, architecture: str, d_ff: int) -> dict:
    """The ``config.json`` keys every Llama-style decoder shares (sizes, activation, norm, RoPE),
    with ``intermediate_size`` ``d_ff``."""
    att = cfg.attention
    return {
        "model_type": model_type,
        "architectures": [architecture],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": d_ff,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": att.num_heads,
        "num_key_value_heads": att.kv_heads,
        "hidden_act": _ACTIVATION_TO_HF[cfg.mlp.activation],
        "rms_norm_eps": cfg.norm.eps,
        "max_position_embeddings": cfg.position.max_len,
        "rope_theta": cfg.position.rope_theta,
        "rope_parameters": _rope_to_hf(cfg.position),
    }


def mlp_from_hf(r: TensorReader, hf: str, az: str) -> dict[str, np.ndarray]:
    """A SwiGLU MLP's ``{hf}{gate,up,down}_proj.weight`` as ``{az}{gate,up,down}`` ``[in, out]``."""
    return {az + ours: r.take(hf + f"{theirs}.weight").T for ours, theirs in MLP.items()}


def mlp_to_hf(p: dict[str, np.ndarray], az: str, hf: str) -> dict[str, np.ndarray]:
    """The inverse of :func:`mlp_from_hf`."""
    return {hf + f"{theirs}.weight": p[az + ours].T for ours, theirs in MLP.items()}


def decoder_weights_from_hf(tensors: dict[str, np.ndarray], cfg: ModelConfig, model_type: str, layer_from_hf) -> dict[str, np.ndarray]:
    """Archzoo parameters from the tensors of a Llama-style decoder.

    Reads the embedding, each layer's attention and norms, the final norm and the head;
    ``layer_from_hf(r, i, hf, az)`` returns the rest of layer ``i`` (its MLP or MoE layer) from
    the Hugging Face prefix ``hf`` (``layers.{i}.``) at the archzoo prefix ``az``
    (``stack/blocks/{i}/``).

    Raises:
      ValueError: naming a missing tensor or a tensor archzoo would not use.
    """
    r = TensorReader(tensors, model_type, ("model.", ""), "embed_tokens.weight")
    att = cfg.attention
    H, G = att.num_heads, att.kv_heads
    out = {"embed/table": r.take("embed_tokens.weight")}
    for i in range(cfg.num_layers):
        hf, az = f"layers.{i}.", f"stack/blocks/{i}/"
        out |= qkv_from_linear(r, hf + "self_attn.", az + "attn/", {"q": H, "k": G, "v": G}, att.bias)
        out[az + "attn/o"] = out_from_linear(r.take(hf + "self_attn.o_proj.weight"), H)
        if att.out_bias:
            out[az + "attn/o_bias"] = r.take(hf + "self_attn.o_proj.bias")
        out |= layer_from_hf(r, i, hf, az)
        out[az + "attn_norm/scale"] = r.take(hf + "input_layernorm.weight")
        out[az + "mlp_norm/scale"] = r.take(hf + "post_attention_layernorm.weight")
    out["stack/final_norm/scale"] = r.take("norm.weight")
    out |= head_from_hf(r, cfg)
    r.finish(ignore=(r"rotary_emb\.inv_freq$",))
    return out


def decoder_weights_to_hf(params: dict[str, np.ndarray], cfg: ModelConfig, layer_to_hf) -> dict[str, np.ndarray]:
    """The tensors of a Llama-style decoder (``model.*``, ``lm_head.weight`` when untied) from
    archzoo parameters; ``layer_to_hf(p, i, hf, az)`` returns the rest of layer ``i``, the inverse
    of :func:`decoder_weights_from_hf`'s ``layer_from_hf`` (with ``hf`` ``model.layers.{i}.``)."""
    p = params
    out = {"model.embed_tokens.weight": p["embed/table"]}
    for i in range(cfg.num_layers):
        hf, az = f"model.layers.{i}.", f"stack/blocks/{i}/"
        out |= qkv_to_linear(p, az + "attn/", hf + "self_attn.", cfg.attention.bias)
        out[hf + "self_attn.o_proj.weight"] = out_to_linear(p[az + "attn/o"])
        if cfg.attention.out_bias:
            out[hf + "self_attn.o_proj.bias"] = p[az + "attn/o_bias"]
        out |= layer_to_hf(p, i, hf, az)
        out[hf + "input_layernorm.weight"] = p[az + "attn_norm/scale"]
        out[hf + "post_attention_layernorm.weight"] = p[az + "mlp_norm/scale"]
    out["model.norm.weight"] = p["stack/final_norm/scale"]
    return out | head_to_hf(p, cfg)


def config_from_hf(hf: dict) -> ModelConfig:
    """The archzoo config of a Llama or Mistral ``config.json``.

    Args:
      hf: the parsed ``config.json`` (``model_type`` ``llama`` or ``mistral``).

    Returns:
      a ``decoder`` ModelConfig named after the model type.

    Raises:
      ValueError: for ``mlp_bias`` (archzoo's gated MLP has no gate bias) and RoPE variants other
        than the default and Llama 3's.
    """
    model_type = hf.get("model_type", "llama")
    if hf.get("mlp_bias", False):
        raise refuse(model_type, "mlp_bias", True, "archzoo's gated MLP has no bias on its gate projection")
    bias = hf.get("attention_bias", False) if model_type == "llama" else False
    window = hf.get("sliding_window") if model_type == "mistral" else None
    return decoder_config_from_hf(hf, model_type, DEFAULTS, TOKEN_DEFAULTS, bias=bias, out_bias=bias, sliding_window=window)


def config_to_hf(cfg: ModelConfig) -> dict:
    """The Llama or Mistral ``config.json`` of an archzoo config.

    The model type is ``cfg.name`` when it is ``llama`` or ``mistral``; otherwise ``mistral`` when
    the config has a sliding window, else ``llama``.

    Raises:
      ValueError: naming each field the format cannot hold (a sliding window in Llama, biases in
        Mistral, LayerNorm, learned positions, ...).
    """
    model_type = cfg.name if cfg.name in _ARCHITECTURES else ("mistral" if cfg.attention.sliding_window else "llama")
    att = cfg.attention
    hf = decoder_config_to_hf(cfg, model_type, _ARCHITECTURES[model_type], cfg.mlp.d_ff) | {"head_dim": cfg.head_dim}
    if model_type == "llama":
        hf |= {"attention_bias": att.bias, "mlp_bias": False}
    else:
        hf["sliding_window"] = att.sliding_window
    return finish_config(cfg, hf, config_from_hf, model_type)


def weights_from_hf(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Archzoo parameters from Llama or Mistral tensors.

    Args:
      tensors: Hugging Face name -> array (``model.layers.0.self_attn.k_proj.weight``
        ``[G * Dh, D]``).
      cfg: the converted config.

    Returns:
      archzoo path -> array (``stack/blocks/0/attn/k`` ``[D, G, Dh]``).
    """
    return decoder_weights_from_hf(tensors, cfg, cfg.name, lambda r, i, hf, az: mlp_from_hf(r, hf + "mlp.", az + "mlp/"))


def weights_to_hf(params: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Llama or Mistral tensors (``model.*``, ``lm_head.weight`` when untied) from archzoo
    parameters."""
    return decoder_weights_to_hf(params, cfg, lambda p, i, hf, az: mlp_to_hf(p, az + "mlp/", hf + "mlp."))
