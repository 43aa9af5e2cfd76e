"""Every reader accounts for every tensor of a checkpoint: one it would not use is refused by name,
never dropped."""

import numpy as np
import pytest
import torch

from archzoo.convert import load_hf
from tests.convert.hf_models import MODEL_TYPES, edit_tensors, hf_model, save

# model_type -> a tensor of a third layer, which the 2-layer config.json does not have
THIRD_LAYER = {
    "gpt2": "transformer.h.2.mlp.c_fc.bias",
    "opt": "model.decoder.layers.2.fc1.bias",
    "bloom": "transformer.h.2.mlp.dense_h_to_4h.bias",
    "llama": "model.layers.2.post_attention_layernorm.weight",
    "mistral": "model.layers.2.post_attention_layernorm.weight",
    "t5": "decoder.block.2.layer.2.layer_norm.weight",
    "bart": "model.decoder.layers.2.fc1.bias",
}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_a_tensor_the_reader_does_not_use_is_refused_by_name(model_type, tmp_path):
    torch.manual_seed(0)
    folder = save(hf_model(model_type), tmp_path)
    extra = THIRD_LAYER[model_type]
    layer_one = extra.replace(".2.", ".1.", 1)

    def add_layer(tensors):
        assert layer_one in tensors and extra not in tensors
        return tensors | {extra: np.ones_like(tensors[layer_one])}

    edit_tensors(folder, add_layer)
    with pytest.raises(ValueError, match=rf"'{model_type}'.*would not use.*'{extra}'"):
        load_hf(folder)


@pytest.mark.parametrize(
    "model_type, embedding, copy",
    [
        ("gpt2", "transformer.wte.weight", "lm_head.weight"),
        ("t5", "shared.weight", "decoder.embed_tokens.weight"),
        ("bart", "model.shared.weight", "model.encoder.embed_tokens.weight"),
    ],
)
def test_a_tied_copy_holding_other_values_is_refused_by_name(model_type, embedding, copy, tmp_path):
    """transformers ties these tensors to the embedding on load; a checkpoint whose copy differs
    holds weights that neither it nor archzoo would use."""
    torch.manual_seed(0)
    folder = save(hf_model(model_type), tmp_path)
    edit_tensors(folder, lambda tensors: tensors | {copy: tensors[embedding] + 1.0})
    with pytest.raises(ValueError, match=rf"'{model_type}'.*'{copy}' differs from '{embedding}'"):
        load_hf(folder)
