"""TPU splash attention told the mask's structure instead of its dense array.

Splash attention (``jax.experimental.pallas.ops.tpu.splash_attention``) takes a static mask
object over indices, here one of ``FullMask``, ``CausalMask`` or ``LocalMask`` (its sparsity is
worked out once, at trace time), and-ed with ``SegmentIds``: a query attends only to keys of
its own id. Segment ids are data, so packed rows need no static promise; ``is_input`` is data
too, which is why ``prefix`` stays on the xla path. The kernel takes no logit bias and does
not scale the logits (the queries are scaled before it).

Outputs agree with the mask at every non-padding query. Padding queries attend to the padding
keys before them in the row (the xla backend: by position, or nothing under ``not_padding``).

Shapes: ``B`` batch, ``Q``/``K`` query/key length, ``H`` query heads, ``G`` kv heads, ``Dh`` head
width.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
from einops import rearrange
from jax.experimental.pallas.ops.tpu import splash_attention as sa

from archzoo.masks import Mask, TokenFacts
from archzoo.sharding import per_device_attention

__all__ = ["SplashMask", "translate", "attend", "supports", "BLOCK"]

# The kernel's tiles (its default BlockSizes); sequence lengths must be multiples of it.
BLOCK = 128

_SEGMENTS = {"same_segment", "cross"}


@dataclasses.dataclass(frozen=True)
class SplashMask:
    """The arguments that replace a mask.

    Attributes:
      static: ``FullMask``, ``CausalMask`` or ``LocalMask`` of shape ``(Q, K)``, over indices.
      q_segment_ids, kv_segment_ids: int ``[B, Q]`` and ``[B, K]``, or None (no segment term).
      holds: True when these arguments are known to equal the mask at every non-padding
        query (for any facts, or checked on concrete ones); under ``jax.jit``, where they
        assume a layout of traced facts, a bool scalar array: whether this batch has it (see :func:`translate`).
    """

    static: sa.Mask
    q_segment_ids: jax.Array | None
    kv_segment_ids: jax.Array | None
    holds: jax.Array | bool


def translate(mask: Mask) -> SplashMask | None:
    """Splash attention's arguments for ``mask``, or None where they cannot say it.

    Rules, for a conjunction whose terms all read one self-attention pair of facts:

    - ``full``: ``FullMask``.
    - ``causal``: ``CausalMask`` (key index <= query index), for ordered facts, where index
      order is position order inside a segment.
    - ``sliding_window(w)``: ``LocalMask`` with ``window_size=(w - 1, 0)``, for ordered facts
      whose positions start at 0 in each example and count up by one (checked: a window over
      indices is then the window over positions).
    - ``same_segment``, ``cross``: ``SegmentIds`` of the facts' segment ids (at non-padding
      queries, ``cross`` is ``same_segment``); an order term with neither needs rows of one
      segment id (checked).
    - ``not_padding`` with a segment term: nothing more at non-padding queries; alone: None.
    - ``prefix``, ``|``, ``~``, terms over several facts, cross-attention: None. (Splash needs
      every query to keep a key; self-attention under a segment term keeps the query itself.)

    A concrete batch that breaks a checked layout gives None; under ``jax.jit`` the check comes
    back as :attr:`SplashMask.holds`.
    """
    terms = mask.conjuncts()
    if terms is None or len({side for side, _ in terms}) != 1:
        return None
    side = terms[0][0]
    if not mask.self_attention[side]:
        return None
    f = mask.sides[side][0]
    ops = {term[0] for _, term in terms}
    if not ops <= {"full", "causal", "sliding_window", "not_padding"} | _SEGMENTS:
        return None
    segments = bool(ops & _SEGMENTS)
    if "not_padding" in ops and not segments:
        return None
    order = ops & {"causal", "sliding_window"}
    if order and not f.ordered:
        return None
    L = f.shape[1]
    windows = [term[1] for _, term in terms if term[0] == "sliding_window"]
    if windows:
        static = sa.LocalMask((L, L), window_size=(min(windows) - 1, 0), offset=0)
    elif order:
        static = sa.CausalMask((L, L))
    else:
        static = sa.FullMask((L, L))
    holds = True
    # facts closed over by a jitted function are constants: their check is decided now
    with jax.ensure_compile_time_eval():
        if order and not segments:
            holds = holds & jnp.all(f.segment_ids == f.segment_ids[:, :1])
        if windows:
            holds = holds & _counts_up_from_zero(f)
    if not isinstance(holds, jax.core.Tracer):
        if not bool(holds):
            return None
        holds = True
    seg = f.segment_ids if segments else None
    return SplashMask(static, seg, seg, holds)


def _counts_up_from_zero(f: TokenFacts) -> jax.Array:
    """Each real token's position is 0 where its segment id starts a run, else the previous
    token's plus one. Under ``ordered`` that also makes each example one run (a second run
    would restart at 0)."""
    seg, pos = f.segment_ids, f.positions
    starts = jnp.concatenate([jnp.ones_like(seg[:, :1], bool), seg[:, 1:] != seg[:, :-1]], axis=1)
    previous = jnp.concatenate([jnp.zeros_like(pos[:, :1]), pos[:, :-1] + 1], axis=1)
    return jnp.all((seg == 0) | (pos == jnp.where(starts, 0, previous)))


def supports(q_BQHD: jax.Array, k_BKGD: jax.Array, bias_BHQK: jax.Array | None) -> bool:
    """Whether the kernel takes these inputs: lengths in whole tiles and no logit bias."""
    return q_BQHD.shape[1] % BLOCK == 0 and k_BKGD.shape[1] % BLOCK == 0 and bias_BHQK is None


def attend(q_BQHD, k_BKGD, v_BKGD, sm: SplashMask, scale: float, *, interpret: bool = False):
    """Splash attention under the translated mask; under an active layout of several devices,
    on each device's own rows and heads (:func:`archzoo.sharding.per_device_attention`).

    Args:
      q_BQHD: queries ``[B, Q, H, Dh]``.
      k_BKGD, v_BKGD: keys and values ``[B, K, G, Dh]``; G divides H.
      sm: :func:`translate`'s arguments.
      scale: logit scale.
      interpret: run the kernel in Pallas interpret mode (any platform; for tests).

    Returns:
      ``[B, Q, H, Dh]``.
    """
    B, Q, K = q_BQHD.shape[0], q_BQHD.shape[1], k_BKGD.shape[1]
    segments = ()
    if sm.q_segment_ids is not None:
        segments = ((jnp.broadcast_to(sm.q_segment_ids, (B, Q)), "BQ"), (jnp.broadcast_to(sm.kv_segment_ids, (B, K)), "BK"))
    local = partial(_attend_local, static=sm.static, scale=scale, interpret=interpret)
    return per_device_attention(local, q_BQHD, k_BKGD, v_BKGD, *segments)


def _attend_local(q_BQHD, k_BKGD, v_BKGD, *segments, static: sa.Mask, scale: float, interpret: bool):
    """The kernel on the rows and heads at hand; ``segments``: query and key segment ids
    ``[B, Q]``, ``[B, K]``, or none."""
    H = q_BQHD.shape[2]
    blocks = sa.BlockSizes(
        block_q=BLOCK,
        block_kv=BLOCK,
        block_kv_compute=BLOCK,
        block_q_dkv=BLOCK,
        block_kv_dkv=BLOCK,
        block_kv_dkv_compute=BLOCK,
        block_q_dq=BLOCK,
        block_kv_dq=BLOCK,
    )
    kernel = sa.make_splash_mha(
        sa.MultiHeadMask([static] * H), block_sizes=blocks, head_shards=1, q_seq_shards=1, interpret=interpret
    )
    q = rearrange((q_BQHD * scale).astype(q_BQHD.dtype), "B Q H Dh -> B H Q Dh")
    k = rearrange(k_BKGD, "B K G Dh -> B G K Dh")
    v = rearrange(v_BKGD, "B K G Dh -> B G K Dh")
    if not segments:
        out = jax.vmap(kernel)(q, k, v)
    else:
        out = jax.vmap(kernel)(q, k, v, sa.SegmentIds(*segments))
    return rearrange(out, "B H Q Dh -> B Q H Dh")
