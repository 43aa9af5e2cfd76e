"""T5 (v1.0 and v1.1) <-> the archzoo encoder-decoder family.

T5 is a pre-RMSNorm encoder-decoder without biases or 1/sqrt(d) attention scaling, with a
relative position bias table in the first layer of each stack that every layer of that stack
reuses. v1.0 uses a ReLU MLP and ties the output head to the embedding (scaling the decoder
output by d_model^-0.5 first); v1.1 uses a gated GELU (tanh) MLP and an untied head.

Hugging Face layout: ``shared``, ``lm_head``, ``{encoder,decoder}.block.{i}.layer.{j}`` where
layer 0 is self-attention, layer 1 cross-attention (decoder only), and the last the MLP
(``DenseReluDense.wi`` or ``wi_0`` (activated) and ``wi_1``, then ``wo``).
"""

from __future__ import annotations

import numpy as np

from archzoo.config import ConfigError
from archzoo.convert.common import (
    ACTIVATION_TO_HF,
    ENCODER_DECODER_EMBEDDINGS,
    HF_ACTIVATIONS,
    TIED,
    TensorReader,
    read_pairs,
    shared_table,
    token_ids_from_hf,
    token_ids_to_hf,
    unsupported_fields,
    write_pairs,
)
from archzoo.models.config import (
    AttentionConfig,
    EmbeddingConfig,
    MlpConfig,
    ModelConfig,
    NormConfig,
    PositionConfig,
)

__all__ = ["config_from_hf", "config_to_hf", "weights_from_hf", "weights_to_hf"]

# The special-token ids of the transformers config class, for keys a config.json lacks.
TOKEN_DEFAULTS = dict(eos=1, pad=0)


def config_from_hf(hf: dict) -> ModelConfig:
    """An archzoo config from a T5 ``config.json``.

    Args:
      hf: the parsed ``config.json`` (``model_type`` ``t5``).

    Returns:
      a ``ModelConfig`` of family ``encoder_decoder`` named ``t5``.

    Raises:
      ConfigError: naming the key when the config uses a feature archzoo lacks.
    """
    proj = hf.get("feed_forward_proj", "relu")
    parts = proj.split("-")
    gated = parts[0] == "gated"
    if (gated and len(parts) != 2) or (not gated and len(parts) != 1):
        raise ConfigError(f"config.json: feed_forward_proj={proj!r} is not 'ACT' or 'gated-ACT'")
    act = "gelu_new" if proj == "gated-gelu" else parts[-1]
    if act not in HF_ACTIVATIONS:
        raise ConfigError(f"config.json: feed_forward_proj={proj!r}: activation {act!r} is not one of {sorted(HF_ACTIVATIONS)}")
    # Older configs mark v1.1's untied, unscaled head by tie_word_embeddings=false; newer
    # transformers always tie and record the scaling as scale_decoder_outputs instead.
    rescale = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False)
    num_layers = hf.get("num_layers", 6)
    return ModelConfig(
        family="encoder_decoder",
        name="t5",
        vocab_size=hf.get("vocab_size", 32128),
        d_model=hf.get("d_model", 512),
        num_layers=hf.get("num_decoder_layers") or num_layers,
        num_encoder_layers=num_layers,
        attention=AttentionConfig(
            num_heads=hf.get("num_heads", 8), head_dim=hf.get("d_kv", 64), bias=False, out_bias=False, scale=False
        ),
        mlp=MlpConfig(d_ff=hf.get("d_ff", 2048), activation=HF_ACTIVATIONS[act], gated=gated, bias=False),
        norm=NormConfig(kind="rmsnorm", eps=hf.get("layer_norm_epsilon", 1e-6), bias=False, placement="pre", final_norm=True),
        position=PositionConfig(
            kind="t5_bias",
            max_len=hf.get("n_positions", 512),
            num_buckets=hf.get("relative_attention_num_buckets", 32),
            max_distance=hf.get("relative_attention_max_distance", 128),
        ),
        embedding=EmbeddingConfig(tie=rescale, scale=False, tied_head_rescale=rescale, final_logits_bias=False),
        token_ids=token_ids_from_hf(hf, TOKEN_DEFAULTS, "t5"),
    )


def _check(cfg: ModelConfig) -> None:
    """Raises ConfigError listing every field whose value T5 cannot express."""
    required = {
        "family": "encoder_decoder",
        "parallel_block": False,
        "attention.num_kv_heads": (None, cfg.attention.num_heads),
        "attention.bias": False,
        "attention.out_bias": False,
        "attention.scale": False,
        "attention.sliding_window": None,
        "mlp.bias": False,
        "norm.kind": "rmsnorm",
        "norm.placement": "pre",
        "norm.embedding_norm": False,
        "norm.final_norm": True,
        "position.kind": "t5_bias",
        "embedding.scale": False,
        "embedding.final_logits_bias": False,
    }
    wrong = unsupported_fields(cfg, required, "T5")
    if cfg.mlp.gated and cfg.mlp.activation == "gelu":
        wrong.append("mlp.activation='gelu' with mlp.gated (T5's gated-gelu is gelu_tanh)")
    if wrong:
        raise ConfigError("this config cannot be written as T5: " + "; ".join(wrong))


def _tied(cfg: ModelConfig) -> bool:
    """Whether T5 writes the head as tied: T5 ties exactly when it rescales, so a tied head
    without rescaling is written as an untied copy of the embedding."""
    return cfg.embedding.tie and cfg.embedding.tied_head_rescale


def config_to_hf(cfg: ModelConfig) -> dict:
    """A T5 ``config.json`` (as a dict) for an archzoo config.

    Raises:
      ConfigError: naming the fields T5 cannot express.
    """
    _check(cfg)
    act = ACTIVATION_TO_HF[cfg.mlp.activation]
    if cfg.mlp.gated:
        act = "gelu" if act == "gelu_new" else act
    return {
        "model_type": "t5",
        "architectures": ["T5ForConditionalGeneration"],
        "is_encoder_decoder": True,
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "d_kv": cfg.head_dim,
        "d_ff": cfg.mlp.d_ff,
        "num_layers": cfg.encoder_layers,
        "num_decoder_layers": cfg.num_layers,
        "num_heads": cfg.attention.num_heads,
        "relative_attention_num_buckets": cfg.position.num_buckets,
        "relative_attention_max_distance": cfg.position.max_distance,
        "layer_norm_epsilon": cfg.norm.eps,
        "feed_forward_proj": ("gated-" if cfg.mlp.gated else "") + act,
        "n_positions": cfg.position.max_len,
        "tie_word_embeddings": _tied(cfg),
        "scale_decoder_outputs": _tied(cfg),
    } | token_ids_to_hf(cfg)


def _pairs(cfg: ModelConfig) -> list[tuple[str, str, str]]:
    """(Hugging Face name, archzoo path, how the array maps) for every weight but the embedding
    and head."""
    mlp = [("wi_0", "gate", "linear"), ("wi_1", "up", "linear")] if cfg.mlp.gated else [("wi", "up", "linear")]
    mlp = mlp + [("wo", "down", "linear")]

    def dense(hf: str, az: str, stack: str, i: int) -> list[tuple[str, str, str]]:
        return [(f"{hf}.DenseReluDense.{w}.weight", f"{az}/mlp/{a}", kind) for w, a, kind in mlp]

    return stack_pairs(cfg, dense)


def stack_pairs(cfg: ModelConfig, feed_forward) -> list[tuple[str, str, str]]:
    """The weight table of T5's two stacks (relative bias, attention, cross-attention, norms),
    with each block's feed-forward weights from ``feed_forward(hf, az, stack, i)``: ``hf`` is the
    feed-forward sublayer's name (``encoder.block.3.layer.1``), ``az`` the block's path.
    SwitchTransformers shares it."""
    pairs = []
    for stack, n in (("encoder", cfg.encoder_layers), ("decoder", cfg.num_layers)):
        bias = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        pairs.append((bias, f"{stack}/relative_bias/table", "copy"))
        pairs.append((f"{stack}.final_layer_norm.weight", f"{stack}/final_norm/scale", "copy"))
        for i in range(n):
            hf, az = f"{stack}.block.{i}.layer", f"{stack}/blocks/{i}"
            sublayers = [("0", "SelfAttention", "attn_norm", "attn")]
            if stack == "decoder":
                sublayers.append(("1", "EncDecAttention", "cross_norm", "cross_attn"))
            for j, name, norm, attn in sublayers:
                pairs.append((f"{hf}.{j}.layer_norm.weight", f"{az}/{norm}/scale", "copy"))
                for w in ("q", "k", "v"):
                    pairs.append((f"{hf}.{j}.{name}.{w}.weight", f"{az}/{attn}/{w}", "heads_in"))
                pairs.append((f"{hf}.{j}.{name}.o.weight", f"{az}/{attn}/o", "heads_out"))
            j = len(sublayers)
            pairs.append((f"{hf}.{j}.layer_norm.weight", f"{az}/mlp_norm/scale", "copy"))
            pairs += feed_forward(f"{hf}.{j}", az, stack, i)
    return pairs


def weights_from_hf(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """archzoo parameters from T5 safetensors.

    Args:
      tensors: Hugging Face name -> float32 array.
      cfg: the config from :func:`config_from_hf`.

    Returns:
      archzoo path -> array (``embed/table [V, D]``, ``encoder/blocks/0/attn/q [D, H, Dh]``, ...).

    Raises:
      ValueError: naming a missing tensor, one archzoo would not use, or a head that differs from
        the embedding it should be tied to.
    """
    r = TensorReader(tensors, "t5", ("",), ENCODER_DECODER_EMBEDDINGS)
    # archzoo cannot scale an untied head, so a tied config's lm_head must be the embedding.
    table = shared_table(r, TIED, head=cfg.embedding.tie)
    params = {"embed/table": table}
    if not cfg.embedding.tie:
        # transformers 5 ties T5's head even when untied, and then saves no lm_head.
        params["head/kernel"] = (r.take("lm_head.weight") if r.has("lm_head.weight") else table).T
    params |= read_pairs(r, _pairs(cfg), cfg.head_dim)
    r.finish()
    return params


def weights_to_hf(params: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """T5 tensors from archzoo parameters (inverse of :func:`weights_from_hf`).

    Args:
      params: archzoo path -> array, as from :func:`archzoo.convert.get_params`.
      cfg: the model's config.

    Returns:
      Hugging Face name -> array; ``lm_head.weight`` unless the head is tied and rescaled.
    """
    _check(cfg)
    tensors = {"shared.weight": params["embed/table"]}
    if not _tied(cfg):
        tensors["lm_head.weight"] = params["embed/table"] if cfg.embedding.tie else params["head/kernel"].T
    return tensors | write_pairs(params, _pairs(cfg))
