"""Where MoE routing legitimately breaks the family invariants, shown rather than skipped, and
the config errors a user meets first.

Token-choice dropless routing keeps every invariant (tests/models/test_families.py runs its MoE
configs through them all). Capacity dropping makes tokens compete for places, so packing
another example into the row changes who is dropped; expert choice lets every expert pick among
all tokens of a group, so a later token changes an earlier token's output."""

import numpy as np
import pytest

import archzoo
from archzoo.config import ConfigError
from tests.models.test_families import BASE, V, _packed_equals_alone, tokens


def _model(seed=1, **moe):
    model = archzoo.build(**BASE, moe={"num_experts": 4, **moe}, seed=seed)
    for block in model.stack.blocks:  # a decisive router, so small changes cannot flip choices by accident
        block.mlp.router[...] = block.mlp.router[...] * 20
    return model


def test_capacity_dropping_breaks_packing_equivalence_and_enough_capacity_restores_it():
    lengths = [4, 7, 2]
    tight = _model(top_k=1, normalize=False, dispatch="capacity", expert_capacity=2)
    with pytest.raises(AssertionError):  # other examples of the row take the places a lone example keeps
        _packed_equals_alone(tight, lengths)
    roomy = _model(top_k=1, normalize=False, dispatch="capacity", expert_capacity=16)
    _packed_equals_alone(roomy, lengths)


def _later_token_changes_earlier_outputs(model) -> float:
    rng = np.random.default_rng(0)
    x = tokens(rng, 2, 12)
    base = np.asarray(model(x))
    y = x.copy()
    y[:, 9:] = (y[:, 9:] + 7) % V
    return float(np.abs(np.asarray(model(y))[:, :9] - base[:, :9]).max())


@pytest.mark.slow
def test_expert_choice_lets_later_tokens_change_earlier_outputs_and_token_choice_does_not():
    leaky = _model(router="expert_choice", top_k=1, allow_future_leak=True)
    assert _later_token_changes_earlier_outputs(leaky) > 1e-4
    causal = _model(top_k=2)
    assert _later_token_changes_earlier_outputs(causal) == 0.0


def test_capacity_by_score_lets_later_tokens_evict_earlier_ones():
    """With priority by router score a later, more confident token can take an earlier token's
    place; priority by position with one expert per token keeps the decoder causal."""
    by_score = _model(top_k=1, normalize=False, dispatch="capacity", expert_capacity=2, priority="score")
    assert _later_token_changes_earlier_outputs(by_score) > 1e-4
    by_position = _model(top_k=1, normalize=False, dispatch="capacity", expert_capacity=2, priority="position")
    assert _later_token_changes_earlier_outputs(by_position) == 0.0


@pytest.mark.parametrize(
    "moe, key, words",
    [
        ({"num_experts": 4, "top_k": 5}, "moe.top_k", "more than moe.num_experts=4"),
        ({"num_experts": 0}, "moe.num_experts", "at least one expert"),
        ({"capacity_factor": 0}, "moe.capacity_factor", "must be > 0"),
        ({"capacity_factor": -1.5}, "moe.capacity_factor", "must be > 0"),
        ({"layers": [0, 2]}, "moe.layers", "layer 2 is past the last layer of the decoder (2 layers: 0..1)"),
        ({"first_dense": 2}, "moe", "places no MoE layer"),
        ({"router": "expert_choice"}, "moe.router", "allow_future_leak"),
        ({"offset": 2, "every": 2}, "moe.offset", "[0, moe.every=2)"),
    ],
)
def test_bad_moe_settings_name_the_key(moe, key, words):
    with pytest.raises(ConfigError) as err:
        archzoo.load_model_config(dict(BASE, moe=moe))
    assert str(err.value).startswith(f"{key}: ") and words in str(err.value), str(err.value)


def test_expert_choice_is_accepted_in_an_encoder_and_with_the_acknowledgement():
    archzoo.load_model_config(dict(BASE, family="encoder", moe={"router": "expert_choice"}))
    archzoo.load_model_config(dict(BASE, moe={"router": "expert_choice", "allow_future_leak": True}))
    enc_dec = dict(BASE, family="encoder_decoder", moe={"router": "expert_choice", "stacks": ["encoder"]})
    archzoo.load_model_config(enc_dec)


def test_a_bad_moe_key_in_a_yaml_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("d_model: 32\nnum_layers: 2\nmoe:\n  num_experts: 4\n  top_k: 9\n")
    with pytest.raises(ConfigError) as err:
        archzoo.load_model_config(path)
    text = str(err.value)
    assert "m.yaml" in text and "line 5" in text and "moe.top_k" in text, text
