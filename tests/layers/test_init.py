"""Init kinds: the measured spread of every weight, μP at base width against the normal init,
μP's forward multipliers against a forward pass by hand, and the config checks."""

import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import archzoo
from archzoo.config import ConfigError
from archzoo.layers.init import parametrisation
from archzoo.masks import facts
from archzoo.models import load_model_config
from archzoo.models.self_attention import self_attention_mask

V, D, F, LAYERS = 256, 64, 256, 2
RESIDUAL = ("o", "down")  # the projections into the residual stream
SMALL = dict(vocab_size=V, d_model=D, num_layers=LAYERS, attention={"num_heads": 4}, mlp={"d_ff": F}, position={"max_len": 64})
# Every matrix has at least 4096 entries, so a sample std is within 1/sqrt(2 * 4096) = 1.1% of
# the true std one sigma in three; 5% is past four sigma.
REL_TOL = 0.05


def weights(model) -> dict[str, np.ndarray]:
    """Every parameter by its path, ``stack/blocks/0/attn/o``."""
    return {"/".join(map(str, path)): np.asarray(v[...]) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def matrices(model) -> dict[str, np.ndarray]:
    """The weights drawn from a normal: matrices and tables, not biases, norms or T5's buckets."""
    return {k: w for k, w in weights(model).items() if w.ndim >= 2}


def expected_depth_scaled_std(path: str, std: float, cfg) -> float:
    """GPT-2's rule by hand: residual projections over sqrt(residual branches of their stack)."""
    if path.split("/")[-1] not in RESIDUAL:
        return std
    stack = path.split("/")[0]
    if stack == "decoder":  # an encoder-decoder's decoder: self-attention, cross-attention, MLP
        return std / math.sqrt(3 * cfg.num_layers)
    layers = cfg.encoder_layers if stack == "encoder" else cfg.num_layers
    return std / math.sqrt(2 * layers)


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_depth_scaled_divides_the_residual_projections_by_the_branches_of_their_stack(family):
    # 4 encoder layers (8 branches) and 2 decoder layers with cross-attention (6 branches): the
    # two stacks' rules give stds 15% apart, three times the tolerance
    model = archzoo.build(**SMALL, family=family, num_encoder_layers=4 if family == "encoder_decoder" else None, seed=1)
    assert model.config.init.kind == "depth_scaled"  # the default
    found = set()
    for path, w in matrices(model).items():
        expected = expected_depth_scaled_std(path, 0.02, model.config)
        assert w.std() == pytest.approx(expected, rel=REL_TOL), path
        assert abs(w.mean()) < 4 * expected / math.sqrt(w.size), path
        found.add(path.split("/")[-1])
    assert {"q", "k", "v", "o", "up", "down", "table"} <= found
    if family == "encoder_decoder":
        assert any(p.endswith("cross_attn/o") for p in matrices(model))


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_normal_draws_every_matrix_with_one_std(family):
    model = archzoo.build(**SMALL, family=family, init={"kind": "normal", "std": 0.05}, seed=2)
    for path, w in matrices(model).items():
        assert w.std() == pytest.approx(0.05, rel=REL_TOL), path


def test_mup_scales_hidden_matrices_by_the_width_multiplier_and_keeps_tables():
    base, width = 32, 128
    model = archzoo.build(
        **{**SMALL, "d_model": width, "mlp": {"d_ff": 4 * width}, "embedding": {"tie": False}},
        init={"kind": "mup", "base_width": base},
        seed=3,
    )
    for path, w in matrices(model).items():
        # hidden: variance 0.02^2 * base / width (∝ 1/fan_in); tables and the head: 0.02
        hidden = path.split("/")[-1] in ("q", "k", "v", "o", "up", "down")
        expected = 0.02 * math.sqrt(base / width) if hidden else 0.02
        assert w.std() == pytest.approx(expected, rel=REL_TOL), path


@pytest.mark.parametrize(
    "family,extra",
    [
        ("decoder", {}),
        ("decoder", {"mask": "prefix", "embedding": {"tie": False}, "mlp": {"d_ff": F, "gated": True, "activation": "silu"}}),
        ("encoder_decoder", {"position": {"kind": "t5_bias"}, "attention": {"num_heads": 4, "scale": False}}),
    ],
)
def test_mup_at_base_width_is_the_normal_init_draw_for_draw(family, extra):
    """At d_model = base_width every μP number is 1 (or the normal std), so parameters and
    logits are bitwise those of the normal init with the same seed."""
    cfg = {**SMALL, **extra, "family": family}
    mup = archzoo.build(**cfg, init={"kind": "mup", "base_width": D, "base_head_dim": D // 4}, seed=4)
    normal = archzoo.build(**cfg, init={"kind": "normal"}, seed=4)
    a, b = weights(mup), weights(normal)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    tokens = np.random.default_rng(0).integers(0, V, (2, 12))
    args = (tokens, tokens[:, ::-1]) if family == "encoder_decoder" else (tokens,)
    np.testing.assert_array_equal(np.asarray(mup(*args)), np.asarray(normal(*args)))


def test_mup_forward_multipliers_against_a_forward_pass_by_hand():
    """Logits are the tied head's times base_width / d_model; the attention logit scale is
    sqrt(base_head_dim) / head_dim."""
    base, width, head_dim, base_head_dim = 32, 128, 16, 8
    init = {"kind": "mup", "base_width": base, "base_head_dim": base_head_dim, "output_multiplier": 2.0}
    model = archzoo.build(**{**SMALL, "d_model": width, "attention": {"num_heads": width // head_dim}}, init=init, seed=5)
    for block in model.stack.blocks:
        assert block.attn.scale == pytest.approx(math.sqrt(base_head_dim) / head_dim, rel=1e-12)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, V, (2, 10)), jnp.int32)
    f = facts(shape=tokens.shape)
    hidden, _ = model.stack(model.embed(tokens), f, self_attention_mask(model.config, f))
    by_hand = 2.0 * base / width * np.einsum("bld,vd->blv", np.asarray(hidden), np.asarray(model.embed.table[...]))
    np.testing.assert_allclose(np.asarray(model(tokens)), by_hand, rtol=1e-5, atol=1e-6)


def test_published_configs_keep_every_multiplier_at_one():
    """Converted models load weights, so their init does not matter, but their logits must: no
    published config may be μP, and every other init leaves the forward pass as it was."""
    paths = sorted((Path(__file__).resolve().parents[2] / "configs" / "models").glob("*.yaml"))
    assert paths
    for path in paths:
        cfg = load_model_config(path)
        p = parametrisation(cfg.init, cfg.d_model, cfg.head_dim, residual_branches=2 * cfg.num_layers)
        assert cfg.init.kind != "mup", path
        assert (p.hidden_lr, p.attention_factor, p.output_multiplier) == (1.0, 1.0, 1.0), path


def test_init_is_a_yaml_key_and_an_override(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("model:\n  d_model: 128\n  init:\n    kind: mup\n    base_width: 32\n")
    cfg = load_model_config(path)
    assert (cfg.init.kind, cfg.init.base_width, cfg.init.std) == ("mup", 32, 0.02)
    assert load_model_config(path, ["init.output_multiplier=4"]).init.output_multiplier == 4.0
    assert load_model_config(None, ["init.kind=normal"]).init.kind == "normal"


@pytest.mark.parametrize(
    "init,key,says",
    [
        ({"kind": "mup"}, "init.base_width", "needs the d_model"),
        ({"kind": "normal", "base_width": 64}, "init.base_width", "only init.kind=mup reads it"),
        ({"output_multiplier": 2.0}, "init.output_multiplier", "only init.kind=mup reads it"),
        ({"kind": "mup", "base_width": 0}, "init.base_width", ">= 1"),
        ({"kind": "mup", "base_width": 64, "attention_multiplier": 0.0}, "init.attention_multiplier", "> 0"),
        ({"std": 0.0}, "init.std", "> 0"),
        ({"kind": "xavier"}, "init.kind", "'depth_scaled', 'normal', 'mup'"),
    ],
)
def test_bad_init_names_the_key(tmp_path, init, key, says):
    path = tmp_path / "m.yaml"
    body = "".join(f"    {k}: {v}\n" for k, v in init.items())
    path.write_text(f"model:\n  init:\n{body}")
    with pytest.raises(ConfigError) as err:
        load_model_config(path)
    assert key in str(err.value) and says in str(err.value) and "m.yaml" in str(err.value)


def test_every_parameter_says_its_width_role():
    cfg = {
        **SMALL,
        "attention": {"num_heads": 4, "bias": True, "out_bias": True},
        "mlp": {"d_ff": F, "gated": True},
        "position": {"kind": "t5_bias"},
        "embedding": {"tie": False},
    }
    model = archzoo.build(**cfg, family="encoder_decoder", seed=0)
    roles = {"/".join(map(str, p)): v.get_metadata()["width_role"] for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    for path, role in roles.items():
        name = path.split("/")[-1]
        if name in ("q", "k", "v", "o", "up", "gate", "down"):
            assert role == "hidden", path
        elif path == "head/kernel":
            assert role == "output", path
        else:
            assert role == "input", path
    assert set(roles.values()) == {"input", "hidden", "output"}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("shape", [(7,), (256, 4, 64), (4, 64, 256), (33, 5)])
def test_flat_normal_initializer_draws_what_the_flax_initializer_draws(shape, dtype):
    """The normal init draws flat and reshapes, so that same-size weights share one compiled
    kernel; the values must be those of ``nnx.initializers.normal`` bit for bit, or every model's
    initialisation (and every figure measured from it) would change."""
    import jax

    from archzoo.layers.params import normal

    key = jax.random.key(11)
    ours = np.asarray(normal(0.02)(key, shape, dtype).astype(jnp.float32))
    flax = np.asarray(nnx.initializers.normal(0.02)(key, shape, dtype).astype(jnp.float32))
    assert ours.shape == shape
    np.testing.assert_array_equal(ours, flax)
