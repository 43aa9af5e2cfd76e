"""The training step against slower, obvious references."""

import jax
import numpy as np
import pytest

import archzoo
from archzoo.features import pack_examples
from archzoo.train.optimizer import OptimizerConfig, decay_mask, learning_rate
from archzoo.train.step import make_train_step, split_model
from tests.features.test_packing import BASE, LENGTHS, START, examples


def _stack(batches):
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def test_accumulation_equals_one_big_batch():
    """Two micro-batches of 2 rows give the same update as one batch of 4 rows."""
    model = archzoo.build(**BASE, seed=0)
    graphdef, params, rest = split_model(model)
    # eps=1 keeps Adam's first update linear in the gradient (g / (|g| + 1)), so float-rounding
    # differences between the two summation orders stay float-rounding small.
    cfg = OptimizerConfig(lr=1e-2, clip_norm=None, eps=1.0)
    big = list(pack_examples(examples(0, 30), "decoder", LENGTHS, batch_size=4, start_id=START))[0]
    micro = [{k: v[:2] for k, v in big.items()}, {k: v[2:] for k, v in big.items()}]

    step1, tx = make_train_step(graphdef, cfg)
    p1, _, m1 = step1(params, rest, tx.init(params), _stack([big]), 1e-2)
    graphdef, params, rest = split_model(archzoo.build(**BASE, seed=0))
    step2, tx = make_train_step(graphdef, OptimizerConfig(lr=1e-2, clip_norm=None, eps=1.0, accumulation_steps=2))
    p2, _, m2 = step2(params, rest, tx.init(params), _stack(micro), 1e-2)
    np.testing.assert_allclose(float(m1["loss_nats"]), float(m2["loss_nats"]), rtol=1e-6)
    leaves1, leaves2 = jax.tree.leaves(p1), jax.tree.leaves(p2)
    assert len(leaves1) == len(leaves2) > 0
    for a, b in zip(leaves1, leaves2):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-7)


def test_same_seed_gives_a_bitwise_identical_loss_curve():
    def curve():
        graphdef, params, rest = split_model(archzoo.build(**BASE, seed=3))
        step, tx = make_train_step(graphdef, OptimizerConfig(lr=1e-2))
        opt = tx.init(params)
        out = []
        for batch in pack_examples(examples(4, 40), "decoder", LENGTHS, batch_size=2, start_id=START):
            params, opt, m = step(params, rest, opt, _stack([batch]), 1e-2)
            out.append(float(m["loss_nats"]))
        return out

    a, b = curve(), curve()
    assert len(a) >= 5 and a == b
    assert a[-1] < a[0]


def test_schedules_by_hand():
    cos = OptimizerConfig(lr=1.0, schedule="cosine", warmup_fraction=0.1, min_lr_ratio=0.1)
    assert learning_rate(cos, 0.0) == 0.0
    assert learning_rate(cos, 0.05) == pytest.approx(0.5)
    assert learning_rate(cos, 0.1) == pytest.approx(1.0)
    assert learning_rate(cos, 0.55) == pytest.approx(0.1 + 0.45 * (1 + np.cos(np.pi * 0.5)))
    assert learning_rate(cos, 1.0) == pytest.approx(0.1)
    wsd = OptimizerConfig(lr=1.0, schedule="wsd", warmup_fraction=0.1, decay_fraction=0.2, min_lr_ratio=0.0)
    assert learning_rate(wsd, 0.5) == 1.0 and learning_rate(wsd, 0.8) == 1.0
    assert learning_rate(wsd, 0.9) == pytest.approx(0.5) and learning_rate(wsd, 1.0) == pytest.approx(0.0)
    lin = OptimizerConfig(lr=1.0, schedule="linear", warmup_fraction=0.0, min_lr_ratio=0.0)
    assert learning_rate(lin, 0.25) == pytest.approx(0.75)


def test_weight_decay_skips_norms_biases_and_positions():
    _, params, _ = split_model(archzoo.build(**BASE, seed=0))
    leaves, _ = jax.tree_util.tree_flatten_with_path(decay_mask(params))
    flat = {"/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path).removesuffix("/value"): bool(v) for path, v in leaves}
    assert flat["embed/table"] and flat["stack/blocks/0/attn/q"] and flat["stack/blocks/1/mlp/down"]
    skipped = [k for k in flat if "norm" in k or k.endswith("bias") or "positions" in k]
    assert skipped and not any(flat[k] for k in skipped)
