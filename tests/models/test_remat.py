"""Rematerialisation (``ModelConfig.remat``) changes what the backward pass keeps, never the loss
or the gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import archzoo
from archzoo.bench import _synthetic_batch, compiled_peak_bytes
from archzoo.train.loss import loss_fn
from archzoo.train.rundir import RunDirError, prepare_run_dir
from archzoo.train.step import split_model

POLICIES = ("none", "full", "dots", "attention")
BASE = dict(vocab_size=256, d_model=32, num_layers=2, attention={"num_heads": 4}, mlp={"d_ff": 64})
FAMILIES = {
    "decoder": BASE,
    "encoder_decoder": dict(BASE, family="encoder_decoder", num_layers=1),  # 2 layers: 1 + 1
    # Switch's placement (odd layers: a dense and an MoE block); router noise, which the backward
    # pass must draw again alike
    "moe_decoder": dict(BASE, moe={"num_experts": 4, "top_k": 2, "every": 2, "offset": 1, "noise": 1.0}),
}
L = 24  # no other axis is 24 long: an array ending in [L, L] is attention's [Q, K]
# Bitwise on CPU, where XLA merges the recomputation into the first pass; where it does not, the
# recomputation may fuse differently: a few float32 ulps (on CPU, compiled apart: under 1e-7).
TOL = dict(rtol=1e-6, atol=1e-6)


def _loss_of_policy(family: str, length: int = L, batch: int = 2, **changes):
    """``(loss(policy), params)``: the loss function ``params -> loss`` of the model under each
    policy, on one batch of random tokens, and random parameters N(0, 0.1) that every policy
    shares (drawn on the host: no initialiser to compile)."""
    cfg = archzoo.load_model_config(dict(FAMILIES[family], **changes))
    _, params, rest = split_model(nnx.eval_shape(lambda: archzoo.build(cfg, seed=0)))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: jnp.asarray(rng.normal(0.0, 0.1, a.shape), a.dtype), params)
    data = {k: jnp.asarray(v[0]) for k, v in _synthetic_batch(cfg, batch, length, prefix=False).items()}

    def loss(policy):
        abstract = nnx.eval_shape(lambda: archzoo.build(cfg.replace(remat=policy), seed=0))
        graphdef = split_model(abstract)[0]
        return lambda p: loss_fn(nnx.merge(graphdef, p, rest), data, 0.0, jax.random.key(1))[0]

    return loss, params


@pytest.mark.parametrize("family", FAMILIES)
def test_every_policy_gives_the_loss_and_gradients_of_none(family):
    loss, params = _loss_of_policy(family)
    policies = list(POLICIES)
    fns = [jax.value_and_grad(loss(policy)) for policy in policies]
    # One program for every policy, compiled alike; without LLVM's optimisations (half the time).
    lowered = jax.jit(lambda p: [f(p) for f in fns]).lower(params)
    results = lowered.compile(compiler_options={"xla_backend_optimization_level": 0})(params)
    (ref_loss, ref_grads), others = results[0], results[1:]
    for policy, (value, grads) in zip(policies[1:], others):
        np.testing.assert_allclose(value, ref_loss, **TOL, err_msg=policy)
        for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(ref_grads)):
            np.testing.assert_allclose(g, r, **TOL, err_msg=f"{policy}: {jax.tree_util.keystr(path)}")




def _residuals(loss, params) -> list:
    """Shapes and dtypes of what the backward pass of ``loss`` keeps from its forward pass."""
    return jax.tree.leaves(jax.eval_shape(lambda p: jax.vjp(loss, p)[1], params))


def test_each_policy_keeps_what_it_says():
    """``none`` keeps each layer's [Q, K] attention probabilities; ``full``, ``dots`` and
    ``attention`` keep none. ``full`` keeps less than ``dots``, which adds the matmul outputs,
    and ``attention`` less than ``none``."""
    loss, params = _loss_of_policy("decoder")
    kept = {p: _residuals(loss(p), params) for p in POLICIES}
    query_key = {p: [a for a in kept[p] if a.shape[-2:] == (L, L)] for p in POLICIES}
    assert len(query_key["none"]) >= BASE["num_layers"]
    assert not query_key["full"] and not query_key["dots"] and not query_key["attention"]
    nbytes = {p: sum(a.size * a.dtype.itemsize for a in kept[p]) for p in POLICIES}
    assert nbytes["full"] < nbytes["dots"] < nbytes["none"]
    assert nbytes["attention"] < nbytes["none"]


@pytest.mark.skipif(
    jax.default_backend() == "cpu",
    reason="XLA's CPU pipeline drops jax.checkpoint's optimization barriers before its late CSE and "
    "scheduling, which merge the recomputation back into the forward pass: no saving to measure",
)
def test_full_remat_needs_less_temporary_memory():
    """Without remat, when the backward pass starts, both layers' [B, H, Q, K] float32
    probabilities (xla backend: 512 KiB each at 2 x 4 x 128 x 128) are live; with ``full``, only
    the block inputs [B, L, D] (32 KiB each) and one layer's recomputed activations at a time."""
    loss, params = _loss_of_policy("decoder", length=128, attention={"num_heads": 4, "backend": "xla"})

    def temp_bytes(policy):
        compiled = jax.jit(jax.grad(loss(policy))).lower(params).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert temp_bytes("full") < temp_bytes("none")


def test_the_bench_peak_counts_a_donated_buffer_once():
    """``archzoo bench train``'s peak memory: doubling 1 MiB in place needs 1 MiB, into a new
    buffer 2 MiB (XLA reports the donated output among both arguments and outputs)."""
    x = jnp.zeros((256, 1024), jnp.float32)
    double = lambda x: x * 2
    assert compiled_peak_bytes(jax.jit(double).lower(x).compile()) == 2 * x.nbytes
    assert compiled_peak_bytes(jax.jit(double, donate_argnums=0).lower(x).compile()) == x.nbytes


def test_a_run_resumes_across_remat_policies_but_not_across_a_model_change(tmp_path):
    """A run directory written before ``remat`` existed, or under another policy, is the same run."""
    run = tmp_path / "run"
    assert not prepare_run_dir(run, {"model": {"d_model": 32}}, overwrite=False)
    assert prepare_run_dir(run, {"model": {"d_model": 32, "remat": "full"}}, overwrite=False)
    assert prepare_run_dir(run, {"model": {"d_model": 32, "remat": "attention"}}, overwrite=False)
    with pytest.raises(RunDirError, match="model.d_model"):
        prepare_run_dir(run, {"model": {"d_model": 64, "remat": "attention"}}, overwrite=False)
