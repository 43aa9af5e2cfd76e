"""BART <-> the archzoo encoder-decoder family.

BART is a post-LayerNorm encoder-decoder with biases everywhere, learned positions whose table
skips two rows (offset 2), a LayerNorm right after the embedding of each stack, exact GELU, an
output head tied to the shared embedding, and a fixed ``final_logits_bias`` added to the logits.

Hugging Face layout: ``model.shared``, ``model.{encoder,decoder}.embed_positions``,
``layernorm_embedding``, ``layers.{i}.self_attn.{q,k,v,out}_proj``, ``self_attn_layer_norm``,
``encoder_attn`` and ``encoder_attn_layer_norm`` (decoder only), ``fc1``, ``fc2``,
``final_layer_norm`` (the norm after the MLP of each layer), then ``lm_head`` and
``final_logits_bias [1, V]``.

With ``tie_word_embeddings: false`` transformers 5 gives the head its own weights and each stack
its own table (``model.encoder.embed_tokens``, ``model.decoder.embed_tokens``), leaving
``model.shared`` unused. archzoo keeps one table for both stacks, so such a checkpoint converts
when the three tables are equal (checkpoints written before transformers 5 keep only
``model.shared``) and is refused, naming the tensors, when they differ.
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
TOKEN_DEFAULTS = dict(bos=0, eos=2, pad=1, decoder_start=2)

_OFFSET = 2
# Untied, transformers gives each stack its own embedding table (and keeps model.shared unused).
_ONE_TABLE = (
    "archzoo's encoder-decoder has one token embedding for both stacks, so BART with "
    "tie_word_embeddings=false converts only when model.shared, model.encoder.embed_tokens and "
    "model.decoder.embed_tokens hold the same table"
)


def config_from_hf(hf: dict) -> ModelConfig:
    """An archzoo config from a BART ``config.json``.

    Args:
      hf: the parsed ``config.json`` (``model_type`` ``bart``).

    Returns:
      a ``ModelConfig`` of family ``encoder_decoder`` named ``bart``.

    Raises:
      ConfigError: naming the keys when encoder and decoder differ in width or heads (archzoo
        shares one attention and MLP config between its stacks), or the activation is unknown.
    """
    for enc, dec in (("encoder_ffn_dim", "decoder_ffn_dim"), ("encoder_attention_heads", "decoder_attention_heads")):
        if hf.get(enc, 4096 if "ffn" in enc else 16) != hf.get(dec, 4096 if "ffn" in dec else 16):
            raise ConfigError(f"config.json: {enc}={hf.get(enc)} differs from {dec}={hf.get(dec)}; archzoo needs them equal")
    act = hf.get("activation_function", "gelu")
    if act not in HF_ACTIVATIONS:
        raise ConfigError(f"config.json: activation_function={act!r} is not one of {sorted(HF_ACTIVATIONS)}")
    return ModelConfig(
        family="encoder_decoder",
        name="bart",
        vocab_size=hf.get("vocab_size", 50265),
        d_model=hf.get("d_model", 1024),
        num_layers=hf.get("decoder_layers", 12),
        num_encoder_layers=hf.get("encoder_layers", 12),
        attention=AttentionConfig(num_heads=hf.get("encoder_attention_heads", 16), bias=True, out_bias=True, scale=True),
        mlp=MlpConfig(d_ff=hf.get("encoder_ffn_dim", 4096), activation=HF_ACTIVATIONS[act], gated=False, bias=True),
        norm=NormConfig(kind="layernorm", eps=1e-5, bias=True, placement="post", embedding_norm=True, final_norm=False),
        position=PositionConfig(kind="learned", max_len=hf.get("max_position_embeddings", 1024), offset=_OFFSET),
        embedding=EmbeddingConfig(
            tie=hf.get("tie_word_embeddings", True) is not False,
            scale=bool(hf.get("scale_embedding", False)),
            tied_head_rescale=False,
            final_logits_bias=True,
        ),
        token_ids=token_ids_from_hf(hf, TOKEN_DEFAULTS, "bart"),
    )


def _check(cfg: ModelConfig) -> None:
    """Raises ConfigError listing every field whose value BART cannot express."""
    required = {
        "family": "encoder_decoder",
        "parallel_block": False,
        "attention.num_kv_heads": (None, cfg.attention.num_heads),
        "attention.head_dim": (None, cfg.d_model // cfg.attention.num_heads),
        "attention.bias": True,
        "attention.out_bias": True,
        "attention.scale": True,
        "attention.sliding_window": None,
        "mlp.gated": False,
        "mlp.bias": True,
        "norm.kind": "layernorm",
        "norm.eps": 1e-5,
        "norm.bias": True,
        "norm.placement": "post",
        "norm.embedding_norm": True,
        "norm.final_norm": False,
        "position.kind": "learned",
        "position.offset": _OFFSET,
        "embedding.tied_head_rescale": False,
    }
    wrong = unsupported_fields(cfg, required, "BART")
    if wrong:
        raise ConfigError("this config cannot be written as BART: " + "; ".join(wrong))


def config_to_hf(cfg: ModelConfig) -> dict:
    """A BART ``config.json`` (as a dict) for an archzoo config.

    Raises:
      ConfigError: naming the fields BART cannot express.
    """
    _check(cfg)
    act = ACTIVATION_TO_HF[cfg.mlp.activation]
    hf = {
        "model_type": "bart",
        "architectures": ["BartForConditionalGeneration"],
        "is_encoder_decoder": True,
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "max_position_embeddings": cfg.position.max_len,
        "encoder_layers": cfg.encoder_layers,
        "decoder_layers": cfg.num_layers,
        "encoder_ffn_dim": cfg.mlp.d_ff,
        "decoder_ffn_dim": cfg.mlp.d_ff,
        "encoder_attention_heads": cfg.attention.num_heads,
        "decoder_attention_heads": cfg.attention.num_heads,
        "activation_function": act,
        "scale_embedding": cfg.embedding.scale,
        "tie_word_embeddings": cfg.embedding.tie,
    }
    hf |= token_ids_to_hf(cfg)
    # BART's generate forces a token at the length limit: the class default is BART's own eos (2).
    hf["forced_eos_token_id"] = hf["eos_token_id"]
    return hf


def _pairs(cfg: ModelConfig) -> list[tuple[str, str, str]]:
    """(Hugging Face name without ``model.``, archzoo path, how the array maps) for every weight
    of the two stacks."""
    pairs = []
    for stack, n in (("encoder", cfg.encoder_layers), ("decoder", cfg.num_layers)):
        pairs.append((f"{stack}.embed_positions.weight", f"{stack}/positions/table", "copy"))
        pairs.append((f"{stack}.layernorm_embedding.weight", f"{stack}/embed_norm/scale", "copy"))
        pairs.append((f"{stack}.layernorm_embedding.bias", f"{stack}/embed_norm/bias", "copy"))
        for i in range(n):
            hf, az = f"{stack}.layers.{i}", f"{stack}/blocks/{i}"
            norms = [("self_attn_layer_norm", "attn_norm"), ("final_layer_norm", "mlp_norm")]
            attns = [("self_attn", "attn")]
            if stack == "decoder":
                norms.append(("encoder_attn_layer_norm", "cross_norm"))
                attns.append(("encoder_attn", "cross_attn"))
            for h, a in norms:
                pairs.append((f"{hf}.{h}.weight", f"{az}/{a}/scale", "copy"))
                pairs.append((f"{hf}.{h}.bias", f"{az}/{a}/bias", "copy"))
            for h, a in attns:
                for w in ("q", "k", "v"):
                    pairs.append((f"{hf}.{h}.{w}_proj.weight", f"{az}/{a}/{w}", "heads_in"))
                    pairs.append((f"{hf}.{h}.{w}_proj.bias", f"{az}/{a}/{w}_bias", "heads_bias"))
                pairs.append((f"{hf}.{h}.out_proj.weight", f"{az}/{a}/o", "heads_out"))
                pairs.append((f"{hf}.{h}.out_proj.bias", f"{az}/{a}/o_bias", "copy"))
            pairs.append((f"{hf}.fc1.weight", f"{az}/mlp/up", "linear"))
            pairs.append((f"{hf}.fc1.bias", f"{az}/mlp/up_bias", "copy"))
            pairs.append((f"{hf}.fc2.weight", f"{az}/mlp/down", "linear"))
            pairs.append((f"{hf}.fc2.bias", f"{az}/mlp/down_bias", "copy"))
    return pairs


def weights_from_hf(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """archzoo parameters from BART safetensors (``BartForConditionalGeneration`` or
    ``BartModel``).

    Args:
      tensors: Hugging Face name -> float32 array.
      cfg: the config from :func:`config_from_hf`.

    Returns:
      archzoo path -> array (``embed/table [V, D]``, ``final_logits_bias [V]``, ...).

    Raises:
      ValueError: naming a missing tensor, or one archzoo would not use.
    """
    r = TensorReader(tensors, "bart", ("model.", ""), ENCODER_DECODER_EMBEDDINGS)
    tie = cfg.embedding.tie
    table = shared_table(r, TIED if tie else _ONE_TABLE, head=tie)
    params = {"embed/table": table}
    if not tie:
        params["head/kernel"] = r.take("lm_head.weight", top=True).T
    if cfg.embedding.final_logits_bias:
        has_bias = r.has("final_logits_bias", top=True)
        bias = r.take("final_logits_bias", top=True) if has_bias else np.zeros((cfg.vocab_size,), np.float32)
        params["final_logits_bias"] = bias.reshape(-1)
    params |= read_pairs(r, _pairs(cfg), cfg.head_dim)
    r.finish()
    return params


def weights_to_hf(params: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """BART tensors (``BartForConditionalGeneration`` names) from archzoo parameters.

    Args:
      params: archzoo path -> array, as from :func:`archzoo.convert.get_params`.
      cfg: the model's config.

    Returns:
      Hugging Face name -> array; ``final_logits_bias`` is ``[1, V]`` (zeros when the config
      has none). An untied head comes with the embedding under each stack's name as well, since
      transformers then reads a table per stack.
    """
    _check(cfg)
    tensors = {"model.shared.weight": params["embed/table"]}
    if not cfg.embedding.tie:
        tensors |= {f"model.{name}": params["embed/table"] for name in ENCODER_DECODER_EMBEDDINGS}
        tensors["lm_head.weight"] = params["head/kernel"].T
    bias = params.get("final_logits_bias", np.zeros((cfg.vocab_size,), np.float32))
    tensors["final_logits_bias"] = np.asarray(bias).reshape(1, -1)
    return tensors | write_pairs(params, _pairs(cfg), prefix="model.")
