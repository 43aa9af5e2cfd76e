"""The size ladder: every family of one rung has the same non-embedding count N, measured by the
model itself (count_params, or the parameter tree built with nnx.eval_shape), with the shape the
rule asks for; bad rules are refused naming the key."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re

import numpy as np
import pytest
from flax import nnx

from archzoo.config import ConfigError, from_dict
from archzoo.models import EncoderDecoder, ModelConfig, count_params, load_model_config
from archzoo.models.ladder import SIZES, LadderConfig, size_model
from tests.models.test_families import BASE, DECODERS, ENCODER_DECODERS

TOLERANCE = 0.02  # what size_model's docstring promises for every rung and family
ASPECT_FACTOR = 2  # ... and for the aspect ratio of the rungs, d_model / depth vs 32
SHARE_TOLERANCE = 0.1  # ... and for the encoder's share of N, from n200k up

FAMILIES = {
    "causal": ModelConfig(),
    "prefix": ModelConfig(mask="prefix"),
    "encoder_decoder": ModelConfig(family="encoder_decoder"),
    "encoder": ModelConfig(family="encoder"),
}
# the variants a hand count could miss (gated MLPs without biases, RMSNorm, grouped and
# multi-query heads, embedding norms, T5 relative bias tables, post-norm, parallel blocks), the
# bases the family invariants run on, and two more: attention biases, a gated encoder-decoder
OTHER_BASES = {
    **{k: v for k, v in {**DECODERS, **ENCODER_DECODERS}.items() if "moe" not in v},  # MoE: below
    "qkv_bias": dict(BASE, attention={"num_heads": 4, "bias": True, "out_bias": True}),
    "t5_v1_1": dict(
        ENCODER_DECODERS["t5"], mlp={"d_ff": 64, "activation": "gelu", "gated": True, "bias": False}
    ),
}


@functools.cache
def sized(base: ModelConfig, rung: str, encoder_share: float = 0.5) -> ModelConfig:
    return size_model(base, LadderConfig(name=rung, encoder_share=encoder_share))


@functools.cache
def n_of(cfg: ModelConfig) -> int:
    return count_params(cfg).non_embedding


def depth(cfg: ModelConfig) -> int:
    return cfg.num_layers + (cfg.encoder_layers if cfg.family == "encoder_decoder" else 0)


def encoder_share(cfg: ModelConfig) -> float:
    """The encoder stack's parameters over the non-embedding count, from the parameter tree."""
    model = nnx.eval_shape(lambda: EncoderDecoder(cfg, rngs=nnx.Rngs(params=0)))
    params = nnx.to_flat_state(nnx.state(model.encoder, nnx.Param))
    encoder = sum(int(np.prod(leaf.shape)) for _, leaf in params)
    return encoder / count_params(model).non_embedding


@pytest.mark.parametrize("rung", SIZES)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_rung_lands_on_its_target_in_every_family(family, rung):
    cfg = sized(FAMILIES[family], rung)
    assert abs(n_of(cfg) - SIZES[rung]) <= TOLERANCE * SIZES[rung]
    heads = cfg.attention.num_heads
    assert cfg.d_model % heads == 0 and heads * 32 == cfg.d_model and cfg.head_dim == 32
    assert 1 / ASPECT_FACTOR <= cfg.d_model / depth(cfg) / 32 <= ASPECT_FACTOR


@pytest.mark.parametrize("rung", ["n200k", "n2m"])
@pytest.mark.parametrize("name", OTHER_BASES)
def test_other_bases_land_on_the_target(name, rung):
    base = load_model_config(OTHER_BASES[name])
    cfg = sized(base, rung)
    assert abs(n_of(cfg) - SIZES[rung]) <= TOLERANCE * SIZES[rung]
    assert cfg.attention.num_heads * 32 == cfg.d_model


@pytest.mark.parametrize("family", ["causal", "encoder_decoder"])
def test_an_moe_base_is_sized_as_its_dense_twin_at_equal_active_parameters(family):
    """8 experts of half the MLP's width, top-2 (granularity 2): the MoE model's active
    non-embedding count is the dense rung's plus the routers (and a second output bias)."""
    from archzoo.models import count_params

    base = load_model_config(FAMILIES[family])
    moe = {"num_experts": 4, "granularity": 2, "top_k": 1}
    cfg = sized(load_model_config(base, moe=moe), "n200k")
    dense = sized(base, "n200k")
    assert cfg.replace(moe=None) == dense
    n, d = count_params(cfg), count_params(dense)
    layers = sum(s.num_layers for s in cfg.stacks)
    routers = layers * cfg.d_model * 8
    down_biases = layers * cfg.d_model if cfg.mlp.bias else 0  # two experts' output biases against one
    assert n.active - n.embedding == d.non_embedding + routers + down_biases
    assert n.total > 3 * d.total // 2


@pytest.mark.parametrize("rung", SIZES)
def test_causal_decoder_and_encoder_decoder_of_one_rung_have_one_size(rung):
    causal = n_of(sized(FAMILIES["causal"], rung))
    encoder_decoder = n_of(sized(FAMILIES["encoder_decoder"], rung))
    assert abs(causal - encoder_decoder) <= 2 * TOLERANCE * SIZES[rung]


@pytest.mark.parametrize("family", ["causal", "encoder_decoder"])
def test_rungs_grow_about_twofold(family):
    targets = list(SIZES.values())
    counts = [n_of(sized(FAMILIES[family], rung)) for rung in SIZES]
    for smaller, larger in itertools.pairwise(counts):
        assert 1.5 <= larger / smaller <= 3
    assert 5e4 <= targets[0] <= 2e5 and 5e6 <= targets[-1] <= 2e7


@pytest.mark.parametrize("rung", ["n200k", "n1m", "n5m"])
def test_encoder_share_is_honoured(rung):
    base = load_model_config(OTHER_BASES["t5_v1_1"])
    shares = [encoder_share(sized(base, rung, share)) for share in (0.25, 0.5, 0.75)]
    for want, got in zip((0.25, 0.5, 0.75), shares):
        assert abs(got - want) <= SHARE_TOLERANCE
    assert shares[0] < shares[1] < shares[2]
    for share in (0.25, 0.75):
        assert abs(n_of(sized(base, rung, share)) - SIZES[rung]) <= TOLERANCE * SIZES[rung]


def test_fields_the_ladder_does_not_own_are_kept():
    base = load_model_config(
        dict(
            name="mine",
            vocab_size=1000,
            mask="prefix",
            dtype="bfloat16",
            attention={"num_heads": 8, "num_kv_heads": 2, "head_dim": 16, "bias": True, "sliding_window": 16},
            mlp={"activation": "silu", "gated": True, "bias": False},
            norm={"kind": "rmsnorm", "eps": 1e-6},
            position={"kind": "rope", "rope_theta": 500.0},
            embedding={"tie": False},
        )
    )
    cfg = size_model(base, LadderConfig(name="n1m"))
    assert (cfg.vocab_size, cfg.mask, cfg.mlp.activation) == (1000, "prefix", "silu")
    assert cfg.position == base.position
    assert cfg.attention.num_heads == 4 * cfg.attention.num_kv_heads and cfg.attention.head_dim is None
    # putting back what the ladder owns gives the base again: nothing else changed
    attention = dataclasses.replace(cfg.attention, num_heads=8, num_kv_heads=2, head_dim=16)
    mlp = dataclasses.replace(cfg.mlp, d_ff=base.mlp.d_ff)
    assert cfg.replace(d_model=base.d_model, num_layers=base.num_layers, attention=attention, mlp=mlp) == base


def test_a_base_without_kv_heads_gets_none_and_encoder_layers_are_set():
    cfg = sized(FAMILIES["encoder_decoder"], "n1m")
    assert cfg.attention.num_kv_heads is None and cfg.num_encoder_layers is not None


def test_gated_and_ungated_mlps_of_one_rung_share_their_shape():
    gated = load_model_config(dict(mlp={"activation": "silu", "gated": True}))
    for rung in ("n100k", "n1m", "n10m"):
        plain, glu = sized(FAMILIES["causal"], rung), sized(gated, rung)
        assert (glu.d_model, glu.num_layers) == (plain.d_model, plain.num_layers)
        assert glu.mlp.d_ff < plain.mlp.d_ff


def test_a_target_between_rungs_lands_on_it():
    cfg = size_model(FAMILIES["causal"], LadderConfig(non_embedding=3.3e6, aspect_ratio=16, head_dim=64))
    assert abs(n_of(cfg) - 3.3e6) <= TOLERANCE * 3.3e6
    assert cfg.d_model == 64 * cfg.attention.num_heads
    assert 16 / ASPECT_FACTOR <= cfg.d_model / cfg.num_layers <= 16 * ASPECT_FACTOR


def test_unknown_rung_suggests_the_nearest():
    with pytest.raises(ConfigError, match=r"^size\.name: unknown rung 'n500'") as err:
        LadderConfig(name="n500")
    assert "did you mean 'n500k'" in str(err.value)
    assert all(name in str(err.value) for name in SIZES)


def test_unknown_rung_from_a_run_config_section_names_the_key_once():
    with pytest.raises(ConfigError, match=r"^size\.name: unknown rung"):
        from_dict(LadderConfig, {"name": "n3m"}, prefix="size.")


@pytest.mark.parametrize(
    "fields, word", [(dict(name="n1m", non_embedding=1e6), "got both"), (dict(), "got neither")]
)
def test_exactly_one_of_name_and_count(fields, word):
    message = r"^size\.name: give exactly one of size\.name .* size\.non_embedding"
    with pytest.raises(ConfigError, match=message) as err:
        LadderConfig(**fields)
    assert word in str(err.value)


@pytest.mark.parametrize(
    "fields, key",
    [
        (dict(non_embedding=0.0), "size.non_embedding"),
        (dict(non_embedding=-5.0), "size.non_embedding"),
        (dict(head_dim=0), "size.head_dim"),
        (dict(head_dim=-32), "size.head_dim"),
        (dict(encoder_share=0.0), "size.encoder_share"),
        (dict(encoder_share=1.0), "size.encoder_share"),
        (dict(encoder_share=1.5), "size.encoder_share"),
        (dict(encoder_share=-0.1), "size.encoder_share"),
        (dict(aspect_ratio=0.0), "size.aspect_ratio"),
        (dict(ff_ratio=-1.0), "size.ff_ratio"),
        (dict(width_multiple=0), "size.width_multiple"),
        (dict(tolerance=0.0), "size.tolerance"),
    ],
)
def test_bad_fields_name_their_key(fields, key):
    fields = {"non_embedding": 1e6, **fields}
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: "):
        LadderConfig(**fields)


def test_head_dim_must_divide_the_width_multiple():
    with pytest.raises(ConfigError, match=r"^size\.head_dim: heads do not divide d_model") as err:
        LadderConfig(name="n1m", head_dim=48, width_multiple=64)
    assert "[1, 2, 4, 8, 16, 32, 64]" in str(err.value)


def test_rope_needs_an_even_head_dim():
    with pytest.raises(ConfigError, match=r"^size\.head_dim: RoPE"):
        size_model(load_model_config(dict(position={"kind": "rope"})), LadderConfig(name="n1m", head_dim=33))


@pytest.mark.parametrize("family", ["causal", "encoder_decoder"])
def test_too_small_a_target_is_refused_with_the_least_that_works(family):
    with pytest.raises(ConfigError, match=r"^size\.non_embedding: 1,000 is too small") as err:
        size_model(FAMILIES[family], LadderConfig(non_embedding=1000))
    least = int(re.search(r"give at least ([\d,]+)", str(err.value)).group(1).replace(",", ""))
    cfg = size_model(FAMILIES[family], LadderConfig(non_embedding=least))
    assert n_of(cfg) == least  # the smallest model the message describes is real


def test_a_target_no_shape_reaches_is_refused():
    message = r"^size\.non_embedding: no shape reaches 5,000 within size\.tolerance"
    with pytest.raises(ConfigError, match=message):
        size_model(FAMILIES["causal"], LadderConfig(non_embedding=5000))


def test_a_named_rung_too_small_names_the_rung():
    tiny_heads = LadderConfig(name="n100k", head_dim=256)  # one 256-wide layer is past 1e5
    with pytest.raises(ConfigError, match=r"^size\.name: 100,000 is too small"):
        size_model(FAMILIES["causal"], tiny_heads)


def test_a_kv_head_ratio_that_cannot_be_kept_names_the_base_key():
    base = load_model_config(dict(attention={"num_heads": 32, "num_kv_heads": 1}))
    message = r"^model\.attention\.num_kv_heads: keeping num_heads / num_kv_heads = 32"
    with pytest.raises(ConfigError, match=message):
        size_model(base, LadderConfig(name="n100k"))
