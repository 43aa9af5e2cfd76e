"""The encoder-only family (BERT-style MLM baseline): bidirectional self-attention."""

from __future__ import annotations

from flax import nnx

from archzoo.masks import Mask, TokenFacts
from archzoo.models.base import LanguageModel, stream_facts
from archzoo.models.config import ModelConfig
from archzoo.models.output import ModelOutput
from archzoo.models.self_attention import self_attention_mask
from archzoo.models.stack import Stack

__all__ = ["Encoder"]


class Encoder(LanguageModel):
    """Embedding, one bidirectional stack, output head (tied by default) over every token."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self._init_embedding(cfg, rngs)
        (spec,) = cfg.stacks
        self.stack = Stack(cfg, spec, rngs=rngs)

    def __call__(self, tokens, facts: TokenFacts | None = None, *, mask: Mask | None = None):
        """Logits ``[B, L, V]`` float32 for int tokens ``[B, L]`` (``full & same_segment`` mask)."""
        return self.forward(tokens, facts, mask=mask).logits

    def forward(self, tokens, facts: TokenFacts | None = None, *, mask: Mask | None = None, rng=None) -> ModelOutput:
        """Logits with the layers' auxiliary losses and statistics (``rng``: a key in training)."""
        tokens, facts = self.check_inputs(tokens, facts)
        if mask is None:
            mask = self_attention_mask(self.config, facts, bidirectional=True)
        x, out = self.stack(self.embed(tokens, self.dtype), facts, mask, rng=rng)
        return ModelOutput.of(self.logits(x), [out.report])

    def batch_inputs(self, batch: dict) -> dict:
        """:meth:`forward`'s arguments for a packed batch: the encoder stream."""
        return {"tokens": batch["encoder_tokens"], "facts": stream_facts(batch, "encoder")}
