"""One attention-mask abstraction for every family (DESIGN.md §2).

A mask is built from per-token facts that a feature converter already has:

- ``segment_ids``: which packed example a token belongs to; 0 marks padding;
- ``positions``: the token's position inside its example (restarting at 0 per segment);
- ``is_input``: whether the token belongs to the bidirectional prefix (the "inputs").

A :class:`Mask` is a predicate ``allowed(q, k)`` evaluated over query facts and key facts. Masks
compose with ``&``, ``|`` and ``~``. The same object answers training (queries and keys are the
same row), cross-attention (decoder queries against encoder keys) and the decode step (a query at
step ``t`` against a KV cache of length ``T``): only the facts passed in differ.

A mask materialises to a dense boolean array ``[B, 1, Q, K]`` for the plain XLA path
(:meth:`Mask.dense`) and classifies tiles of a block size as empty / partial / full
(:meth:`Mask.tiles`, from per-block summaries of the facts) for fused kernels that skip empty
tiles. :meth:`Mask.conjuncts` lists the terms of a conjunction, for kernels that take a mask as
arguments (causal flags, windows, segment ids) rather than as an array. When the facts are
known to be in row order (``TokenFacts.ordered``), :attr:`Mask.lower_triangular` says so
statically, and the attention backends skip the key blocks after each query block without
looking at the data.

Shapes: ``B`` batch, ``Q`` query length, ``K`` key length.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "TokenFacts",
    "Mask",
    "facts",
    "causal",
    "prefix",
    "full",
    "same_segment",
    "not_padding",
    "cross",
    "sliding_window",
    "predicate",
    "Predicate",
    "TILE_EMPTY",
    "TILE_PARTIAL",
    "TILE_FULL",
]

TILE_EMPTY, TILE_PARTIAL, TILE_FULL = 0, 1, 2


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TokenFacts:
    """Per-token facts of a batch of rows, each ``[B, L]``.

    Attributes:
      segment_ids: int ``[B, L]``; 0 = padding, 1, 2, ... = packed examples of the row.
      positions: int ``[B, L]``; position inside the token's example.
      is_input: bool ``[B, L]``; True for tokens of the bidirectional prefix.
      ordered: static promise that positions increase strictly along the row among the
        non-padding tokens of each segment (each example contiguous, counting up), as the
        feature converters make them. Then ``causal & same_segment`` never allows a key after
        its query in the row, and attention may skip those blocks; the outputs at padding
        queries are then unspecified. :func:`facts` sets it when it can check the arrays.
    """

    segment_ids: jax.Array
    positions: jax.Array
    is_input: jax.Array
    ordered: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.segment_ids.shape)

    def __getitem__(self, index) -> "TokenFacts":
        """Slices every fact the same way, e.g. ``facts[:, 3:4]``."""
        # A slice of an ordered row is still in order.
        return TokenFacts(self.segment_ids[index], self.positions[index], self.is_input[index], self.ordered)


def _segment_positions(segment_ids: jax.Array) -> jax.Array:
    """Positions that restart at 0 wherever the segment id changes along the row."""
    L = segment_ids.shape[-1]
    index = jnp.broadcast_to(jnp.arange(L), segment_ids.shape)
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[..., :1], dtype=bool), segment_ids[..., 1:] != segment_ids[..., :-1]],
        axis=-1,
    )
    start_index = jax.lax.cummax(jnp.where(starts, index, 0), axis=segment_ids.ndim - 1)
    return (index - start_index).astype(jnp.int32)


def facts(
    segment_ids=None,
    *,
    positions=None,
    is_input=None,
    shape: tuple[int, int] | None = None,
    ordered: bool | None = None,
) -> TokenFacts:
    """Builds and checks :class:`TokenFacts` from whatever the caller has.

    Args:
      segment_ids: int ``[B, L]``; default: all ones (one unpadded example per row).
      positions: int ``[B, L]``; default: restarting at 0 at each change of segment id.
      is_input: bool ``[B, L]``; default: all False (no prefix).
      shape: ``(B, L)`` when no array is given.
      ordered: whether positions increase along the row inside each segment (see
        :class:`TokenFacts`). Default: checked when the arrays are concrete, else False.
        True is a promise the caller makes for traced arrays; a concrete array that breaks it
        is refused.

    Returns:
      TokenFacts with int32 segment ids and positions and a bool prefix flag.

    Raises:
      ValueError: naming the argument whose shape differs from the others, that is ragged or
        not numeric, or (when concrete) holds ids that int32 would change: fractions, or
        values past int32.
    """
    given = {
        name: _host_array(value, name)
        for name, value in dict(segment_ids=segment_ids, positions=positions, is_input=is_input).items()
        if value is not None
    }
    shapes = {k: tuple(np.shape(v)) for k, v in given.items()}
    if shape is None:
        if not given:
            raise ValueError("facts(): give segment_ids, positions, is_input or shape=(B, L)")
        shape = next(iter(shapes.values()))
    if not isinstance(shape, (tuple, list)):
        raise ValueError(f"facts(): shape must be (batch, length); got shape={shape!r}")
    shape = tuple(shape)
    if len(shape) != 2:
        raise ValueError(f"facts(): per-token facts must be [batch, length]; got shape {shape}")
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ValueError(f"facts(): shape must be (batch, length) of ints >= 0; got shape={shape}")
    for name, s in shapes.items():
        if s != shape:
            detail = ", ".join(f"{k} {v}" for k, v in shapes.items())
            raise ValueError(f"facts(): {name} has shape {s} but the facts must share one shape [batch, length]; got {detail}")
    segment_ids, positions, is_input = (given.get(k) for k in ("segment_ids", "positions", "is_input"))
    seg = jnp.ones(shape, jnp.int32) if segment_ids is None else _int32_fact(segment_ids, "segment_ids")
    pos = _segment_positions(seg) if positions is None else _int32_fact(positions, "positions")
    inp = jnp.zeros(shape, bool) if is_input is None else jnp.asarray(is_input, bool)
    # Default facts (one example per row, counting up) are in order by construction.
    in_order = True if segment_ids is None and positions is None else _in_order(seg, pos)
    if ordered is None:
        ordered = bool(in_order)
    elif ordered and in_order is False:
        raise ValueError("facts(): ordered=True, but positions do not increase along the row inside every segment")
    return TokenFacts(seg, pos, inp, bool(ordered))


def _host_array(value, name: str):
    """A concrete fact as a numpy array, checked for what a cast would refuse or garble; traced
    arrays pass through (their values are unknown until run)."""
    if isinstance(value, jax.core.Tracer):
        return value
    try:
        arr = np.asarray(value)
    except ValueError:
        raise ValueError(f"facts(): {name} is ragged (its rows have different lengths); pad it to one [batch, length] array") from None
    if arr.dtype != bool and not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"facts(): {name} must be an array of integers or bools; got dtype {arr.dtype}")
    return arr


def _int32_fact(value, name: str) -> jax.Array:
    """``value`` as int32, refusing concrete values that the cast would change: fractions
    (1.5 -> 1) and ints past int32 (2**40 -> 0, which would read as padding)."""
    if isinstance(value, jax.core.Tracer):
        return jnp.asarray(value, jnp.int32)
    int32 = np.iinfo(np.int32)
    if np.issubdtype(value.dtype, np.floating):
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~(value == np.round(value)))
        if bad.size:
            where = np.unravel_index(bad[0], value.shape)
            raise ValueError(f"facts(): {name} must be integers; got {value[where]} at {tuple(int(i) for i in where)}")
    if value.dtype != bool:
        bad = np.flatnonzero((value < int32.min) | (value > int32.max))
        if bad.size:
            where = np.unravel_index(bad[0], value.shape)
            raise ValueError(
                f"facts(): {name} {value[where]:.0f} at {tuple(int(i) for i in where)} is outside int32 "
                f"[{int32.min}, {int32.max}]"
            )
    return jnp.asarray(value.astype(np.int32))


def _in_order(segment_ids, positions) -> bool | None:
    """Whether positions increase strictly along each row among the non-padding tokens of each
    segment; None for traced arrays (unknown)."""
    if isinstance(segment_ids, jax.core.Tracer) or isinstance(positions, jax.core.Tracer):
        return None
    seg, pos = np.asarray(segment_ids), np.asarray(positions)
    index = np.broadcast_to(np.arange(seg.shape[-1]), seg.shape)
    order = np.lexsort((index, seg), axis=-1)  # each row by segment, then by index
    s, p = np.take_along_axis(seg, order, -1), np.take_along_axis(pos, order, -1)
    same = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] != 0)
    return not np.any(same & (p[:, 1:] <= p[:, :-1]))


# Primitive predicates over broadcast facts (query side [B, Q, 1], key side [B, 1, K]) -> bool.
# A mask's expression is a hashable tree over these names, so masks compare equal and a jitted
# function that receives one does not recompile.
_PRIMITIVES = {
    "causal": lambda q, k: k.positions <= q.positions,
    "prefix": lambda q, k: (k.positions <= q.positions) | (q.is_input & k.is_input),
    "full": lambda q, k: jnp.ones(jnp.broadcast_shapes(q.positions.shape, k.positions.shape), bool),
    "same_segment": lambda q, k: q.segment_ids == k.segment_ids,
    "not_padding": lambda q, k: (q.segment_ids != 0) & (k.segment_ids != 0),
    "cross": lambda q, k: (q.segment_ids == k.segment_ids) & (k.segment_ids != 0),
}


def _evaluate(expr: tuple, sides: tuple, side: int = 0) -> jax.Array:
    """``sides[i]`` is the broadcast ``(q, k)`` of the i-th facts; ``("facts", i, e)`` evaluates
    ``e`` over them (a mask combined with a mask built from other facts)."""
    op = expr[0]
    if op == "facts":
        return _evaluate(expr[2], sides, expr[1])
    if op == "and":
        return _evaluate(expr[1], sides, side) & _evaluate(expr[2], sides, side)
    if op == "or":
        return _evaluate(expr[1], sides, side) | _evaluate(expr[2], sides, side)
    if op == "not":
        return ~_evaluate(expr[1], sides, side)
    q, k = sides[side]
    if op == "sliding_window":
        w = expr[1]
        return (k.positions <= q.positions) & (k.positions > q.positions - w)
    if op == "predicate":
        return expr[1].evaluate(q, k)
    return _PRIMITIVES[op](q, k)


def _conjuncts(expr: tuple, side: int):
    """``(side, primitive)`` of every term the whole expression is a conjunction of."""
    op = expr[0]
    if op == "facts":
        yield from _conjuncts(expr[2], expr[1])
    elif op == "and":
        yield from _conjuncts(expr[1], side)
        yield from _conjuncts(expr[2], side)
    elif op not in ("or", "not"):
        yield side, op


def _shift(expr: tuple, n: int) -> tuple:
    """The same expression with its facts indices moved up by ``n``."""
    op = expr[0]
    if op == "facts":
        return ("facts", expr[1] + n, _shift(expr[2], n))
    if op in ("and", "or"):
        return (op, _shift(expr[1], n), _shift(expr[2], n))
    if op == "not":
        return (op, _shift(expr[1], n))
    return expr


def _describe(expr: tuple) -> str:
    op = expr[0]
    if op == "facts":
        return _describe(expr[2])
    if op in ("and", "or"):
        return f"({_describe(expr[1])} {'&' if op == 'and' else '|'} {_describe(expr[2])})"
    if op == "not":
        return f"~{_describe(expr[1])}"
    if op == "sliding_window":
        return f"sliding_window({expr[1]})"
    if op == "predicate":
        return expr[1].describe()
    return op


@jax.tree_util.register_pytree_node_class
class Mask:
    """An attention mask: a predicate over query facts and key facts.

    Build masks with the functions of this module (:func:`causal`, :func:`prefix`, ...) and
    combine them with ``&``, ``|``, ``~``. Masks built from different facts of the same shape
    combine too: each part keeps being evaluated over its own facts. A mask is a pytree (the
    facts are its leaves, the expression is static), so it can be passed through ``jax.jit``.
    """

    def __init__(self, expr: tuple, q: TokenFacts, k: TokenFacts, *more: tuple[TokenFacts, TokenFacts]):
        self.expr = expr
        self.q = q
        self.k = k
        # Facts of masks combined into this one from other facts, referenced by index from expr.
        self.sides = ((q, k),) + tuple(more)
        # Static: per side, whether the keys are the queries themselves (self-attention).
        self.self_attention = tuple(k is q for q, k in self.sides)

    # -- pytree ------------------------------------------------------------------------------
    def tree_flatten(self):
        # A self-attention side is flattened once and comes back as one facts object for both
        # queries and keys, so what lower_triangular reads survives jit and tree maps.
        children = tuple((q,) if same else (q, k) for (q, k), same in zip(self.sides, self.self_attention))
        return children, self.expr

    @classmethod
    def tree_unflatten(cls, expr, children):
        sides = [side * 2 if len(side) == 1 else side for side in children]
        return cls(expr, *sides[0], *sides[1:])

    # -- algebra -----------------------------------------------------------------------------
    def _combine(self, other: "Mask", op: str) -> "Mask":
        if not isinstance(other, Mask):
            return NotImplemented
        if len(self.sides) == len(other.sides) and all(a is c and b is d for (a, b), (c, d) in zip(self.sides, other.sides)):
            return Mask((op, self.expr, other.expr), *self.sides[0], *self.sides[1:])
        _check_same_facts(self, other)
        # Built from other facts: each side keeps evaluating over its own facts.
        n = len(self.sides)
        return Mask((op, self.expr, ("facts", n, _shift(other.expr, n))), *self.sides[0], *self.sides[1:], *other.sides)

    def __and__(self, other: "Mask") -> "Mask":
        return self._combine(other, "and")

    def __or__(self, other: "Mask") -> "Mask":
        return self._combine(other, "or")

    def __invert__(self) -> "Mask":
        return Mask(("not", self.expr), *self.sides[0], *self.sides[1:])

    @property
    def name(self) -> str:
        return _describe(self.expr)

    def __repr__(self) -> str:
        return f"Mask({self.name}, B={self.shape[0]}, Q={self.shape[1]}, K={self.shape[2]})"

    # -- materialisation ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(B, Q, K)``."""
        B = max(f.shape[0] for side in self.sides for f in side)
        return (B, self.q.shape[1], self.k.shape[1])

    def allowed(self) -> jax.Array:
        """Bool ``[B, Q, K]``: True where query ``q`` may attend to key ``k``."""
        sides = tuple(
            (jax.tree.map(lambda a: a[:, :, None], q), jax.tree.map(lambda a: a[:, None, :], k)) for q, k in self.sides
        )
        return jnp.broadcast_to(_evaluate(self.expr, sides), self.shape)

    @property
    def lower_triangular(self) -> bool:
        """Static: True when no key after its query in the row can be allowed, for every
        non-padding query, whatever the arrays hold.

        That holds for self-attention (queries and keys are the same ordered facts) whose mask
        is a conjunction with a ``causal`` (or ``sliding_window``) term and a ``same_segment``
        term: inside a segment, a key at a position not after the query's comes no later in
        the row. Attention kernels use it to skip the key blocks after each query block.

        It reads only static structure: the expression, each side's ``ordered`` flag and
        whether the side was built from one facts object (``causal(f)``, ``causal(f, f)``), so
        a mask passed into ``jax.jit`` answers the same as outside.
        """
        Q, K = self.shape[1:]
        if Q != K:
            return False
        found = {}
        for side, op in _conjuncts(self.expr, 0):
            if self.self_attention[side] and self.sides[side][0].ordered:
                found.setdefault(side, set()).add("order" if op in ("causal", "sliding_window") else op)
        return any({"order", "same_segment"} <= ops for ops in found.values())

    def dense(self) -> jax.Array:
        """Bool ``[B, 1, Q, K]``, broadcastable over heads."""
        return self.allowed()[:, None]

    def conjuncts(self) -> tuple[tuple[int, tuple], ...] | None:
        """Static: the ``(side, term)`` pairs the mask is a conjunction of, or None when its
        expression holds ``|`` or ``~``.

        ``side`` indexes :attr:`sides` (the facts the term reads) and ``term`` is a primitive's
        expression, e.g. ``causal(f) & sliding_window(4, f) & same_segment(f)`` gives
        ``((0, ("causal",)), (0, ("sliding_window", 4)), (0, ("same_segment",)))``. Fused
        kernels read it to decide what they can express.
        """
        terms = []

        def walk(expr, side):
            op = expr[0]
            if op == "facts":
                return walk(expr[2], expr[1])
            if op == "and":
                return walk(expr[1], side) and walk(expr[2], side)
            if op in ("or", "not"):
                return False
            terms.append((side, expr))
            return True

        return tuple(terms) if walk(self.expr, 0) else None

    def tiles(self, block_q: int, block_k: int, *, exact: bool = False) -> jax.Array:
        """Classifies ``block_q x block_k`` tiles of the mask.

        By default from per-block summaries of the facts (min and max of positions and of the
        real segment ids, any and all of padding and ``is_input``), term by term, without the
        dense mask: ``&`` takes the smaller class, ``|`` the larger, ``~`` swaps empty and full.
        That is conservative: a tile may come out partial when it is full or empty, never empty
        when a cell is allowed nor full when one is masked. ``causal``, ``not_padding``,
        ``full`` and ``same_segment`` over ids that rise along the row (as packing numbers
        them) come out exact; for ``causal & same_segment`` over ordered self-attention facts,
        the tiles after the diagonal are empty unless both blocks hold padding (padding
        positions promise no order).

        Args:
          block_q, block_k: tile height (queries) and width (keys).
          exact: classify from the dense mask instead (the reference the summaries are
            tested against).

        Returns:
          int8 ``[B, ceil(Q / block_q), ceil(K / block_k)]`` with :data:`TILE_EMPTY` (nothing
          allowed: a kernel may skip the tile), :data:`TILE_FULL` (everything allowed: no mask
          needed) or :data:`TILE_PARTIAL`. Cells past the end of a ragged last tile count as
          masked for "empty" and are ignored for "full".
        """
        if block_q < 1 or block_k < 1:
            raise ValueError(f"tiles(): block sizes must be positive; got block_q={block_q}, block_k={block_k}")
        if exact:
            return _dense_tiles(self.allowed(), block_q, block_k)
        return _summary_tiles_of(self, block_q, block_k)


def _summary_tiles_of(mask: Mask, block_q: int, block_k: int) -> jax.Array:
    """:meth:`Mask.tiles` from block summaries."""
    B, Q, K = mask.shape
    sides = tuple((_block_summary(q, block_q, 2), _block_summary(k, block_k, 1)) for q, k in mask.sides)
    tiles = _summary_tiles(mask.expr, sides)
    # Ordered self-attention under causal & same_segment: a key after its query in the row is
    # allowed only between padding tokens (positions rise inside every real example).
    nq, nk = -(-Q // block_q), -(-K // block_k)
    last_q = np.minimum((np.arange(nq) + 1) * block_q, Q) - 1
    after = jnp.asarray(np.arange(nk)[None, :] * block_k > last_q[:, None])
    found = {}
    for side, op in _conjuncts(mask.expr, 0):
        if mask.self_attention[side] and mask.sides[side][0].ordered:
            found.setdefault(side, set()).add("order" if op in ("causal", "sliding_window") else op)
    for side, ops in found.items():
        if {"order", "same_segment"} <= ops:
            tiles = _empty_after(tiles, *sides[side], after)
    return jnp.broadcast_to(tiles, (B, nq, nk)).astype(jnp.int8)


@jax.jit
def _empty_after(tiles, q: _Summary, k: _Summary, after):
    return jnp.where(after & ~(q.zero_any & k.zero_any), TILE_EMPTY, tiles)


def _dense_tiles(allowed_BQK: jax.Array, block_q: int, block_k: int) -> jax.Array:
    """Tile classes of a dense mask: empty if no cell is allowed, full if every cell is."""
    B, Q, K = allowed_BQK.shape
    nq, nk = -(-Q // block_q), -(-K // block_k)
    pad = ((0, 0), (0, nq * block_q - Q), (0, nk * block_k - K))
    tiles_any = jnp.pad(allowed_BQK, pad, constant_values=False).reshape(B, nq, block_q, nk, block_k).any(axis=(2, 4))
    tiles_all = jnp.pad(allowed_BQK, pad, constant_values=True).reshape(B, nq, block_q, nk, block_k).all(axis=(2, 4))
    return jnp.where(tiles_all, TILE_FULL, jnp.where(tiles_any, TILE_PARTIAL, TILE_EMPTY)).astype(jnp.int8)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _Summary:
    """Per-block facts over the block's tokens (a ragged last block summarises only the tokens
    it has), each ``[B, n, 1]`` for query blocks or ``[B, 1, n]`` for key blocks. Segment ids
    are summarised over the real tokens, padding apart, so a block ending in padding still says
    which example it holds."""

    id_min: jax.Array  # of the non-padding segment ids; int32 max when there are none
    id_max: jax.Array
    zero_any: jax.Array  # some token is padding
    zero_all: jax.Array
    pos_min: jax.Array
    pos_max: jax.Array
    input_any: jax.Array
    input_all: jax.Array


# The summary helpers are compiled, each once per shape: op by op, a first call on new shapes
# spent most of its time compiling dozens of tiny ops.
@partial(jax.jit, static_argnums=(1, 2))
def _block_summary(f: TokenFacts, block: int, axis: int) -> _Summary:
    """Summaries of the ``block``-token blocks of ``f``, their axis of length 1 at ``axis``."""
    B, L = f.shape
    n = -(-L // block)

    def blocks(a, fill):  # [2, B, L] -> [2, B, n, block], the ragged end filled
        return jnp.pad(a, ((0, 0), (0, 0), (0, n * block - L)), constant_values=fill).reshape(*a.shape[:2], n, block)

    big, small = np.iinfo(np.int32).max, np.iinfo(np.int32).min
    seg, pos = f.segment_ids.astype(jnp.int32), f.positions.astype(jnp.int32)
    zero = seg == 0
    lows = blocks(jnp.stack([jnp.where(zero, big, seg), pos]), big).min(-1)
    highs = blocks(jnp.stack([jnp.where(zero, small, seg), pos]), small).max(-1)
    flags = jnp.stack([zero, f.is_input])
    some, every = blocks(flags, False).any(-1), blocks(flags, True).all(-1)
    fields = (lows[0], highs[0], some[0], every[0], lows[1], highs[1], some[1], every[1])
    return _Summary(*(jnp.expand_dims(a, axis) for a in fields))


def _tile_class(full, empty):
    return jnp.where(full, TILE_FULL, jnp.where(empty, TILE_EMPTY, TILE_PARTIAL)).astype(jnp.int8)


@jax.jit
def _causal_tiles(q: _Summary, k: _Summary):
    # every key position <= every query position, or every one after
    return _tile_class(k.pos_max <= q.pos_min, k.pos_min > q.pos_max)


@partial(jax.jit, static_argnums=2)
def _window_tiles(q: _Summary, k: _Summary, w: int):
    window = _tile_class(k.pos_min > q.pos_max - w, k.pos_max <= q.pos_min - w)
    return jnp.minimum(_causal_tiles(q, k), window)


@jax.jit
def _prefix_tiles(q: _Summary, k: _Summary):
    inputs = _tile_class(q.input_all & k.input_all, ~q.input_any | ~k.input_any)
    return jnp.maximum(_causal_tiles(q, k), inputs)


@jax.jit
def _segment_tiles(q: _Summary, k: _Summary):
    one_id = (q.id_min == q.id_max) & (k.id_min == k.id_max) & (q.id_min == k.id_min)
    full = (q.zero_all & k.zero_all) | (~q.zero_any & ~k.zero_any & one_id)
    no_common_id = (q.id_max < k.id_min) | (k.id_max < q.id_min)
    return _tile_class(full, no_common_id & ~(q.zero_any & k.zero_any))


@jax.jit
def _real_tiles(q: _Summary, k: _Summary):
    return _tile_class(~q.zero_any & ~k.zero_any, q.zero_all | k.zero_all)


def _summary_tiles(expr: tuple, sides: tuple, side: int = 0) -> jax.Array:
    """Tile classes ``[B, nq, nk]`` of ``expr`` from block summaries: ``sides[i]`` is the
    broadcast ``(q [B, nq, 1], k [B, 1, nk])`` summary of the i-th facts."""
    op = expr[0]
    if op == "facts":
        return _summary_tiles(expr[2], sides, expr[1])
    if op == "and":
        return jnp.minimum(_summary_tiles(expr[1], sides, side), _summary_tiles(expr[2], sides, side))
    if op == "or":
        return jnp.maximum(_summary_tiles(expr[1], sides, side), _summary_tiles(expr[2], sides, side))
    if op == "not":
        return (TILE_FULL - _summary_tiles(expr[1], sides, side)).astype(jnp.int8)
    q, k = sides[side]
    if op == "full":
        return jnp.full(jnp.broadcast_shapes(q.pos_min.shape, k.pos_min.shape), TILE_FULL, jnp.int8)
    if op == "causal":
        return _causal_tiles(q, k)
    if op == "sliding_window":
        return _window_tiles(q, k, expr[1])
    if op == "prefix":
        return _prefix_tiles(q, k)
    if op == "same_segment":
        return _segment_tiles(q, k)
    if op == "not_padding":
        return _real_tiles(q, k)
    if op == "cross":  # q == k and k != 0 is exactly same_segment & not_padding
        return jnp.minimum(_segment_tiles(q, k), _real_tiles(q, k))
    if op == "predicate":  # a user's predicate promises nothing per block: every tile may be partial
        return jnp.full(jnp.broadcast_shapes(q.pos_min.shape, k.pos_min.shape), TILE_PARTIAL, jnp.int8)
    raise AssertionError(op)


def _check_same_facts(a: Mask, b: Mask) -> None:
    (Ba, Qa, Ka), (Bb, Qb, Kb) = a.shape, b.shape
    if (Qa, Ka) != (Qb, Kb) or (Ba != Bb and 1 not in (Ba, Bb)):
        raise ValueError(
            f"cannot combine {a.name} and {b.name}: their (batch, queries, keys) are {a.shape} and {b.shape}"
        )


def _sides(q: TokenFacts, k: TokenFacts | None, name: str) -> tuple[TokenFacts, TokenFacts]:
    if not isinstance(q, TokenFacts):
        raise TypeError(f"{name}(): q must be TokenFacts (build it with archzoo.masks.facts); got {type(q).__name__}")
    k = q if k is None else k
    if not isinstance(k, TokenFacts):
        raise TypeError(f"{name}(): k must be TokenFacts (build it with archzoo.masks.facts); got {type(k).__name__}")
    if q.shape[0] != k.shape[0] and 1 not in (q.shape[0], k.shape[0]):
        raise ValueError(f"{name}(): q facts have batch {q.shape[0]} but k facts have batch {k.shape[0]}")
    return q, k


def causal(q: TokenFacts, k: TokenFacts | None = None) -> Mask:
    """Causal attention: key position <= query position.

    Combine with :func:`same_segment` for packed rows (positions restart per segment).
    Example on a 6-token row packing two examples (``segment_ids = 1 1 1 2 2 0``,
    ``positions = 0 1 2 0 1 0``), ``causal(f) & same_segment(f)``::

        q\\k 0 1 2 3 4 5
        0    1 0 0 0 0 0
        1    1 1 0 0 0 0
        2    1 1 1 0 0 0
        3    0 0 0 1 0 0
        4    0 0 0 1 1 0
        5    0 0 0 0 0 1     (padding attends to padding: no NaN; add not_padding to drop it)
    """
    q, k = _sides(q, k, "causal")
    return Mask(("causal",), q, k)


def prefix(q: TokenFacts, k: TokenFacts | None = None) -> Mask:
    """Prefix-LM attention: causal, or bidirectional when both tokens are in the prefix.

    Example (``segment_ids = 1 1 1 1 2 2``, ``positions = 0 1 2 3 0 1``,
    ``is_input = 1 1 0 0 1 0``), ``prefix(f) & same_segment(f)``::

        q\\k 0 1 2 3 4 5
        0    1 1 0 0 0 0
        1    1 1 0 0 0 0
        2    1 1 1 0 0 0
        3    1 1 1 1 0 0
        4    0 0 0 0 1 0
        5    0 0 0 0 1 1
    """
    q, k = _sides(q, k, "prefix")
    return Mask(("prefix",), q, k)


def full(q: TokenFacts, k: TokenFacts | None = None) -> Mask:
    """Everything allowed (encoder self-attention before packing and padding are applied).

    Example (any facts of 6 tokens): the 6x6 matrix of ones.
    """
    q, k = _sides(q, k, "full")
    return Mask(("full",), q, k)


def same_segment(q: TokenFacts, k: TokenFacts | None = None) -> Mask:
    """Packing: query and key belong to the same example (padding only meets padding).

    Example (``segment_ids = 1 1 2 2 2 0``)::

        q\\k 0 1 2 3 4 5
        0    1 1 0 0 0 0
        1    1 1 0 0 0 0
        2    0 0 1 1 1 0
        3    0 0 1 1 1 0
        4    0 0 1 1 1 0
        5    0 0 0 0 0 1
    """
    q, k = _sides(q, k, "same_segment")
    return Mask(("same_segment",), q, k)


def not_padding(q: TokenFacts, k: TokenFacts | None = None) -> Mask:
    """Neither the query nor the key is padding (segment id 0).

    Example (``segment_ids = 1 1 2 2 0 0``)::

        q\\k 0 1 2 3 4 5
        0    1 1 1 1 0 0
        1    1 1 1 1 0 0
        2    1 1 1 1 0 0
        3    1 1 1 1 0 0
        4    0 0 0 0 0 0
        5    0 0 0 0 0 0
    """
    q, k = _sides(q, k, "not_padding")
    return Mask(("not_padding",), q, k)


def cross(q: TokenFacts, k: TokenFacts) -> Mask:
    """Cross-attention: decoder query to encoder key of the same example, neither padding.

    Example with 6 decoder tokens (``segment_ids = 1 1 1 2 2 0``) against 6 encoder tokens
    (``segment_ids = 1 1 2 2 2 0``)::

        q\\k 0 1 2 3 4 5
        0    1 1 0 0 0 0
        1    1 1 0 0 0 0
        2    1 1 0 0 0 0
        3    0 0 1 1 1 0
        4    0 0 1 1 1 0
        5    0 0 0 0 0 0
    """
    q, k = _sides(q, k, "cross")
    return Mask(("cross",), q, k)


def sliding_window(window: int, q: TokenFacts, k: TokenFacts | None = None) -> Mask:
    """Local causal attention: ``q - window < k <= q`` (Mistral's window).

    Example with ``window=2`` on one example of 6 tokens (``positions = 0 1 2 3 4 5``)::

        q\\k 0 1 2 3 4 5
        0    1 0 0 0 0 0
        1    1 1 0 0 0 0
        2    0 1 1 0 0 0
        3    0 0 1 1 0 0
        4    0 0 0 1 1 0
        5    0 0 0 0 1 1
    """
    if not isinstance(window, (int, np.integer)) or isinstance(window, bool) or window < 1:
        raise ValueError(f"sliding_window(): window must be a positive int; got {window!r}")
    q, k = _sides(q, k, "sliding_window")
    return Mask(("sliding_window", int(window)), q, k)


@dataclasses.dataclass(frozen=True, eq=False)
class Predicate:
    """A mask kind of the user's own: ``fn(q, k, **params) -> bool``, as a mask constructor.

    Made by :func:`predicate`; called like :func:`causal`: ``chunked(q, k=None) -> Mask``. The
    mask's expression holds this object, so two masks of the same function and parameters
    compare equal and hash alike (by name and parameters) and a jitted function that receives
    them does not recompile.

    Attributes:
      fn: the predicate over broadcast facts (query side ``[B, Q, 1]``, key side ``[B, 1, K]``;
        attributes ``segment_ids``, ``positions``, ``is_input``) returning bool ``[B, Q, K]``
        (or anything that broadcasts to it).
      name: how the mask describes itself (``repr``, errors).
      params: the keyword arguments ``fn`` receives, as sorted ``(name, value)`` pairs.
    """

    fn: object
    name: str
    params: tuple = ()

    def __call__(self, q: TokenFacts, k: TokenFacts | None = None) -> Mask:
        q, k = _sides(q, k, self.name)
        return Mask(("predicate", self), q, k)

    def evaluate(self, q, k) -> jax.Array:
        """The predicate over broadcast facts, checked to be boolean of the broadcast shape."""
        out = self.fn(q, k, **dict(self.params))
        shape = jnp.broadcast_shapes(q.positions.shape, k.positions.shape)
        dtype = getattr(out, "dtype", None)
        if dtype is None or jnp.dtype(dtype) != jnp.bool_:
            raise TypeError(
                f"mask predicate {self.describe()}: must return a bool array (a comparison of facts), got "
                f"{type(out).__name__}{'' if dtype is None else ' of dtype ' + str(dtype)}"
            )
        try:
            return jnp.broadcast_to(out, shape)
        except ValueError:
            raise ValueError(
                f"mask predicate {self.describe()}: returned shape {tuple(out.shape)}, which does not broadcast to "
                f"the (batch, queries, keys) shape {tuple(shape)} of its facts"
            ) from None

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params)
        return f"{self.name}({args})" if args else self.name

    def __eq__(self, other):
        if not isinstance(other, Predicate):
            return NotImplemented
        return (self.name, self.params) == (other.name, other.params) and (self.fn is other.fn or self.fn == other.fn)

    def __hash__(self):
        return hash((self.name, self.params))


def predicate(fn, /, *, name: str | None = None, **params) -> Predicate:
    """A mask constructor from a predicate over query facts and key facts (a ``mask_mod``).

    ``fn(q, k, **params)`` receives broadcast facts (query side ``[B, Q, 1]``, key side
    ``[B, 1, K]``, attributes ``segment_ids``, ``positions``, ``is_input``) and returns bool.
    The result is called like :func:`causal` and its masks compose with ``&``, ``|``, ``~``,
    materialise densely, classify tiles (every tile partial: a predicate promises nothing per
    block) and serve the decode step (queries of one step against the cache's keys).

    Example, chunked attention in chunks of 2 (``positions = 0 1 2 3 4 5``, one example),
    ``chunked(f) & causal(f)``::

        def chunk(q, k, size):
            return q.positions // size == k.positions // size

        chunked = predicate(chunk, size=2)

        q\\k 0 1 2 3 4 5
        0    1 0 0 0 0 0
        1    1 1 0 0 0 0
        2    0 0 1 0 0 0
        3    0 0 1 1 0 0
        4    0 0 0 0 1 0
        5    0 0 0 0 1 1

    Args:
      fn: the predicate.
      name: how masks of it describe themselves (default: the function's qualified name).
      **params: keyword arguments passed to ``fn`` (any name but ``name``); hashable values
        (numbers, strings, tuples).

    Raises:
      TypeError: ``fn`` is not callable or a parameter is not hashable.
    """
    if not callable(fn):
        raise TypeError(f"predicate(): fn must be callable, got {type(fn).__name__} {fn!r}")
    items = tuple(sorted(params.items()))
    for key, value in items:
        try:
            hash(value)
        except TypeError:
            raise TypeError(
                f"predicate(): parameter {key}={value!r} is not hashable (masks are compared by their parameters); "
                "use a number, a string or a tuple"
            ) from None
    label = name or f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    return Predicate(fn, label, items)
