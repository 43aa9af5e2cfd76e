"""Scanned stacks (``scan_layers: true``): the same model as the unrolled one, on the same
initial weights, through training steps, generation and the per-layer parameter names that the
converters read and write."""

import jax
import jax.extend
import numpy as np
import pytest
from flax import nnx

import archzoo
from archzoo.config import ConfigError
from archzoo.convert import get_params, param_paths, set_params
from archzoo.generation import generate
from archzoo.train.optimizer import OptimizerConfig
from archzoo.train.step import init_training
from tests.multidevice import packed_batch

TINY = {"vocab_size": 256, "d_model": 32, "num_layers": 2, "attention": {"num_heads": 4}, "mlp": {"d_ff": 64}}
MODELS = {
    "prefix_decoder": {**TINY, "family": "decoder", "mask": "prefix", "position": {"kind": "rope"}},
    # two stacks, cross-attention, and T5's relative bias shared by the layers (the encoder family
    # runs the same Stack as the decoder's, with another mask)
    "encoder_decoder": {**TINY, "family": "encoder_decoder", "num_encoder_layers": 3, "position": {"kind": "t5_bias"}},
    # every layer MoE (a scan runs one block for all), with auxiliary-loss-free balancing biases
    "moe_decoder": {**TINY, "family": "decoder", "moe": {"num_experts": 4, "top_k": 2, "balance": "bias"}},
}
LR = 1e-3
# float32: the scan body fuses differently from the unrolled blocks, and Adam's normalised update
# carries a gradient's last bits into the parameter (most of all where the gradient is near 0):
# atol is 2% of one update of size LR
TOL = dict(rtol=2e-5, atol=2e-2 * LR)


def trained(model: dict, scan: bool, steps: int = 2):
    cfg = archzoo.load_model_config({**model, "scan_layers": scan})
    t = init_training(cfg, OptimizerConfig(lr=LR), seed=0)
    params, opt_state, losses = t.params, t.opt_state, []
    for i in range(steps):
        params, opt_state, m = t.train_step(params, t.rest, opt_state, packed_batch(cfg, 4, 24, seed=i), LR)
        losses.append(float(m["loss_nats"]))
    return losses, get_params(nnx.merge(t.graphdef, params, t.rest))


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_training_steps_of_a_scanned_stack_equal_the_unrolled_ones(name):
    unrolled_losses, unrolled = trained(MODELS[name], scan=False)
    scanned_losses, scanned = trained(MODELS[name], scan=True)
    np.testing.assert_allclose(scanned_losses, unrolled_losses, **TOL)
    assert sorted(scanned) == sorted(unrolled)  # the same per-layer names
    for path in unrolled:  # includes the MoE balance biases, moved per layer after each step
        np.testing.assert_allclose(scanned[path], unrolled[path], **TOL, err_msg=path)


def test_a_scanned_model_stacks_its_layers_on_a_leading_axis_named_layers():
    model = nnx.eval_shape(lambda: archzoo.build({**TINY, "scan_layers": True}, seed=0))
    q = model.stack.layers.attn.q
    assert q.shape == (2, 32, 4, 8)
    assert q.get_metadata()["out_sharding"] == ("layers", "embed", "heads", "head_dim")
    assert param_paths(model)["stack/blocks/1/attn/q"] == (32, 4, 8)


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_generation_of_a_scanned_model_equals_the_unrolled_model(family):
    cfg = {**TINY, "family": family}
    unrolled = archzoo.build(cfg, seed=0)
    scanned = archzoo.build({**cfg, "scan_layers": True}, seed=0)
    set_params(scanned, get_params(unrolled))  # weights through the per-layer names, both ways
    prompt = np.random.default_rng(0).integers(1, 256, (2, 5)).astype(np.int32)
    kwargs = {"encoder_inputs": prompt, "decoder_start_id": 0} if family == "encoder_decoder" else {"prompts": prompt}
    # sampled (the same draws for both): greedy decoding of random weights repeats one token
    a = generate(unrolled, max_new_tokens=6, temperature=1.0, seed=0, **kwargs)
    b = generate(scanned, max_new_tokens=6, temperature=1.0, seed=0, **kwargs)
    np.testing.assert_array_equal(np.asarray(b.tokens), np.asarray(a.tokens))
    assert len(set(np.asarray(a.tokens).ravel().tolist())) > 1  # not one repeated token


def test_a_scanned_stack_with_moe_in_some_layers_only_is_refused_naming_the_layers():
    with pytest.raises(ConfigError, match=r"scan_layers: a scanned stack runs one block for every layer, but the decoder stack has MoE layers \[1\] of 2"):
        archzoo.load_model_config({**TINY, "scan_layers": True, "moe": {"num_experts": 4, "every": 2, "offset": 1}})


def test_the_scan_compiles_one_block_for_any_depth():
    """The traced forward pass of a scanned stack holds one block's matmuls whatever the depth
    (the scan's body); the unrolled one holds one copy per layer."""

    def matmuls(jaxpr) -> int:
        n = 0
        for eqn in jaxpr.eqns:
            n += eqn.primitive.name == "dot_general"
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                n += matmuls(sub)
        return n

    def ops(depth: int, scan: bool) -> int:
        model = archzoo.build({**TINY, "num_layers": depth, "scan_layers": scan}, seed=0)
        return matmuls(jax.make_jaxpr(lambda t: model(t))(np.zeros((2, 8), np.int32)).jaxpr)

    assert ops(6, scan=True) == ops(2, scan=True)
    assert ops(6, scan=False) > ops(2, scan=False)
