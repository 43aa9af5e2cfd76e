"""Switch Transformer (Fedus et al. 2022) from and to Hugging Face
``model_type: switch_transformers``.

T5 v1.0 (see :mod:`archzoo.convert.t5`: pre-RMSNorm, no biases, no 1/sqrt(d) attention scaling,
relative position buckets in the first layer of each stack, a ReLU MLP, the head tied to the
embedding with d_model^-0.5 rescaling) with the MLP of some layers replaced by a top-1
Mixture-of-Experts layer. Layer ``i`` of a stack is sparse when ``i % step == 1`` (every layer
when the step is 1, none when it is 0), with the step ``encoder_sparse_step`` (or
``num_layers // num_sparse_encoder_layers``) and likewise for the decoder: ``moe.every: step``,
``moe.offset: 1``.

Routing: the softmax over the experts in float32, the top-1 expert, whose output is scaled by its
probability (``moe.normalize: false``); each expert takes at most ``expert_capacity`` tokens of
each sequence, earliest first (``moe.dispatch: capacity``, ``group: row``, ``priority:
position``), and a token past it gets nothing from the layer (only the residual). Unlike
transformers, archzoo never routes padding, so padding takes no capacity: the two agree wherever
no real token is dropped or the batch is unpadded.

Hugging Face layout as T5's, with the MLP at ``{encoder,decoder}.block.{i}.layer.{j}.mlp``:
``wi``, ``wo`` in dense layers; ``router.classifier`` ``[E, D]`` and ``experts.expert_{e}.wi``,
``.wo`` in sparse ones.

``router_aux_loss_coef``, ``router_z_loss_coef`` and ``router_jitter_noise`` are read as
``moe.load_balance_weight``, ``moe.z_loss_weight`` and ``moe.jitter``. Transformers pools its
losses over the sparse layers of a stack (and includes padding); archzoo's are per layer.
"""

from __future__ import annotations

import numpy as np

from archzoo.convert.common import (
    ACTIVATION_TO_HF,
    TensorReader,
    activation_from_hf,
    check_expressible,
    experts_from_hf,
    experts_to_hf,
    read_pairs,
    refuse,
    shared_table,
    take_shaped,
    token_ids_from_hf,
    token_ids_to_hf,
    write_pairs,
)
from archzoo.convert.t5 import stack_pairs
from archzoo.models.config import (
    AttentionConfig,
    EmbeddingConfig,
    MlpConfig,
    ModelConfig,
    MoeConfig,
    NormConfig,
    PositionConfig,
)

__all__ = ["config_from_hf", "config_to_hf", "weights_from_hf", "weights_to_hf"]

MODEL_TYPE = "switch_transformers"
# The special-token ids of the transformers config class, for keys a config.json lacks.
TOKEN_DEFAULTS = dict(eos=1, pad=0)
# archzoo expert weight -> Switch's per-expert (and dense) layer
EXPERTS = {"up": "wi", "down": "wo"}
# Why the three token tables of a checkpoint must be one.
ONE_TABLE = (
    "archzoo's encoder-decoder has one token table; with tie_word_embeddings=false transformers gives the "
    "encoder, the decoder and shared their own, so they must hold the same values"
)
_STACKS = (("encoder", "num_layers", "num_sparse_encoder_layers"), ("decoder", "num_decoder_layers", "num_sparse_decoder_layers"))


def _sparse(step: int, num_layers: int) -> list[int]:
    """The sparse layers of a stack of ``num_layers`` with sparse step ``step``, as transformers
    places them."""
    if step <= 0:
        return []
    return [i for i in range(num_layers) if step == 1 or i % step == 1]


def _sparse_step(hf: dict, stack: str, num_layers: int) -> int:
    """``{stack}_sparse_step``, or what ``SwitchTransformersConfig`` derives from the count."""
    key = f"{stack}_sparse_step"
    if key in hf:
        step = hf[key]
    else:
        count = hf.get(f"num_sparse_{stack}_layers", 3)
        step = num_layers // count if count > 0 else num_layers
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise refuse(MODEL_TYPE, key, step, "the sparse step is an integer >= 0")
    return step


def _placement(hf: dict, layers: dict[str, int]) -> dict | None:
    """MoeConfig placement fields giving each stack its transformers sparse layers (None: no
    sparse layer anywhere)."""
    steps = {stack: _sparse_step(hf, stack, n) for stack, n in layers.items()}
    sparse = {stack: _sparse(steps[stack], n) for stack, n in layers.items()}
    stacks = tuple(s for s in layers if sparse[s])
    if not stacks:
        return None
    for step in {steps[s] for s in stacks}:
        every, offset = (1, 0) if step == 1 else (step, 1)
        if all(sparse[s] == [i for i in range(layers[s]) if i % every == offset] for s in stacks):
            return dict(every=every, offset=offset, stacks=stacks)
    if all(sparse[s] == sparse[stacks[0]] for s in stacks):
        return dict(layers=tuple(sparse[stacks[0]]), stacks=stacks)
    raise refuse(
        MODEL_TYPE,
        "encoder_sparse_step",
        steps["encoder"],
        f"with decoder_sparse_step={steps['decoder']} the stacks' sparse layers {sparse['encoder']} and "
        f"{sparse['decoder']} differ; archzoo places MoE layers alike in both stacks",
    )


def config_from_hf(hf: dict) -> ModelConfig:
    """An archzoo config from a Switch Transformer ``config.json``.

    Returns:
      a ``ModelConfig`` of family ``encoder_decoder`` named ``switch_transformers`` (``moe`` None
      when no layer is sparse).

    Raises:
      ValueError: naming the key, for a router bias, a router dtype other than float32, sparse
        layers archzoo cannot place, an expert capacity below 1 and activations archzoo lacks.
    """
    if hf.get("router_bias", False):
        raise refuse(MODEL_TYPE, "router_bias", True, "archzoo's router has no bias")
    if hf.get("router_dtype", "float32") != "float32":
        raise refuse(MODEL_TYPE, "router_dtype", hf["router_dtype"], "archzoo routes in float32")
    capacity = hf.get("expert_capacity", 64)
    if not isinstance(capacity, int) or capacity < 1:
        raise refuse(MODEL_TYPE, "expert_capacity", capacity, "each expert takes at least one token")
    num_layers = hf.get("num_layers", 12)
    layers = {"encoder": num_layers, "decoder": hf.get("num_decoder_layers") or num_layers}
    placement = _placement(hf, layers)
    tie = hf.get("tie_word_embeddings", True)
    moe = None
    if placement is not None:
        moe = MoeConfig(
            num_experts=hf.get("num_experts", 8),
            top_k=1,
            normalize=False,
            dispatch="capacity",
            expert_capacity=capacity,
            group="row",
            priority="position",
            jitter=hf.get("router_jitter_noise", 0.01),
            load_balance_weight=hf.get("router_aux_loss_coef", 0.001),
            z_loss_weight=hf.get("router_z_loss_coef", 0.001),
            **placement,
        )
    return ModelConfig(
        family="encoder_decoder",
        name=MODEL_TYPE,
        vocab_size=hf.get("vocab_size", 32128),
        d_model=hf.get("d_model", 768),
        num_layers=layers["decoder"],
        num_encoder_layers=layers["encoder"],
        attention=AttentionConfig(
            num_heads=hf.get("num_heads", 12), head_dim=hf.get("d_kv", 64), bias=False, out_bias=False, scale=False
        ),
        mlp=MlpConfig(
            d_ff=hf.get("d_ff", 2048),
            activation=activation_from_hf(MODEL_TYPE, "dense_act_fn", hf.get("dense_act_fn", "relu")),
            gated=False,
            bias=False,
        ),
        norm=NormConfig(kind="rmsnorm", eps=hf.get("layer_norm_epsilon", 1e-6), bias=False, placement="pre", final_norm=True),
        position=PositionConfig(
            kind="t5_bias",
            num_buckets=hf.get("relative_attention_num_buckets", 32),
            max_distance=hf.get("relative_attention_max_distance", 128),
        ),
        embedding=EmbeddingConfig(tie=tie, scale=False, tied_head_rescale=tie, final_logits_bias=False),
        token_ids=token_ids_from_hf(hf, TOKEN_DEFAULTS, MODEL_TYPE),
        moe=moe,
    )


def _placement_to_hf(cfg: ModelConfig) -> dict:
    """``num_sparse_*_layers`` and ``*_sparse_step`` that make exactly the config's MoE layers
    sparse (``check_expressible`` names what no step can place)."""
    hf = {}
    for (stack, _, count), spec in zip(_STACKS, cfg.stacks):
        n = spec.num_layers
        wanted = [i for i in range(n) if cfg.moe is not None and cfg.moe.is_moe(stack, i)]
        step = next((s for s in range(n + 1) if _sparse(s, n) == wanted), 1)
        hf |= {count: len(wanted), f"{stack}_sparse_step": step}
    return hf


def config_to_hf(cfg: ModelConfig) -> dict:
    """A Switch Transformer ``config.json`` (as a dict) for an archzoo config.

    Raises:
      ValueError: naming each field the format cannot hold (dropless or top-2 routing, gated
        MLPs, biases, learned positions, a tied head without rescaling, ...).
    """
    moe = cfg.moe
    hf = {
        "model_type": MODEL_TYPE,
        "architectures": ["SwitchTransformersForConditionalGeneration"],
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
        "dense_act_fn": ACTIVATION_TO_HF.get(cfg.mlp.activation, cfg.mlp.activation),
        "tie_word_embeddings": cfg.embedding.tie,
        "router_bias": False,
        "router_dtype": "float32",
        "dtype": "float32",
    } | _placement_to_hf(cfg)
    if moe is not None:
        hf |= {
            "num_experts": moe.experts,
            "expert_capacity": moe.expert_capacity if moe.expert_capacity is not None else 64,
            "router_jitter_noise": moe.jitter,
            "router_aux_loss_coef": moe.load_balance_weight,
            "router_z_loss_coef": moe.z_loss_weight,
        }
    hf |= token_ids_to_hf(cfg)
    check_expressible(cfg, hf, config_from_hf, MODEL_TYPE)
    return hf


def _pairs(cfg: ModelConfig) -> list[tuple[str, str, str]]:
    """(Hugging Face name, archzoo path, how the array maps) for every weight but the
    embedding, the head and the routed experts: T5's stacks, with a router or a dense MLP in
    each block."""

    def feed_forward(hf: str, az: str, stack: str, i: int) -> list[tuple[str, str, str]]:
        if _is_moe(cfg, stack, i):
            return [(f"{hf}.mlp.router.classifier.weight", f"{az}/mlp/router", "linear")]
        return [(f"{hf}.mlp.{theirs}.weight", f"{az}/mlp/{ours}", "linear") for ours, theirs in EXPERTS.items()]

    return stack_pairs(cfg, feed_forward)


def _is_moe(cfg: ModelConfig, stack: str, i: int) -> bool:
    return cfg.moe is not None and cfg.moe.is_moe(stack, i)


def _experts(cfg: ModelConfig):
    """(Hugging Face name of the experts module, archzoo path of the MoE layer) per sparse layer."""
    for stack, n in (("encoder", cfg.encoder_layers), ("decoder", cfg.num_layers)):
        j = 2 if stack == "decoder" else 1
        for i in range(n):
            if _is_moe(cfg, stack, i):
                yield f"{stack}.block.{i}.layer.{j}.mlp.experts.", f"{stack}/blocks/{i}/mlp/"


def weights_from_hf(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """archzoo parameters from Switch Transformer safetensors.

    Args:
      tensors: Hugging Face name -> float32 array.
      cfg: the config from :func:`config_from_hf`.

    Returns:
      archzoo path -> array (``embed/table [V, D]``, ``encoder/blocks/1/mlp/up [E, D, F]``, ...).

    Raises:
      ValueError: naming a missing tensor, an expert or router tensor of another shape, one
        archzoo would not use, or token tables that differ.
    """
    r = TensorReader(tensors, MODEL_TYPE, ("",), ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"))
    params = {"embed/table": shared_table(r, ONE_TABLE, head=cfg.embedding.tie)}
    if not cfg.embedding.tie:
        params["head/kernel"] = r.take("lm_head.weight").T
    if cfg.moe is not None:
        E, D, F = cfg.moe.experts, cfg.d_model, cfg.moe.expert_width(cfg.mlp.d_ff)
        for hf, az in _experts(cfg):
            take_shaped(r, hf[: -len("experts.")] + "router.classifier.weight", (E, D), "[experts, d_model]")
            params |= experts_from_hf(r, hf, az, EXPERTS, (E, D, F), expert="expert_{e}", fused=False)
    params |= read_pairs(r, _pairs(cfg), cfg.head_dim)
    r.finish()
    return params


def weights_to_hf(params: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Switch Transformer tensors from archzoo parameters (inverse of :func:`weights_from_hf`):
    ``shared.weight`` alone when tied (transformers ties the rest to it); the stacks' tables and
    ``lm_head.weight`` too when not."""
    table = params["embed/table"]
    tensors = {"shared.weight": table}
    if not cfg.embedding.tie:
        tensors |= {"encoder.embed_tokens.weight": table, "decoder.embed_tokens.weight": table, "lm_head.weight": params["head/kernel"].T}
    for hf, az in _experts(cfg):
        tensors |= experts_to_hf(params, az, hf, EXPERTS, expert="expert_{e}")
    return tensors | write_pairs(params, _pairs(cfg))
