"""A block (self-attention, optional cross-attention, MLP) and a stack of them.

Every family is one or two stacks over shared layers. A stack owns what its published model
keeps per stack: learned positions or T5's relative bias table, the norm after the embedding,
the blocks and the final norm. It receives the mask value and never asks which family it serves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from archzoo.layers.attention import Attention
from archzoo.layers.init import Parametrisation, parametrisation
from archzoo.layers.mlp import make_mlp
from archzoo.layers.moe import MoE
from archzoo.layers.norms import make_norm
from archzoo.layers.positions import (
    LearnedPositions,
    RelativePositionBias,
    alibi_bias,
    alibi_slopes,
    rope_inverse_frequencies,
)
from archzoo.masks import Mask, TokenFacts
from archzoo.models.cache import write_slots
from archzoo.models.config import ModelConfig, StackSpec
from archzoo.models.output import LayerReport, StackOutput
from archzoo.sharding import constrain

__all__ = ["Block", "Stack"]

# What the backward pass keeps of a block under ``ModelConfig.remat`` (``none`` and ``attention``
# do not checkpoint the block; ``attention`` checkpoints the attention core, in Attention.attend).
_BLOCK_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _run_block(block, x_BLD, kwargs):
    return block(x_BLD, **kwargs)


class Block(nnx.Module):
    """Self-attention, optional cross-attention and an MLP, with pre-, post- or parallel norms.

    pre (GPT-2, Llama, T5):  x += attn(norm(x)); x += cross(norm(x)); x += mlp(norm(x))
    post (BART):             x = norm(x + attn(x)); x = norm(x + cross(x)); x = norm(x + mlp(x))
    parallel (PaLM):         h = norm(x); x += attn(h) + mlp(h)

    The MLP is an :class:`~archzoo.layers.moe.MoE` layer where ``cfg.moe`` places one
    (``name`` is ``{stack}/{layer}``, how its report is named).
    """

    def __init__(self, cfg: ModelConfig, *, cross: bool, init: Parametrisation, rngs: nnx.Rngs, name: str = "", moe: bool = False):
        D = cfg.d_model
        self.placement = cfg.norm.placement
        self.parallel = cfg.parallel_block

        def attention():
            return Attention(
                cfg.attention,
                D,
                cfg.head_dim,
                rngs=rngs,
                init_std=init.hidden_std,
                out_std=init.residual_std,
                logit_factor=init.attention_factor,
                norm=cfg.norm,
            )

        self.attn_norm = make_norm(cfg.norm, D, rngs=rngs)
        self.attn = attention()
        self.cross_norm = make_norm(cfg.norm, D, rngs=rngs) if cross else None
        self.cross_attn = attention() if cross else None
        self.mlp_norm = None if cfg.parallel_block else make_norm(cfg.norm, D, rngs=rngs)
        if moe:
            self.mlp = MoE(
                cfg.moe, cfg.mlp, D, name=name, rngs=rngs, init_std=init.hidden_std, out_std=init.residual_std
            )
        else:
            self.mlp = make_mlp(cfg.mlp, D, rngs=rngs, init_std=init.hidden_std, out_std=init.residual_std)

    def _feed_forward(self, h_BLD: jax.Array, valid_BL: jax.Array | None, rng) -> tuple[jax.Array, LayerReport]:
        if isinstance(self.mlp, MoE):
            return self.mlp(h_BLD, valid_BL, rng=rng)
        return self.mlp(h_BLD), LayerReport()

    def __call__(
        self,
        x_BLD: jax.Array,
        *,
        mask: Mask,
        bias_BHQK: jax.Array | None,
        positions_BL: jax.Array,
        inv_freq,
        kv_cache: tuple | None = None,
        cross_kv: tuple | None = None,
        cross_mask: Mask | None = None,
        valid_BL: jax.Array | None = None,
        rng=None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array], LayerReport]:
        """Returns the new hidden states ``[B, L, D]``, this layer's keys and values (the
        cache's, with the new tokens written, when ``kv_cache = (keys, values, index)``) and its
        feed-forward layer's report (empty for a dense MLP).

        ``valid_BL`` marks real tokens (padding is False); a layer that routes tokens reads it.
        ``rng``: a key in training (an MoE router's jitter and noise), None otherwise.
        """
        reports = []

        def feed_forward(h):
            y, report = self._feed_forward(h, valid_BL, rng)
            reports.append(report)
            return y

        def self_attention(h):
            q = self.attn.project_q(h, positions_BL, inv_freq)
            k, v = self.attn.project_kv(h, positions_BL, inv_freq)
            if kv_cache is not None:
                cache_k, cache_v, index = kv_cache
                k, v = write_slots(cache_k, k, index), write_slots(cache_v, v, index)
            return self.attn.attend(q, k, v, mask, bias_BHQK), (k, v)

        def cross_attention(h):
            return self.cross_attn.attend(self.cross_attn.project_q(h), *cross_kv, cross_mask)

        if self.parallel:
            h = self.attn_norm(x_BLD)
            a, kv = self_attention(h)
            x_BLD = x_BLD + a + feed_forward(h)
            if self.cross_attn is not None:
                x_BLD = x_BLD + cross_attention(self.cross_norm(x_BLD))
        elif self.placement == "pre":
            a, kv = self_attention(self.attn_norm(x_BLD))
            x_BLD = x_BLD + a
            if self.cross_attn is not None:
                x_BLD = x_BLD + cross_attention(self.cross_norm(x_BLD))
            x_BLD = x_BLD + feed_forward(self.mlp_norm(x_BLD))
        else:
            a, kv = self_attention(x_BLD)
            x_BLD = self.attn_norm(x_BLD + a)
            if self.cross_attn is not None:
                x_BLD = self.cross_norm(x_BLD + cross_attention(x_BLD))
            x_BLD = self.mlp_norm(x_BLD + feed_forward(x_BLD))
        return x_BLD, kv, reports[0]


class Stack(nnx.Module):
    """Positions, embedding norm, ``num_layers`` blocks, final norm.

    Args:
      cfg: the model config.
      spec: which of ``cfg.stacks`` this is: its name, blocks, whether they cross-attend (an
        encoder-decoder's decoder) and whether T5 relative buckets look both ways (encoder
        stacks, and decoder stacks whose mask can allow later keys: a prefix decoder's).

    The init counts this stack's residual branches for ``depth_scaled``: 2 per block (attention,
    MLP; a parallel block adds both), 3 with cross-attention; an encoder-decoder's two stacks
    count theirs apart, as each has its own residual stream.
    """

    def __init__(self, cfg: ModelConfig, spec: StackSpec, *, rngs: nnx.Rngs):
        pos, num_layers, cross, bidirectional = cfg.position, spec.num_layers, spec.cross, spec.bidirectional
        self.name = spec.name
        branches = (3 if cross else 2) * num_layers
        init = parametrisation(cfg.init, cfg.d_model, cfg.head_dim, residual_branches=branches)
        learned = pos.kind == "learned"
        self.positions = LearnedPositions(pos, cfg.d_model, rngs=rngs, init_std=init.embedding_std) if learned else None
        # an attention-logit bias from positions: T5's table, or the user's (layers/plugins.py)
        H = cfg.attention.num_heads
        if pos.kind == "t5_bias":
            self.relative_bias = RelativePositionBias(pos, H, bidirectional=bidirectional, rngs=rngs)
        elif isinstance(pos.kind, str):
            self.relative_bias = None
        else:
            self.relative_bias = pos.kind.construct(pos, H, bidirectional=bidirectional, rngs=rngs)
        self.alibi_slopes = tuple(float(s) for s in alibi_slopes(cfg.attention.num_heads)) if pos.kind == "alibi" else None
        self.rope_inv_freq = tuple(float(f) for f in rope_inverse_frequencies(pos, cfg.head_dim)) if pos.kind == "rope" else None
        self.embed_norm = make_norm(cfg.norm, cfg.d_model, rngs=rngs) if cfg.norm.embedding_norm else None
        moe = cfg.moe
        # scanned, every block is alike, so an MoE layer's name holds the layer as a field
        blocks = [
            Block(
                cfg,
                cross=cross,
                init=init,
                rngs=rngs,
                name=f"{spec.name}/{{layer}}" if cfg.scan_layers else f"{spec.name}/{i}",
                moe=moe is not None and moe.is_moe(spec.name, i),
            )
            for i in range(num_layers)
        ]
        self.num_layers = num_layers
        # unrolled: a list of blocks; scanned: one block whose variables stack the layers' on a
        # leading axis (logical name "layers"), run by jax.lax.scan
        self.blocks = None if cfg.scan_layers else nnx.List(blocks)
        self.layers = stack_blocks(blocks) if cfg.scan_layers else None
        self.final_norm = make_norm(cfg.norm, cfg.d_model, rngs=rngs) if cfg.norm.final_norm else None
        self.remat = cfg.remat
        if cfg.remat == "attention":
            (self.layers if cfg.scan_layers else self.blocks).set_attributes(Attention, remat_core=True)

    def __call__(
        self,
        x_BLD: jax.Array,
        facts: TokenFacts,
        mask: Mask,
        *,
        kv_facts: TokenFacts | None = None,
        cache=None,
        cross_kv: list | None = None,
        cross_mask: Mask | None = None,
        rng=None,
    ) -> tuple[jax.Array, StackOutput]:
        """Runs the stack over embedded tokens.

        Args:
          x_BLD: embedded tokens ``[B, L, D]``.
          facts: facts of these tokens ``[B, L]``.
          mask: self-attention mask of shape ``(B, L, K)``.
          kv_facts: facts of the keys ``[B, K]`` (the cache's slots when decoding; else facts).
          cache: a :class:`~archzoo.models.cache.KVCache` or None.
          cross_kv: per layer (keys, values) of the encoder output, or None.
          cross_mask: decoder-to-encoder mask.
          rng: a key in training (MoE router jitter and noise), None otherwise.

        Returns:
          hidden states ``[B, L, D]`` and a :class:`~archzoo.models.output.StackOutput` (the
          per-layer keys and values, and the layers' reports named ``{stack}/{layer}/{name}``).
        """
        kv_facts = facts if kv_facts is None else kv_facts
        residual = ("batch", "length", "act_embed")  # the residual stream: rows split over the mesh
        x_BLD = constrain(x_BLD, residual)
        if self.positions is not None:
            x_BLD = x_BLD + self.positions(facts.positions).astype(x_BLD.dtype)
        if self.embed_norm is not None:
            x_BLD = self.embed_norm(x_BLD)
        bias = None
        if self.relative_bias is not None:
            bias = self.relative_bias(facts.positions, kv_facts.positions)
        elif self.alibi_slopes is not None:
            bias = alibi_bias(jnp.asarray(self.alibi_slopes), facts.positions, kv_facts.positions)
        inv_freq = None if self.rope_inv_freq is None else jnp.asarray(self.rope_inv_freq, jnp.float32)
        valid = facts.segment_ids != 0
        shared = dict(mask=mask, bias_BHQK=bias, positions_BL=facts.positions, inv_freq=inv_freq, cross_mask=cross_mask, valid_BL=valid)
        run = _run_block
        if self.remat in _BLOCK_POLICIES:
            # prevent_cse: in a Python loop (not a scan) XLA would otherwise fold the backward
            # pass's recomputation into the forward pass's values and keep them after all
            run = nnx.remat(_run_block, policy=_BLOCK_POLICIES[self.remat], prevent_cse=self.layers is None)

        def layer(block, x, i, kv_cache, cross):
            y, kv, report = run(
                block,
                x,
                dict(shared, kv_cache=kv_cache, cross_kv=cross, rng=None if rng is None else jax.random.fold_in(rng, i)),
            )
            return constrain(y, residual), kv, report

        if self.layers is None:
            new_kv, reports = [], []
            for i, block in enumerate(self.blocks):
                x_BLD, kv, report = layer(block, x_BLD, i, None if cache is None else cache.layer(i), None if cross_kv is None else cross_kv[i])
                new_kv.append(kv)
                reports.append(report.prefixed(f"{self.name}/{i}"))
        else:
            x_BLD, new_kv, reports = self._scan(layer, x_BLD, cache, cross_kv)
        if self.final_norm is not None:
            x_BLD = self.final_norm(x_BLD)
        return x_BLD, StackOutput(new_kv, LayerReport.merge(reports))

    def cross_kv(self, memory_BSD: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
        """Per layer, the cross-attention keys and values ``[B, S, G, Dh]`` of the encoder output."""
        if self.layers is None:
            return [block.cross_attn.project_kv(memory_BSD) for block in self.blocks]
        graphdef, state = nnx.split(self.layers)
        k, v = jax.vmap(lambda s: nnx.merge(graphdef, s).cross_attn.project_kv(memory_BSD))(state)
        return [(k[i], v[i]) for i in range(self.num_layers)]

    def _scan(self, layer, x_BLD, cache, cross_kv):
        """The scanned blocks: ``jax.lax.scan`` over the stacked variables, each layer's cache
        slice and encoder keys and values; per-layer keys, values and reports as the loop gives."""
        graphdef, state = nnx.split(self.layers)
        L = self.num_layers
        stacked = lambda pairs: None if pairs is None else tuple(jnp.stack(a) for a in zip(*pairs))  # noqa: E731
        caches = None if cache is None else (jnp.stack(cache.keys), jnp.stack(cache.values))
        crosses = stacked(cross_kv)

        def body(x, xs):
            state_i, i, cache_i, cross_i = xs
            kv_cache = None if cache_i is None else (*cache_i, cache.index)
            y, kv, report = layer(nnx.merge(graphdef, state_i), x, i, kv_cache, cross_i)
            return y, (kv, report)

        x_BLD, (kv, report) = jax.lax.scan(body, x_BLD, (state, jnp.arange(L), caches, crosses))
        new_kv = [(kv[0][i], kv[1][i]) for i in range(L)]
        reports = [
            LayerReport({k: v[i] for k, v in report.losses.items()}, {k: v[i] for k, v in report.stats.items()}).prefixed(f"{self.name}/{i}")
            for i in range(L)
        ]
        return x_BLD, new_kv, reports


def stack_blocks(blocks: list[Block]) -> Block:
    """One block holding the variables of ``blocks`` stacked on a new leading axis, whose
    logical name is ``layers`` (a mesh may shard it; the default rules do not).

    Raises:
      ValueError: the blocks differ in structure (an MoE layer in some blocks only).
    """
    graphdefs, states = zip(*(nnx.split(b) for b in blocks))
    if any(g != graphdefs[0] for g in graphdefs[1:]):
        raise ValueError("scanned blocks must be alike: every block of a stack an MoE layer or none")
    state = jax.tree.map(lambda *vs: jnp.stack(vs), *states)

    def with_layers(v):
        names = v.get_metadata().get("out_sharding")
        return v.replace(out_sharding=("layers", *names)) if names else v

    state = jax.tree.map(with_layers, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.merge(graphdefs[0], state)
