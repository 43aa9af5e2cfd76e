""":func:`check_mask`: a mask constructor against its predicate, cell by cell, in training and
in the decode step, its tiles and its life under ``jax.jit`` (see :mod:`archzoo.testing`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from archzoo import masks
from archzoo.masks import TILE_EMPTY, TILE_FULL, Mask, TokenFacts

__all__ = ["check_mask"]

# check_mask's default facts, rows of (segment ids, is_input): packed examples with padding, a
# prefix in each of two examples, one unpadded example, ids that fall along the row with
# one-token examples. Positions restart at 0 in each example (0 on padding), as the feature
# converters make them.
_DEFAULT_ROWS = (
    ([1, 1, 1, 1, 2, 2, 2, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 0]),
    ([1, 1, 1, 1, 1, 2, 2, 2, 0], [1, 1, 0, 0, 0, 1, 1, 0, 0]),
    ([1, 1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0, 0]),
    ([2, 2, 2, 1, 3, 3, 4, 0, 0], [1, 1, 1, 1, 0, 1, 0, 0, 0]),
)
# Tile sizes check_mask classifies: 4 x 2 tiles over 9 tokens are ragged at the end both ways
# (each tile size compiles the block summaries anew, so one).
_BLOCKS = ((4, 2),)


def check_mask(
    builder: Callable[..., Mask],
    predicate: Callable[[TokenFacts, TokenFacts], object],
    *,
    facts: TokenFacts | Sequence[TokenFacts] | None = None,
) -> None:
    """Checks a mask builder against its predicate, one (query, key) pair at a time.

    For each facts ``f`` ``[B, L]``: ``builder(f).allowed()`` equals ``predicate`` called on every
    pair of single tokens of every row, and ``.dense()`` is the same ``[B, 1, L, L]``; the decode
    step ``builder(f[:, t:t+1], f)`` (one query against the row's keys, as against a KV cache)
    is row ``t`` of it; ``tiles(bq, bk)`` is never EMPTY over an allowed cell nor FULL over a
    masked one; a ``lower_triangular`` mask allows no key after its (non-padding) query; and the
    mask built inside ``jax.jit``, or passed into it, gives the same cells and static structure.

    Args:
      builder: ``builder(q: TokenFacts, k: TokenFacts | None = None) -> Mask``, the calling
        convention of :func:`archzoo.masks.causal` (``k=None``: self-attention over ``q``).
      predicate: ``predicate(q, k) -> bool`` over the facts of one query and one key, each of
        ``segment_ids``, ``positions``, ``is_input`` a 0-d jax array: jnp operations written
        for broadcast rows (``&``, ``|``, ``==``, ``jnp.where``) work on them unchanged.
      facts: the facts to check on, one TokenFacts or a list; default: 4 rows of 9 tokens
        (packed examples with padding, prefixes, one unpadded example, one-token examples).

    Raises:
      AssertionError: naming the invariant, the facts case, the row, query and key (and the
        tile) where the mask breaks it, and how many cells disagree.
      TypeError: ``builder`` returns no Mask, ``predicate`` not one bool, ``facts`` are not
        TokenFacts.

    Example::

        check_mask(lambda q, k=None: masks.causal(q, k) & masks.same_segment(q, k),
                   lambda q, k: (k.positions <= q.positions) & (q.segment_ids == k.segment_ids))
    """
    if facts is None:
        cases = _default_facts()
    else:
        cases = [facts] if isinstance(facts, TokenFacts) else list(facts)
    for n, f in enumerate(cases):
        if not isinstance(f, TokenFacts):
            raise TypeError(
                "check_mask(): facts must be TokenFacts (archzoo.masks.facts) or a list of them; "
                f"got {type(f).__name__}"
            )
        case = f"facts case {n} (B={f.shape[0]}, L={f.shape[1]})"
        mask = _built(builder, f, None)
        allowed = np.asarray(mask.allowed())
        what = f"builder(f).allowed() and the predicate, {case}"
        _same_cells(allowed, _by_predicate(predicate, f), f, f, what, "the predicate")
        dense = np.asarray(mask.dense())
        if dense.shape != (allowed.shape[0], 1, *allowed.shape[1:]) or not np.array_equal(dense[:, 0], allowed):
            raise AssertionError(
                f"check_mask: builder(f).dense() {dense.shape} is not allowed()[:, None] {allowed.shape}, {case}"
            )
        for t in range(f.shape[1]):
            step = f[:, t : t + 1]
            decoded = np.asarray(_built(builder, step, f).allowed())
            what = f"the decode step builder(f[:, {t}:{t + 1}], f) and row {t} of builder(f), {case}"
            _same_cells(decoded, allowed[:, t : t + 1], step, f, what, "the full mask", query_offset=t)
        _check_tiles(mask, allowed, case)
        _check_lower_triangular(mask, allowed, f, case)
        _check_jit(builder, f, mask, allowed, case)


def _default_facts() -> list[TokenFacts]:
    seg = np.array([s for s, _ in _DEFAULT_ROWS], np.int32)
    inputs = np.array([i for _, i in _DEFAULT_ROWS], bool)
    return [masks.facts(seg, positions=_restarting_positions(seg), is_input=inputs)]


def _restarting_positions(seg: np.ndarray) -> np.ndarray:
    """Positions counting from 0 in each run of one segment id along the row; 0 on padding."""
    pos = np.zeros(seg.shape, np.int32)
    for b in range(seg.shape[0]):
        for i in range(1, seg.shape[1]):
            pos[b, i] = pos[b, i - 1] + 1 if seg[b, i] == seg[b, i - 1] else 0
    return np.where(seg == 0, 0, pos)


def _built(builder, q: TokenFacts, k: TokenFacts | None) -> Mask:
    mask = builder(q) if k is None else builder(q, k)
    if not isinstance(mask, Mask):
        raise TypeError(
            f"check_mask(): builder must return an archzoo.masks.Mask; it returned {type(mask).__name__}"
        )
    return mask


def _by_predicate(predicate, f: TokenFacts) -> np.ndarray:
    """Bool ``[B, L, L]``: ``predicate`` on every (query, key) pair of each row, one at a time."""
    seg, pos, inp = (np.asarray(a) for a in (f.segment_ids, f.positions, f.is_input))
    B, L = seg.shape
    tokens = [
        [TokenFacts(jnp.asarray(seg[b, i]), jnp.asarray(pos[b, i]), jnp.asarray(inp[b, i])) for i in range(L)]
        for b in range(B)
    ]
    out = np.zeros((B, L, L), bool)
    for b in range(B):
        for i in range(L):
            for j in range(L):
                value = np.asarray(predicate(tokens[b][i], tokens[b][j]))
                if value.size != 1 or value.dtype != np.bool_:
                    raise TypeError(
                        "check_mask(): predicate(q, k) must return one bool for one query and one key; "
                        f"it returned {value.dtype} of shape {value.shape}"
                    )
                out[b, i, j] = bool(value.reshape(()))
    return out


def _describe_token(f: TokenFacts, b: int, i: int) -> str:
    b = min(b, f.shape[0] - 1)  # facts of batch 1 broadcast over the rows
    seg, pos, inp = (np.asarray(a)[b, i] for a in (f.segment_ids, f.positions, f.is_input))
    return f"(segment {int(seg)}, position {int(pos)}, is_input {bool(inp)})"


def _same_cells(got, want, q: TokenFacts, k: TokenFacts, what: str, reference: str, query_offset: int = 0) -> None:
    """Raises on the first cell (row, query, key) where two bool ``[B, Q, K]`` masks differ."""
    if got.shape != want.shape:
        raise AssertionError(f"check_mask: {what}: shapes {got.shape} and {want.shape} differ")
    wrong = np.argwhere(got != want)
    if len(wrong):
        b, i, j = (int(x) for x in wrong[0])
        says = "allows" if got[b, i, j] else "forbids"
        raise AssertionError(
            f"check_mask: {what} disagree at {len(wrong)} of {got.size} cells; first at row {b}, "
            f"query {i + query_offset}, key {j}: the mask {says} it and {reference} does not "
            f"(query {_describe_token(q, b, i)}, key {_describe_token(k, b, j)})"
        )


def _check_tiles(mask: Mask, allowed: np.ndarray, case: str) -> None:
    """Tiles against the cells of the dense mask they cover (a ragged last tile covers fewer)."""
    B, Q, K = allowed.shape
    for bq, bk in _BLOCKS:
        nq, nk = -(-Q // bq), -(-K // bk)
        tiles = np.asarray(mask.tiles(bq, bk))
        if tiles.shape != (B, nq, nk):
            raise AssertionError(
                f"check_mask: tiles({bq}, {bk}) has shape {tiles.shape}, not {(B, nq, nk)}, {case}"
            )
        for b, a, c in np.ndindex(B, nq, nk):
            cells = allowed[b, a * bq : (a + 1) * bq, c * bk : (c + 1) * bk]
            q0, k0 = a * bq, c * bk
            tile = (
                f"tiles({bq}, {bk}) says tile ({a}, {c}) of row {b} (queries {q0}..{q0 + cells.shape[0] - 1}, "
                f"keys {k0}..{k0 + cells.shape[1] - 1}), {case},"
            )
            if tiles[b, a, c] == TILE_EMPTY and cells.any():
                i, j = np.argwhere(cells)[0]
                raise AssertionError(
                    f"check_mask: {tile} is EMPTY, but query {q0 + i} may attend to key {k0 + j}: "
                    "a kernel would skip it"
                )
            if tiles[b, a, c] == TILE_FULL and not cells.all():
                i, j = np.argwhere(~cells)[0]
                raise AssertionError(
                    f"check_mask: {tile} is FULL, but query {q0 + i} may not attend to key {k0 + j}: "
                    "a kernel would drop the mask there"
                )


def _check_lower_triangular(mask: Mask, allowed: np.ndarray, f: TokenFacts, case: str) -> None:
    """A mask that promises ``lower_triangular`` lets attention skip the keys after each query."""
    if not mask.lower_triangular:
        return
    real_query = np.broadcast_to(np.asarray(f.segment_ids) != 0, allowed.shape[:2])[:, :, None]
    later = np.triu(np.ones(allowed.shape[1:], bool), k=1)
    wrong = np.argwhere(allowed & later & real_query)
    if len(wrong):
        b, i, j = (int(x) for x in wrong[0])
        raise AssertionError(
            "check_mask: the mask is lower_triangular (attention skips the keys after each query), "
            f"but at row {b} query {i} may attend to the later key {j}, {case}"
        )


def _check_jit(builder, f: TokenFacts, mask: Mask, allowed: np.ndarray, case: str) -> None:
    """Built inside ``jax.jit`` and passed into it, the mask keeps its cells and its static
    structure (the expression, ``lower_triangular`` and ``conjuncts`` that kernels read)."""
    inside = np.asarray(jax.jit(lambda f: _built(builder, f, None).dense())(f))[:, 0]
    if not np.array_equal(inside, allowed):
        b, i, j = np.argwhere(inside != allowed)[0]
        raise AssertionError(
            f"check_mask: the mask built inside jax.jit differs from the eager one at row {b}, query {i}, "
            f"key {j}, {case}"
        )
    structure = jax.tree.structure(jax.jit(lambda f: _built(builder, f, None))(f))
    if structure != jax.tree.structure(mask):
        raise AssertionError(
            f"check_mask: the mask built inside jax.jit has structure {structure}, not the eager "
            f"{jax.tree.structure(mask)}, {case}"
        )
    seen = {}

    def read(m: Mask):
        seen.update(lower_triangular=m.lower_triangular, conjuncts=m.conjuncts())
        return m.dense()

    through = np.asarray(jax.jit(read)(mask))[:, 0]
    eager = {"lower_triangular": mask.lower_triangular, "conjuncts": mask.conjuncts()}
    if not np.array_equal(through, allowed) or seen != eager:
        raise AssertionError(
            f"check_mask: the mask passed into jax.jit gives other cells or static structure {seen} "
            f"(eager: {eager}), {case}"
        )
