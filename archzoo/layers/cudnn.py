"""cuDNN fused attention told the mask's structure instead of its dense array.

``jax.nn.dot_product_attention(implementation="cudnn")`` (jax 0.10.2) takes a mask as
``is_causal`` (key index <= query index), ``local_window_size=(left, right)`` (query index -
left <= key index <= query index + right) and per-row lengths ``query_seq_lengths`` /
``key_value_seq_lengths`` (the first n tokens of a row are real, the rest padding). It has no
segment ids, so a packed row (several examples) cannot be said. The private
``jax._src.cudnn.fused_attention_stablehlo.dot_product_attention`` takes packed rows as
``q_offsets`` / ``kv_offsets`` ``[B, M + 1]``, but M, the most examples in a row, must be static
and sizes its softmax statistics ``[B * M, H, Q]``; a mask carries no such bound, so only the
public call is used here.

archzoo's masks speak of positions and segment ids, cuDNN's arguments of indices and lengths.
They agree at the non-padding queries when the rows have the layout :func:`translate` checks;
outputs at padding queries are zeros here (the xla backend lets padding attend to padding).

Shapes: ``B`` batch, ``Q``/``K`` query/key length, ``H`` query heads, ``G`` kv heads, ``Dh`` head
width.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from archzoo.masks import Mask, TokenFacts

__all__ = ["CudnnMask", "translate", "attend", "supports"]

_ORDER = {"causal", "sliding_window"}
_SEGMENTS = {"same_segment", "cross"}
_EXPRESSIBLE = {"full", "not_padding"} | _ORDER | _SEGMENTS


@dataclasses.dataclass(frozen=True)
class CudnnMask:
    """The arguments that replace a mask.

    Attributes:
      is_causal: key index <= query index.
      local_window_size: ``(w - 1, 0)`` for ``sliding_window(w)``: ``q - w < k <= q``.
      query_seq_lengths, key_value_seq_lengths: int32 ``[B]``, real tokens per row; None
        when the mask has no padding or segment term.
      holds: True when these arguments are known to equal the mask at every non-padding
        query (for any facts, or checked on concrete ones); under ``jax.jit``, where they
        assume a layout of traced facts, a bool scalar array: whether this batch has it
        (each row one example from its start, then padding; under a window, positions
        counting up by one).
    """

    is_causal: bool
    local_window_size: tuple[int, int] | None
    query_seq_lengths: jax.Array | None
    key_value_seq_lengths: jax.Array | None
    holds: jax.Array | bool


def translate(mask: Mask) -> CudnnMask | None:
    """cuDNN's arguments for ``mask``, or None where they cannot say it.

    Rules, for a conjunction whose terms all read one pair of facts (``q``, ``k``):

    - ``full``: no argument.
    - ``causal``: ``is_causal``; ``sliding_window(w)``: ``is_causal`` and
      ``local_window_size=(w - 1, 0)``. Only for self-attention over ordered facts, where
      index order is position order inside an example; with no segment term the rows must
      hold one example and no padding.
    - ``same_segment``, ``cross``: lengths = non-padding tokens per row of ``q`` and ``k``;
      each row must hold one example (the same one on both sides) from its start.
    - ``not_padding``: the same lengths; the padding must be at the end of the row (with an
      order term, one example as above).
    - ``prefix`` (``is_input`` is data), ``|``, ``~``, or terms over several facts: None.

    The layout is checked on the facts: a concrete batch that breaks it gives None; under
    ``jax.jit`` the check comes back as :attr:`CudnnMask.holds` for the caller to branch on.
    """
    terms = mask.conjuncts()
    if terms is None or len({side for side, _ in terms}) != 1:
        return None
    side = terms[0][0]
    q, k = mask.sides[side]
    ops = {term[0] for _, term in terms}
    if not ops <= _EXPRESSIBLE:
        return None
    order = bool(ops & _ORDER)
    if order and not (mask.self_attention[side] and q.ordered):
        return None
    windows = [term[1] for _, term in terms if term[0] == "sliding_window"]
    padding = bool(ops & (_SEGMENTS | {"not_padding"}))

    checks = []
    if padding and (order or ops & _SEGMENTS):
        checks += [lambda: _one_example(q), lambda: _one_example(k), lambda: _same_example(q, k)]
    elif padding:
        checks += [lambda: _padding_at_end(q), lambda: _padding_at_end(k)]
    elif order:
        checks.append(lambda: _no_padding_one_example(q))
    if windows:
        checks.append(lambda: _counts_up(q))
    holds = True
    # facts closed over by a jitted function are constants: their check is decided now
    with jax.ensure_compile_time_eval():
        for check in checks:
            holds = holds & check()
    if not isinstance(holds, jax.core.Tracer):
        if not bool(holds):
            return None
        holds = True
    count = lambda f: jnp.sum(f.segment_ids != 0, axis=-1, dtype=jnp.int32)
    return CudnnMask(
        is_causal=order,
        local_window_size=(min(windows) - 1, 0) if windows else None,
        query_seq_lengths=count(q) if padding else None,
        key_value_seq_lengths=count(k) if padding else None,
        holds=holds,
    )


def _padding_at_end(f: TokenFacts) -> jax.Array:
    real = f.segment_ids != 0
    n = jnp.sum(real, axis=-1, keepdims=True)
    return jnp.all(real == (jnp.arange(f.shape[1]) < n))


def _one_example(f: TokenFacts) -> jax.Array:
    """Every row: one segment id from the row's start, then padding (or all padding)."""
    real = f.segment_ids != 0
    return _padding_at_end(f) & jnp.all(~real | (f.segment_ids == f.segment_ids[:, :1]))


def _same_example(q: TokenFacts, k: TokenFacts) -> jax.Array:
    """Rows with real tokens on both sides pair the same example."""
    both = (q.segment_ids[:, 0] != 0) & (k.segment_ids[:, 0] != 0)
    return jnp.all(~both | (q.segment_ids[:, 0] == k.segment_ids[:, 0]))


def _no_padding_one_example(f: TokenFacts) -> jax.Array:
    # a row of padding only has no query whose output counts
    return jnp.all(f.segment_ids == f.segment_ids[:, :1])


def _counts_up(f: TokenFacts) -> jax.Array:
    """Positions of the real tokens are the row's first position plus their index: a window
    over indices is then the window over positions."""
    index = jnp.arange(f.shape[1])
    return jnp.all((f.segment_ids == 0) | (f.positions == f.positions[:, :1] + index))


def supports(q_BQHD: jax.Array) -> bool:
    """Whether cuDNN's flash kernel takes these queries: half precision and a head width that is
    a multiple of 8 up to 128 (256 on Hopper; the smaller bound holds on every GPU)."""
    Dh = q_BQHD.shape[-1]
    return q_BQHD.dtype in (jnp.bfloat16, jnp.float16) and Dh % 8 == 0 and Dh <= 128


def attend(q_BQHD, k_BKGD, v_BKGD, cm: CudnnMask, bias_BHQK, scale: float, *, implementation: str = "cudnn"):
    """Attention under the translated mask.

    Args:
      q_BQHD: queries ``[B, Q, H, Dh]``.
      k_BKGD, v_BKGD: keys and values ``[B, K, G, Dh]``.
      cm: :func:`translate`'s arguments.
      bias_BHQK: additive logit bias or None.
      scale: logit scale.
      implementation: ``cudnn``; ``xla`` runs jax's reference for the same arguments.

    Returns:
      ``[B, Q, H, Dh]``; zeros at padding queries and where the row has no real key.
    """
    B, Q = q_BQHD.shape[:2]
    lengths = lambda n: None if n is None else jnp.broadcast_to(n, (B,))
    q_len, kv_len = lengths(cm.query_seq_lengths), lengths(cm.key_value_seq_lengths)
    bias = None if bias_BHQK is None else bias_BHQK.astype(q_BQHD.dtype)
    out = jax.nn.dot_product_attention(
        q_BQHD,
        k_BKGD,
        v_BKGD,
        bias=bias,
        scale=scale,
        is_causal=cm.is_causal,
        query_seq_lengths=q_len,
        key_value_seq_lengths=kv_len,
        local_window_size=cm.local_window_size,
        implementation=implementation,
    )
    if q_len is None:
        return out
    # where, not a product: what a kernel leaves in a padding row may be NaN
    keep_BQ = (jnp.arange(Q) < q_len[:, None]) & (kv_len[:, None] > 0)
    return jnp.where(keep_BQ[:, :, None, None], out, jnp.zeros((), out.dtype))
