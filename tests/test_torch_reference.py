"""The PyTorch reference step that ``archzoo bench train --reference torch`` times is the same
model and optimizer as archzoo's: with archzoo's weights copied in, one training step gives the
same loss and the same updated weights (so the speed ratio compares like with like)."""

import numpy as np
import pytest
import torch

from archzoo.bench import _synthetic_batch
from archzoo.convert import get_params
from archzoo.models import build, load_model_config
from archzoo.train.optimizer import OptimizerConfig
from archzoo.train.step import make_train_step, split_model
from benchmarks.torch_gpt import TorchStep, from_archzoo

CFG = dict(
    vocab_size=64, d_model=32, num_layers=2, attention={"num_heads": 4, "bias": True, "out_bias": True},
    mlp={"d_ff": 64, "activation": "gelu_tanh"}, position={"kind": "learned", "max_len": 16},
)


def test_one_step_of_the_reference_equals_one_archzoo_step():
    from flax import nnx

    cfg = load_model_config(CFG)
    model = build(cfg, seed=0)
    weights = get_params(model)  # before the step, which donates the model's buffers
    ref = from_archzoo(cfg, weights)
    data = _synthetic_batch(cfg, 3, 16, prefix=False)
    opt = OptimizerConfig(lr=1e-2)
    graphdef, params, rest = split_model(model)
    step, tx = make_train_step(graphdef, opt)
    new_params, _, metrics = step(params, rest, tx.init(params), data, opt.lr)
    torch_step = TorchStep(ref, lr=opt.lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay, clip_norm=opt.clip_norm)
    tokens = torch.from_numpy(data["decoder_tokens"][0].astype(np.int64))
    targets = torch.from_numpy(data["decoder_targets"][0].astype(np.int64))
    loss = float(torch_step(tokens, targets))
    assert loss == pytest.approx(float(metrics["loss_nats"]), rel=1e-5)
    stepped = from_archzoo(cfg, get_params(nnx.merge(graphdef, new_params, rest))).state_dict()
    before = from_archzoo(cfg, weights).state_dict()
    # A first AdamW update is lr * g / (|g| + eps): +-lr for a gradient well above eps, but set by
    # float32 rounding for one within a few eps of zero (a sum that cancels, such as the head's
    # gradient of a token in no input and no target, a key bias's gradient, zero in exact
    # arithmetic), where the two may differ by up to lr.
    grads = {name: p.grad.numpy() for name, p in ref.named_parameters()}  # clipped, as AdamW saw them
    conditioned = {name: np.abs(g) > 100 * opt.eps for name, g in grads.items()}
    assert sum(c.sum() for c in conditioned.values()) > 0.9 * sum(c.size for c in conditioned.values())  # the tight check covers most weights
    for name, value in ref.state_dict().items():
        moved = np.abs(stepped[name].numpy() - before[name].numpy()).max()
        assert moved > 1e-4, name  # every weight moved: the comparison below is not vacuous
        well = conditioned[name]
        np.testing.assert_allclose(value.numpy()[well], stepped[name].numpy()[well], rtol=1e-4, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(value.numpy(), stepped[name].numpy(), atol=opt.lr, err_msg=name)


def test_the_reference_refuses_a_config_it_does_not_mirror():
    with pytest.raises(ValueError, match=r"norm.kind='rmsnorm' \(the reference has 'layernorm'\).*mlp.gated=True"):
        from_archzoo(load_model_config(CFG, norm={"kind": "rmsnorm"}, mlp={"d_ff": 64, "gated": True, "activation": "gelu_tanh"}))
