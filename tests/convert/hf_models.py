"""Tiny random transformers models, one per converted ``model_type``, built from the configs the
parity tests use, and a way to rewrite a saved checkpoint's tensors."""

from pathlib import Path

import numpy as np
import transformers
from safetensors.numpy import load_file, save_file

from tests.convert.test_decoders import CASES as DECODER_CASES
from tests.convert.test_encoder_decoders import bart, t5_v10

# model_type -> the parity case of tests/convert/test_decoders.py it is built from
_DECODER_CASE = {"gpt2": "gpt2", "opt": "opt", "bloom": "bloom", "llama": "llama_gqa", "mistral": "mistral_window"}
MODEL_TYPES = sorted(_DECODER_CASE) + ["t5", "bart"]


def hf_model(model_type: str, **overrides):
    """A tiny transformers model of ``model_type`` (2 layers, vocab 256); ``overrides`` are more
    fields of its config class."""
    if model_type == "t5":
        return t5_v10(**overrides)
    if model_type == "bart":
        return bart(**overrides)
    _, cls_name, kwargs = DECODER_CASES[_DECODER_CASE[model_type]]
    config = getattr(transformers, cls_name)(**(kwargs | overrides))
    return transformers.AutoModelForCausalLM.from_config(config)


def save(model, folder: Path) -> Path:
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def edit_tensors(folder: Path, edit) -> None:
    """Rewrites ``folder/model.safetensors`` as ``edit(tensors)`` (name -> numpy array)."""
    path = folder / "model.safetensors"
    tensors = edit(dict(load_file(str(path))))
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata={"format": "pt"})
