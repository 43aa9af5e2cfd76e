"""How a model's weights started does not stop it from being written as a Hugging Face folder;
μP's multipliers, which change its forward pass, do (named)."""

from pathlib import Path

import numpy as np
import pytest

from archzoo import convert
from archzoo.models import build

GPT2 = Path(__file__).resolve().parents[2] / "configs" / "models" / "gpt2-small.yaml"
SMALL = ["num_layers=1", "d_model=96", "vocab_size=300", "mlp.d_ff=64", "position.max_len=32"]


@pytest.mark.parametrize("kind", ["normal", "depth_scaled"])
def test_any_standard_init_exports_and_reads_back_with_equal_weights(tmp_path, kind):
    model = build(GPT2, overrides=[*SMALL, f"init.kind={kind}"])
    convert.save_hf(model, tmp_path, "gpt2")
    back = convert.get_params(convert.load_hf(tmp_path))
    for name, value in convert.get_params(model).items():
        np.testing.assert_array_equal(np.asarray(back[name]), np.asarray(value))


def test_a_mup_model_is_refused_naming_init(tmp_path):
    model = build(GPT2, overrides=[*SMALL, "d_model=192", "init.kind=mup", "init.base_width=96"])
    with pytest.raises(ValueError, match=r"init.kind='mup'"):
        convert.save_hf(model, tmp_path, "gpt2")
