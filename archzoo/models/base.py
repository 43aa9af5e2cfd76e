"""What every family shares: embedding, output head, input checks, dtype."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from archzoo.layers.embed import Embedding, Head
from archzoo.layers.init import parametrisation
from archzoo.masks import TokenFacts, facts as make_facts
from archzoo.models.config import ModelConfig
from archzoo.sharding import constrain

__all__ = ["LanguageModel", "Buffer", "check_tokens", "stream_facts"]


class Buffer(nnx.Variable):
    """A fixed, non-trained array saved with the model (BART's final_logits_bias)."""


def check_tokens(tokens, vocab_size: int, name: str = "tokens") -> jax.Array:
    """Token ids as int32 ``[B, L]``, checked against the vocabulary when they are concrete.

    Raises:
      ValueError: naming the argument when ids are outside ``[0, vocab_size)`` or not 2-D.
    """
    if isinstance(tokens, jax.core.Tracer):
        return tokens
    try:
        arr = np.asarray(tokens)
    except ValueError:
        lengths = [len(row) if hasattr(row, "__len__") else 1 for row in tokens]
        raise ValueError(f"{name}: rows have different lengths {lengths}; pad them to one [batch, length] array") from None
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected token ids of shape [batch, length], got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected integer token ids, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        bad = arr.max() if arr.max() >= vocab_size else arr.min()
        where = tuple(int(i) for i in np.argwhere(arr == bad)[0])
        raise ValueError(f"{name}: token id {int(bad)} at {where} is outside the vocabulary [0, {vocab_size}) (vocab_size={vocab_size})")
    return jnp.asarray(arr, jnp.int32)


def stream_facts(batch: dict, stream: str) -> TokenFacts:
    """Token facts of one stream of a packed batch (:mod:`archzoo.features.packing`).

    The feature converters keep each example contiguous with positions counting up from 0, so
    the facts are marked ``ordered`` (causal attention then skips the key blocks after each
    query block; see :class:`archzoo.masks.TokenFacts`). A hand-made batch must keep that layout.
    """
    return TokenFacts(batch[f"{stream}_segment_ids"], batch[f"{stream}_positions"], batch[f"{stream}_is_input"], ordered=True)


def check_facts(facts: TokenFacts | None, shape: tuple, name: str) -> TokenFacts:
    """Default facts (one unpadded example per row) or the given ones, checked against tokens."""
    if facts is None:
        return make_facts(shape=shape)
    if not isinstance(facts, TokenFacts):
        raise TypeError(f"{name}: expected archzoo.masks.TokenFacts (see archzoo.facts), got {type(facts).__name__}")
    if tuple(facts.shape) != tuple(shape):
        raise ValueError(f"{name}: facts have shape {tuple(facts.shape)} but the tokens have shape {tuple(shape)}")
    return facts


def check_positions(positions_BL, max_len: int, name: str) -> None:
    """Refuses concrete positions outside a learned table ``[0, max_len)``, which a lookup would
    clip to its first or last row. Traced positions (under ``jax.jit``) cannot be checked.

    Raises:
      ValueError: naming ``name`` (the facts' positions), the position, where it is and the table.
    """
    if isinstance(positions_BL, jax.core.Tracer):
        return
    pos = np.asarray(positions_BL)
    outside = (pos < 0) | (pos >= max_len)
    if outside.any():
        where = tuple(int(i) for i in np.argwhere(outside)[0])
        raise ValueError(
            f"{name}: position {int(pos[where])} at {where} is outside the learned position table [0, {max_len}) "
            f"(position.max_len={max_len})"
        )


class LanguageModel(nnx.Module):
    """Base of the families: token embedding and output head from ``cfg.embedding``.

    Every family has ``forward(...) -> ModelOutput`` (logits, auxiliary losses and statistics,
    cache), ``__call__`` (the logits alone, for users), and ``batch_inputs(batch)``: the keyword
    arguments of ``forward`` for a packed training batch, so the loss, the train loop and the
    benchmarks never ask which family they hold. A family that generates also has
    ``generation_cache`` and ``decode_step`` (:mod:`archzoo.generation`), and says in
    ``source_stream`` which input it conditions on besides the prompt (None: only the prompt).
    """

    source_stream: str | None = None

    def check_inputs(self, tokens, facts: TokenFacts | None, stack: str = "") -> tuple[jax.Array, TokenFacts]:
        """Token ids ``[B, L]`` and their facts, checked against the vocabulary and, with a
        learned position table, the positions it holds (when the values are concrete).

        Args:
          stack: ``""``, ``"encoder "`` or ``"decoder "``: how errors name the arguments.
        """
        tokens = check_tokens(tokens, self.config.vocab_size, f"{stack}tokens")
        given = facts is not None
        facts = check_facts(facts, tokens.shape, f"{stack}facts")
        pos = self.config.position
        if pos.kind == "learned":
            if given:
                check_positions(facts.positions, pos.max_len, f"{stack}facts.positions")
            elif tokens.shape[1] > pos.max_len:
                raise ValueError(
                    f"{stack}tokens: length {tokens.shape[1]} is longer than the learned position table "
                    f"(position.max_len={pos.max_len}); pass shorter rows, or pack examples of at most "
                    f"{pos.max_len} tokens with facts"
                )
        return tokens, facts

    def _init_embedding(self, cfg: ModelConfig, rngs: nnx.Rngs) -> None:
        self.config = cfg
        self.dtype = jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32
        init = parametrisation(cfg.init, cfg.d_model, cfg.head_dim)
        self.output_multiplier = init.output_multiplier  # μP's base_width / d_model; else 1
        std = init.embedding_std
        self.embed = Embedding(cfg.vocab_size, cfg.d_model, scale=cfg.embedding.scale, rngs=rngs, init_std=std)
        self.head = None if cfg.embedding.tie else Head(cfg.d_model, cfg.vocab_size, rngs=rngs, init_std=std)
        self.final_logits_bias = Buffer(jnp.zeros((cfg.vocab_size,), jnp.float32)) if cfg.embedding.final_logits_bias else None

    def logits(self, x_BLD: jax.Array) -> jax.Array:
        """Output logits ``[B, L, V]`` in float32, times the init's output multiplier (μP), plus
        the fixed logits bias."""
        if self.head is None:
            if self.config.embedding.tied_head_rescale:
                x_BLD = x_BLD * self.config.d_model**-0.5
            out = self.embed.attend(x_BLD)
        else:
            out = self.head(x_BLD)
        if self.output_multiplier != 1.0:
            out = out * self.output_multiplier
        if self.final_logits_bias is not None:
            out = out + self.final_logits_bias[...]
        out = constrain(out, ("batch", "length", "vocab"))
        return out
