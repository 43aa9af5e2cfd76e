"""Special-token ids go through load_hf and save_hf unchanged, into config.json and
generation_config.json (what transformers' generate reads), for every converted model type."""

import importlib
import json

import pytest
import torch
import transformers
import yaml
from flax import nnx

from archzoo.config import to_dict
from archzoo.convert import HF_CONVERTERS, load_hf, save_hf
from archzoo.data.special import SpecialTokens
from archzoo.models import FAMILIES
from archzoo.models.config import load_model_config
from tests.convert.hf_models import MODEL_TYPES, hf_model, save

ENCODER_DECODERS = ("t5", "bart")
# Ids no transformers config class has as its default.
IDS = dict(bos_token_id=250, eos_token_id=18, pad_token_id=7)
TOKEN_KEYS = (*IDS, "decoder_start_token_id")


def ids_for(model_type: str) -> dict:
    return IDS | {"decoder_start_token_id": 9} if model_type in ENCODER_DECODERS else IDS


def config_ids(folder, keys) -> list[dict]:
    """The ids as config.json holds them, and as transformers reads the model's config."""
    written = json.loads((folder / "config.json").read_text())
    config = transformers.AutoConfig.from_pretrained(folder)
    return [{key: written.get(key) for key in keys}, {key: getattr(config, key, None) for key in keys}]


def generation_ids(folder, keys) -> list[dict]:
    """The ids as generation_config.json holds them, and as transformers' generate reads them."""
    written = json.loads((folder / "generation_config.json").read_text())
    config = transformers.GenerationConfig.from_pretrained(folder)
    return [{key: written.get(key) for key in keys}, {key: getattr(config, key, None) for key in keys}]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_special_token_ids_survive_load_hf_and_save_hf(model_type, tmp_path):
    ids = ids_for(model_type)
    torch.manual_seed(0)
    folder = save(hf_model(model_type, **ids), tmp_path / "hf")
    out = save_hf(load_hf(folder), tmp_path / "out")
    assert config_ids(out, ids) == [ids, ids]
    assert generation_ids(out, ids) == [ids, ids]


def test_several_eos_ids_survive(tmp_path):
    """Llama 3 ends generation at any of several tokens."""
    ids = IDS | {"eos_token_id": [18, 19]}
    torch.manual_seed(0)
    out = save_hf(load_hf(save(hf_model("llama", **ids), tmp_path / "hf")), tmp_path / "out")
    assert config_ids(out, ids) == [ids, ids]
    assert generation_ids(out, ids) == [ids, ids]


@pytest.mark.parametrize("model_type", ["gpt2", "t5"])
def test_a_model_not_read_from_hugging_face_is_written_with_archzoo_reserved_ids(model_type, tmp_path):
    """Not transformers' defaults (GPT-2's 50256 lies outside a 256-token vocabulary)."""
    torch.manual_seed(0)
    cfg = load_hf(save(hf_model(model_type), tmp_path / "hf")).config.replace(token_ids=None)
    model = FAMILIES[cfg.family](cfg, rngs=nnx.Rngs(params=0))
    reserved = SpecialTokens()
    expected = dict(bos_token_id=reserved.bos, eos_token_id=reserved.eos, pad_token_id=reserved.pad)
    if model_type in ENCODER_DECODERS:
        expected["decoder_start_token_id"] = reserved.pad
    out = save_hf(model, tmp_path / "out", model_type=model_type)
    assert config_ids(out, expected) == [expected, expected]
    assert generation_ids(out, expected) == [expected, expected]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_ids_a_config_json_lacks_are_the_transformers_defaults(model_type, tmp_path):
    config = hf_model(model_type).config.to_dict()
    for key in TOKEN_KEYS:
        config.pop(key, None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    reference = transformers.AutoConfig.from_pretrained(tmp_path)
    ids = importlib.import_module(HF_CONVERTERS[model_type]).config_from_hf(config).token_ids
    ours = dict(bos_token_id=ids.bos, eos_token_id=ids.eos, pad_token_id=ids.pad, decoder_start_token_id=ids.decoder_start)
    assert ours == {key: getattr(reference, key, None) for key in TOKEN_KEYS}


def test_a_token_id_that_is_not_an_integer_is_refused_by_key():
    module = importlib.import_module(HF_CONVERTERS["llama"])
    with pytest.raises(ValueError, match=r"'llama'.*eos_token_id='</s>'"):
        module.config_from_hf({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "eos_token_id": "</s>"})


def test_token_ids_survive_the_model_config_yaml(tmp_path):
    """A converted config written as YAML (as a run directory keeps it) reads back equal."""
    torch.manual_seed(0)
    cfg = load_hf(save(hf_model("llama", **IDS | {"eos_token_id": [18, 19]}), tmp_path / "hf")).config
    assert cfg.token_ids.eos == (18, 19)
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    assert load_model_config(tmp_path / "model.yaml") == cfg

