"""archzoo: compare language-model architectures under one mask algebra and one objective
interface, in JAX.

The public API for research code::

    import archzoo
    model = archzoo.build("configs/models/gpt2-small.yaml")        # or archzoo.build(d_model=128, ...)
    logits = model(tokens, archzoo.facts(segment_ids=segment_ids))  # [B, L, V]
    mask = archzoo.masks.causal(f) & archzoo.masks.same_segment(f)
    archzoo.count_params("configs/models/llama2-7b.yaml").total
"""

import importlib

# Each public name -> the module that defines it. They load on first use, so `import archzoo.masks`
# (or any one submodule) does not pull in flax, the model families or Hugging Face interop.
_EXPORTS = {
    "Mask": "archzoo.masks",
    "TokenFacts": "archzoo.masks",
    "facts": "archzoo.masks",
    "ConfigError": "archzoo.config",
    "Generation": "archzoo.generation",
    "generate": "archzoo.generation",
    "Decoder": "archzoo.models",
    "Encoder": "archzoo.models",
    "EncoderDecoder": "archzoo.models",
    "ModelConfig": "archzoo.models",
    "ParamCount": "archzoo.models",
    "build": "archzoo.models",
    "count_params": "archzoo.models",
    "load_model_config": "archzoo.models",
}
_SUBMODULES = ("masks", "convert")

__all__ = [*_SUBMODULES, *_EXPORTS]

__version__ = "0.1.0"


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"archzoo.{name}")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'archzoo' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
