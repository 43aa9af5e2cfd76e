"""Model families and the functions that build them from configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flax import nnx

from archzoo.layers.moe import BalanceBias, MoE

from archzoo.models.config import ModelConfig, check_config_argument, check_seed, load_model_config
from archzoo.models.decoder import Decoder
from archzoo.models.encoder import Encoder
from archzoo.models.encoder_decoder import EncoderDecoder

__all__ = ["FAMILIES", "build", "count_params", "ParamCount", "Decoder", "Encoder", "EncoderDecoder", "ModelConfig", "load_model_config"]

FAMILIES = {"decoder": Decoder, "encoder_decoder": EncoderDecoder, "encoder": Encoder}


def build(config: ModelConfig | str | Path | dict | None = None, *, seed: int = 0, overrides: list[str] = (), **kwargs):
    """Builds and initialises a model.

    Args:
      config: a ModelConfig, a YAML path, a mapping, or None for the tiny default.
      seed: initialisation seed, an integer in ``[0, 2**32)``.
      overrides: ``key.sub=value`` strings.
      **kwargs: top-level config fields (``d_model=128``, ``attention={"num_heads": 8}``).

    Returns:
      the family's NNX module (Decoder, EncoderDecoder or Encoder) with ``.config``.

    Raises:
      TypeError, ValueError: naming the argument that is not a config source, a seed in
        ``[0, 2**32)`` or a list of override strings.
      ConfigError: naming the config key (and the file and line for YAML files).
    """
    check_config_argument(config, "config")
    seed = check_seed(seed, "seed")
    cfg = load_model_config(config, overrides, **kwargs)
    return FAMILIES[cfg.family](cfg, rngs=nnx.Rngs(params=seed))


class ParamCount(dict):
    """``total``, ``embedding`` (token table, learned positions, untied head) and
    ``non_embedding`` parameters (Kaplan et al. 2020 count the latter), and ``active``: the
    parameters one token passes through (an MoE layer's routed experts counted ``top_k`` times,
    not E; the total for a dense model). Like the published active counts (Mixtral's 12.9B),
    ``active`` keeps the embeddings, the router and the shared experts."""

    @property
    def total(self) -> int:
        return self["total"]

    @property
    def embedding(self) -> int:
        return self["embedding"]

    @property
    def non_embedding(self) -> int:
        return self["non_embedding"]

    @property
    def active(self) -> int:
        return self["active"]


def count_params(config: ModelConfig | str | Path | dict | nnx.Module) -> ParamCount:
    """Counts parameters without allocating weights (``nnx.eval_shape``).

    Buffers (BART's final_logits_bias) are not parameters and are not counted, nor is the
    routing bias of ``moe.balance: bias`` (DeepSeek-V3 keeps it as a buffer).
    """
    if isinstance(config, nnx.Module):
        model = config
    else:
        check_config_argument(config, "config")
        cfg = load_model_config(config)
        model = nnx.eval_shape(lambda: FAMILIES[cfg.family](cfg, rngs=nnx.Rngs(params=0)))
    total = embedding = 0
    for path, leaf in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        if isinstance(leaf, BalanceBias):
            continue
        n = int(np.prod(leaf.shape))
        total += n
        names = {str(p) for p in path}
        if names & {"embed", "head"} or ("positions" in names and "table" in names):
            embedding += n
    inactive = sum(m.inactive_params() for _, m in nnx.iter_modules(model) if isinstance(m, MoE))
    return ParamCount(total=total, embedding=embedding, non_embedding=total - embedding, active=total - inactive)
