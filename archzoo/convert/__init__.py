"""Hugging Face interop: read a local ``save_pretrained`` folder (config.json + safetensors) into
the matching archzoo family, config and weights, and write one back.

One module per Hugging Face ``model_type`` under :mod:`archzoo.convert`, each with four plain
functions:

- ``config_from_hf(hf: dict) -> ModelConfig``
- ``config_to_hf(cfg: ModelConfig) -> dict``
- ``weights_from_hf(tensors: dict[str, np.ndarray], cfg) -> dict[str, np.ndarray]`` keyed by
  archzoo parameter path (``"stack/blocks/0/attn/q"``, see :func:`param_paths`)
- ``weights_to_hf(params: dict[str, np.ndarray], cfg) -> dict[str, np.ndarray]``
"""

from __future__ import annotations

import dataclasses

import importlib
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from archzoo.convert.common import GENERATION_KEYS
from archzoo.models import FAMILIES
from archzoo.models.base import Buffer
from archzoo.models.config import ModelConfig

__all__ = ["HF_CONVERTERS", "load_hf", "save_hf", "get_params", "set_params", "param_paths"]

# model_type in config.json -> module of this package that converts it
HF_CONVERTERS = {
    "gpt2": "archzoo.convert.gpt2",
    "opt": "archzoo.convert.opt",
    "bloom": "archzoo.convert.bloom",
    "llama": "archzoo.convert.llama",
    "mistral": "archzoo.convert.llama",
    "t5": "archzoo.convert.t5",
    "bart": "archzoo.convert.bart",
    "mixtral": "archzoo.convert.mixtral",
    "olmoe": "archzoo.convert.olmoe",
    "qwen2_moe": "archzoo.convert.qwen2_moe",
    "switch_transformers": "archzoo.convert.switch_transformers",
}


# the Hugging Face model types with MoE layers
MOE_MODEL_TYPES = ("mixtral", "olmoe", "qwen2_moe", "switch_transformers")


def _module(model_type: str):
    if model_type not in HF_CONVERTERS:
        raise ValueError(f"model_type {model_type!r} has no converter; supported: {', '.join(sorted(HF_CONVERTERS))}")
    return importlib.import_module(HF_CONVERTERS[model_type])


def _key(path) -> str:
    return "/".join(str(p) for p in path)


# A scanned stack holds its blocks' variables stacked under ``{stack}/layers/...``; the path
# functions below speak the unrolled names ``{stack}/blocks/{i}/...`` for either layout.
_SCANNED = "/layers/"


def _unrolled(path: str, value_shape: tuple[int, ...]) -> list[tuple[str, int | None]]:
    """The unrolled names of one variable path: itself, or one per layer of a scanned stack."""
    if _SCANNED not in path:
        return [(path, None)]
    stack, rest = path.split(_SCANNED, 1)
    return [(f"{stack}/blocks/{i}/{rest}", i) for i in range(value_shape[0])]


def get_params(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every parameter and buffer of a model as ``{"stack/blocks/0/attn/q": array}`` (numpy),
    per layer whether the model's stacks are unrolled or scanned."""
    out = {}
    for p, v in nnx.to_flat_state(nnx.state(model, (nnx.Param, Buffer))):
        value = np.asarray(v.get_value())
        for name, i in _unrolled(_key(p), value.shape):
            out[name] = value if i is None else value[i]
    return out


def param_paths(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """Path -> shape of every parameter and buffer, per layer as :func:`get_params` names them
    (works on ``nnx.eval_shape`` models)."""
    out = {}
    for p, v in nnx.to_flat_state(nnx.state(model, (nnx.Param, Buffer))):
        shape = tuple(v.get_value().shape)
        for name, i in _unrolled(_key(p), shape):
            out[name] = shape if i is None else shape[1:]
    return out


def set_params(model: nnx.Module, params: dict[str, np.ndarray]) -> None:
    """Sets every parameter and buffer from a dict keyed as :func:`get_params` names them (per
    layer, for either layout); all must be given, shapes equal."""
    state = nnx.state(model, (nnx.Param, Buffer))
    flat = nnx.to_flat_state(state)
    expected = param_paths(model)
    missing, unknown = set(expected) - set(params), set(params) - set(expected)
    if missing or unknown:
        raise ValueError(f"weights do not match the model: missing {sorted(missing)[:8]}, unexpected {sorted(unknown)[:8]}")
    for name, shape in expected.items():
        value = np.asarray(params[name])
        if tuple(value.shape) != shape:
            raise ValueError(f"{name}: weight has shape {value.shape}, the model expects {shape}")
    for path, var in flat:
        names = _unrolled(_key(path), tuple(var.get_value().shape))
        value = np.asarray(params[names[0][0]]) if names[0][1] is None else np.stack([np.asarray(params[n]) for n, _ in names])
        var.set_value(jnp.asarray(value, jnp.float32))
    nnx.update(model, nnx.from_flat_state(flat))


def _read_tensors(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors file (save the model with safe_serialization=True)")
    tensors = {}
    for f in files:
        try:
            tensors.update(load_file(str(f)))
        except Exception:  # bfloat16 has no numpy dtype: go through JAX
            from safetensors.flax import load_file as load_jax

            tensors.update({k: np.asarray(v, np.float32) for k, v in load_jax(str(f)).items()})
    return {k: np.asarray(v, np.float32) for k, v in tensors.items()}


def read_hf_config(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (expected a folder written by save_pretrained)")
    return json.loads(path.read_text())


def load_hf(folder: str | Path, *, scan_layers: bool = False) -> nnx.Module:
    """Reads a Hugging Face folder into an archzoo model of the matching family.

    Args:
      folder: a local folder with ``config.json`` and ``*.safetensors``.
      scan_layers: build the model with scanned stacks (``ModelConfig.scan_layers``).

    Returns:
      the model (its ``.config`` is the converted ModelConfig), weights in float32.
    """
    folder = Path(folder)
    hf = read_hf_config(folder)
    model_type = hf.get("model_type")
    module = _module(model_type)
    cfg = module.config_from_hf(hf)
    if scan_layers:
        cfg = dataclasses.replace(cfg, scan_layers=True)
    tensors = _read_tensors(folder)
    params = module.weights_from_hf(tensors, cfg)
    # Shapes only: every weight is then set from the checkpoint, so nothing is initialised twice.
    model = nnx.eval_shape(lambda: FAMILIES[cfg.family](cfg, rngs=nnx.Rngs(params=0)))
    set_params(model, params)
    return model


def save_hf(model: nnx.Module, folder: str | Path, model_type: str | None = None) -> Path:
    """Writes a model as a Hugging Face folder: config.json, model.safetensors, and the
    special-token ids again in generation_config.json (what transformers' ``generate`` reads).

    Args:
      model: an archzoo model.
      folder: where to write (created).
      model_type: the Hugging Face model type; default: the config's ``name`` when it names one
        (configs read by :func:`load_hf` do).
    """
    from safetensors.numpy import save_file

    cfg: ModelConfig = model.config
    model_type = model_type or cfg.name
    module = _module(model_type)
    cfg = cfg.replace(name=model_type)
    if cfg.moe is not None and model_type not in MOE_MODEL_TYPES:
        raise ValueError(
            f"model_type {model_type!r} has no Mixture-of-Experts layers and this model has (moe is set); "
            f"write it as one of {', '.join(sorted(MOE_MODEL_TYPES))}"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf = module.config_to_hf(cfg)
    hf.setdefault("model_type", model_type)
    tensors = module.weights_to_hf(get_params(model), cfg)
    tensors = {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True))
    generation = {key: hf[key] for key in GENERATION_KEYS if key in hf}
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2, sort_keys=True))
    return folder
