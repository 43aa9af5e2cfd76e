"""The mask algebra against a double Python loop over (q, k) written from DESIGN.md §2."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archzoo import masks
from archzoo.layers.kernels import jax_attention, xla_attention
from archzoo.masks import TILE_EMPTY, TILE_FULL, TILE_PARTIAL, Mask, TokenFacts

SETTINGS = settings(max_examples=60, deadline=None)
FEW = settings(max_examples=25, deadline=None)


# -- the slow, obvious reference ------------------------------------------------------------------
# An expression is a tuple tree: ("causal",), ("window", w), ("and", a, b), ("or", a, b), ("not", a).


def allowed_by_definition(expr, q, k) -> bool:
    """One (query, key) pair; q and k are dicts of Python scalars {seg, pos, inp}."""
    op = expr[0]
    if op == "and":
        return allowed_by_definition(expr[1], q, k) and allowed_by_definition(expr[2], q, k)
    if op == "or":
        return allowed_by_definition(expr[1], q, k) or allowed_by_definition(expr[2], q, k)
    if op == "not":
        return not allowed_by_definition(expr[1], q, k)
    if op == "causal":
        return k["pos"] <= q["pos"]
    if op == "prefix":
        return k["pos"] <= q["pos"] or (q["inp"] and k["inp"])
    if op == "full":
        return True
    if op == "same_segment":
        return q["seg"] == k["seg"]
    if op == "not_padding":
        return q["seg"] != 0 and k["seg"] != 0
    if op == "cross":
        return q["seg"] == k["seg"] and q["seg"] != 0 and k["seg"] != 0
    if op == "window":
        return q["pos"] - expr[1] < k["pos"] <= q["pos"]
    raise AssertionError(op)


def token(f: dict, b: int, i: int) -> dict:
    return {"seg": int(f["seg"][b][i]), "pos": int(f["pos"][b][i]), "inp": bool(f["inp"][b][i])}


def reference(expr, qf: dict, kf: dict) -> np.ndarray:
    """Bool [B, Q, K] by a double loop over (q, k) for every row."""
    B, Q, K = len(qf["seg"]), len(qf["seg"][0]), len(kf["seg"][0])
    out = np.zeros((B, Q, K), bool)
    for b in range(B):
        for i in range(Q):
            for j in range(K):
                out[b, i, j] = allowed_by_definition(expr, token(qf, b, i), token(kf, b, j))
    return out


def build(expr, q: TokenFacts, k: TokenFacts | None = None) -> Mask:
    """The same expression through archzoo.masks."""
    op = expr[0]
    if op == "and":
        return build(expr[1], q, k) & build(expr[2], q, k)
    if op == "or":
        return build(expr[1], q, k) | build(expr[2], q, k)
    if op == "not":
        return ~build(expr[1], q, k)
    if op == "window":
        return masks.sliding_window(expr[1], q, k)
    if op == "cross":
        return masks.cross(q, q if k is None else k)
    return getattr(masks, op)(q, k)


def to_facts(f: dict) -> TokenFacts:
    return masks.facts(np.asarray(f["seg"]), positions=np.asarray(f["pos"]), is_input=np.asarray(f["inp"]))


def matrix(m: Mask) -> np.ndarray:
    return np.asarray(m.allowed())


def pad_facts(f: dict, B: int, L: int) -> dict:
    """The rows of f, widened to L tokens and B rows with padding tokens."""
    rows = {key: [list(r) + [fill] * (L - len(r)) for r in f[key]] for key, fill in (("seg", 0), ("pos", 0), ("inp", False))}
    return {key: rows[key] + [[fill] * L] * (B - len(rows[key])) for key, fill in (("seg", 0), ("pos", 0), ("inp", False))}


def evaluate(expr, qf: dict, kf: dict | None = None, canvas: tuple[int, int, int] = (3, 12, 12)) -> np.ndarray:
    """The archzoo mask of expr over facts qf (and kf), as bool [B, Q, K].

    Mask cells depend only on their own query and key, so the facts are evaluated on a fixed
    canvas of padding tokens and the block of the real tokens is cut out; one canvas shape keeps
    XLA from compiling each operation again for every drawn shape.
    """
    B, Q = len(qf["seg"]), len(qf["seg"][0])
    K = Q if kf is None else len(kf["seg"][0])
    q = to_facts(pad_facts(qf, canvas[0], canvas[1]))
    k = None if kf is None else to_facts(pad_facts(kf, canvas[0], canvas[2]))
    return matrix(build(expr, q, k))[:B, :Q, :K]


# -- random packed batches ------------------------------------------------------------------------


@st.composite
def packed_row(draw, length: int) -> dict:
    """Segments 1, 2, ... then trailing padding; positions restart per segment; a random prefix of
    each segment is input."""
    real = draw(st.integers(0, length))
    seg, pos, inp = [], [], []
    sid = 0
    while len(seg) < real:
        n = draw(st.integers(1, real - len(seg)))
        sid += 1
        n_input = draw(st.integers(0, n))
        seg += [sid] * n
        pos += list(range(n))
        inp += [True] * n_input + [False] * (n - n_input)
    pad = length - real
    return {"seg": seg + [0] * pad, "pos": pos + [0] * pad, "inp": inp + [False] * pad}


@st.composite
def packed_batch(draw, batch: int | None = None, length: int | None = None) -> dict:
    B = draw(st.integers(1, 3)) if batch is None else batch
    L = draw(st.integers(1, 12)) if length is None else length
    rows = [draw(packed_row(L)) for _ in range(B)]
    return {key: [r[key] for r in rows] for key in ("seg", "pos", "inp")}


windows = st.integers(1, 5)

PRIMITIVES = ["causal", "prefix", "full", "same_segment", "not_padding"]


def expressions(max_leaves: int = 4):
    leaf = st.one_of(st.sampled_from([(p,) for p in PRIMITIVES]), windows.map(lambda w: ("window", w)))
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.tuples(st.just("and"), inner, inner),
            st.tuples(st.just("or"), inner, inner),
            st.tuples(st.just("not"), inner),
        ),
        max_leaves=max_leaves,
    )


# -- each kind and compositions -------------------------------------------------------------------


@pytest.mark.parametrize("kind", PRIMITIVES + ["window"])
@FEW
@given(data=st.data())
def test_each_kind_matches_the_definition(kind, data):
    f = data.draw(packed_batch())
    expr = ("window", data.draw(windows)) if kind == "window" else (kind,)
    np.testing.assert_array_equal(evaluate(expr, f), reference(expr, f, f))


CAUSAL, PREFIX, FULL = ("causal",), ("prefix",), ("full",)
SEG, NOPAD = ("same_segment",), ("not_padding",)


def AND(*xs):
    out = xs[0]
    for x in xs[1:]:
        out = ("and", out, x)
    return out


COMPOSITIONS = {
    "causal & same_segment": AND(CAUSAL, SEG),
    "prefix & same_segment": AND(PREFIX, SEG),
    "prefix & same_segment & not_padding": AND(PREFIX, SEG, NOPAD),
    "causal & same_segment & not_padding": AND(CAUSAL, SEG, NOPAD),
    "sliding_window(3) & same_segment": AND(("window", 3), SEG),
    "sliding_window(1) & causal & same_segment": AND(("window", 1), CAUSAL, SEG),
    "full & same_segment & not_padding": AND(FULL, SEG, NOPAD),
    "~causal | full": ("or", ("not", CAUSAL), FULL),
    "~causal & same_segment": AND(("not", CAUSAL), SEG),
    "(causal | prefix) & ~not_padding": AND(("or", CAUSAL, PREFIX), ("not", NOPAD)),
}


@pytest.mark.parametrize("name", list(COMPOSITIONS))
@FEW
@given(f=packed_batch())
def test_named_compositions_match_the_definition(name, f):
    expr = COMPOSITIONS[name]
    np.testing.assert_array_equal(evaluate(expr, f), reference(expr, f, f))


@SETTINGS
@given(f=packed_batch(), expr=expressions())
def test_random_compositions_match_the_definition(f, expr):
    np.testing.assert_array_equal(evaluate(expr, f), reference(expr, f, f))


@pytest.mark.parametrize("B, L", [(1, 1), (2, 5), (3, 12)])
def test_compositions_at_their_own_shape(B, L):
    """The same check without the canvas: the mask is built from facts of exactly [B, L]."""
    rng = np.random.default_rng(L)
    seg = np.sort(rng.integers(0, 3, size=(B, L)), axis=1)[:, ::-1]
    f = {"seg": seg.tolist(), "pos": rng.integers(0, 4, size=(B, L)).tolist(), "inp": (rng.random((B, L)) < 0.5).tolist()}
    for expr in list(COMPOSITIONS.values()) + [("cross",)]:
        np.testing.assert_array_equal(matrix(build(expr, to_facts(f))), reference(expr, f, f))


@FEW
@given(f=packed_batch())
def test_operators_are_boolean_algebra(f):
    fx = to_facts(pad_facts(f, 3, 12))
    c, s = masks.causal(fx), masks.same_segment(fx)
    np.testing.assert_array_equal(matrix(c & s), matrix(c) & matrix(s))
    np.testing.assert_array_equal(matrix(c | s), matrix(c) | matrix(s))
    np.testing.assert_array_equal(matrix(~c), ~matrix(c))
    # A prefix mask with an empty prefix is the causal one.
    no_prefix = masks.facts(fx.segment_ids, positions=fx.positions)
    np.testing.assert_array_equal(matrix(masks.prefix(no_prefix)), matrix(masks.causal(no_prefix)))


# -- cross-attention and the decode step ----------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_cross_matches_the_definition(data):
    B = data.draw(st.integers(1, 3))
    dec = data.draw(packed_batch(batch=B))
    enc = data.draw(packed_batch(batch=B))
    for expr in [("cross",), AND(FULL, SEG, NOPAD), AND(("cross",), NOPAD), ("or", ("cross",), ("not", SEG)), AND(CAUSAL, SEG)]:
        np.testing.assert_array_equal(evaluate(expr, dec, enc, canvas=(3, 12, 13)), reference(expr, dec, enc))


def test_cross_at_its_own_shape():
    dec = masks.facts(np.array([[1, 1, 2, 0], [1, 1, 1, 1]]))
    enc = masks.facts(np.array([[2, 2, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0]]))
    m = masks.cross(dec, enc)
    assert m.shape == (2, 4, 7)
    want = np.array(
        [
            [[0, 0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]],
            [[1, 1, 1, 1, 1, 1, 0]] * 4,
        ],
        bool,
    )
    np.testing.assert_array_equal(matrix(m), want)
    # cross is exactly "same segment and not padding" (DESIGN.md §2).
    np.testing.assert_array_equal(matrix(m), matrix(masks.same_segment(dec, enc) & masks.not_padding(dec, enc)))


@st.composite
def decode_step(draw):
    """A cache row of T slots: the first `filled` hold a packed row, the rest are empty (segment 0).
    The queries are the last `n_new` filled tokens."""
    B = draw(st.integers(1, 3))
    filled = draw(st.integers(1, 10))
    T = draw(st.integers(filled, 14))
    n_new = draw(st.integers(1, filled))
    rows = draw(packed_batch(batch=B, length=filled))
    cache = {key: [r + [pad] * (T - filled) for r in rows[key]] for key, pad in (("seg", 0), ("pos", 0), ("inp", False))}
    queries = {key: [r[filled - n_new : filled] for r in rows[key]] for key in rows}
    return rows, cache, queries, filled


DECODE_MASKS = {
    "causal & same_segment": AND(CAUSAL, SEG),
    "causal & same_segment & not_padding": AND(CAUSAL, SEG, NOPAD),
    "prefix & same_segment": AND(PREFIX, SEG),
    "sliding_window(2) & same_segment": AND(("window", 2), SEG),
}


@pytest.mark.parametrize("name", list(DECODE_MASKS))
@FEW
@given(step=decode_step())
def test_decode_step_matches_the_definition_and_the_full_mask(name, step):
    rows, cache, queries, filled = step
    expr = DECODE_MASKS[name]
    got = evaluate(expr, queries, cache, canvas=(3, 10, 14))
    np.testing.assert_array_equal(got, reference(expr, queries, cache))
    # The same queries in the training-time mask over the filled row see the same keys, and a
    # real query never sees an empty slot.
    n_new = len(queries["seg"][0])
    train = evaluate(expr, rows)[:, filled - n_new : filled]
    np.testing.assert_array_equal(got[:, :, :filled], train)
    real = np.asarray(queries["seg"]) != 0
    assert not got[:, :, filled:][real].any()


def test_decode_step_through_slicing_facts():
    """facts[:, t:t+1] is the query of step t; with the cache row as keys it is row t of the mask."""
    seg = np.array([[1, 1, 1, 2, 2, 0, 0, 0]])
    full_row = masks.facts(seg)
    for t in range(5):
        step = masks.causal(full_row[:, t : t + 1], full_row) & masks.same_segment(full_row[:, t : t + 1], full_row)
        whole = masks.causal(full_row) & masks.same_segment(full_row)
        np.testing.assert_array_equal(matrix(step)[:, 0], matrix(whole)[:, t])


# -- the docstring example of every builder -------------------------------------------------------


def docstring_matrix(fn) -> np.ndarray:
    """The 0/1 matrix under the "q\\k 0 1 2 3 4 5" header of a builder's docstring."""
    lines = fn.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("q\\k"))
    rows = []
    for line in lines[start + 1 : start + 7]:
        cells = line.split()
        assert int(cells[0]) == len(rows), line
        rows.append([int(c) for c in cells[1:7]])
    return np.array(rows, bool)


def docstring_facts(fn) -> list[tuple[str, list[int]]]:
    return [(m.group(1), [int(x) for x in m.group(2).split()]) for m in re.finditer(r"``(\w+) = ([\d ]+)``", fn.__doc__)]


def row(*values):
    return np.array([values])


ONES = np.ones((6, 6), bool)
DOC_EXAMPLES = {
    # builder: (facts as written in the docstring, how the example mask is built, its matrix)
    "causal": (
        [("segment_ids", [1, 1, 1, 2, 2, 0]), ("positions", [0, 1, 2, 0, 1, 0])],
        lambda f: masks.causal(f) & masks.same_segment(f),
        [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1]],
    ),
    "prefix": (
        [("segment_ids", [1, 1, 1, 1, 2, 2]), ("positions", [0, 1, 2, 3, 0, 1]), ("is_input", [1, 1, 0, 0, 1, 0])],
        lambda f: masks.prefix(f) & masks.same_segment(f),
        [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 1, 1]],
    ),
    "same_segment": (
        [("segment_ids", [1, 1, 2, 2, 2, 0])],
        masks.same_segment,
        [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1]],
    ),
    "not_padding": (
        [("segment_ids", [1, 1, 2, 2, 0, 0])],
        masks.not_padding,
        [[1, 1, 1, 1, 0, 0]] * 4 + [[0] * 6] * 2,
    ),
    "sliding_window": (
        [("positions", [0, 1, 2, 3, 4, 5])],
        lambda f: masks.sliding_window(2, f),
        [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1]],
    ),
}


@pytest.mark.parametrize("name", list(DOC_EXAMPLES))
def test_docstring_example(name):
    fn = getattr(masks, name)
    doc_facts, make, expected = DOC_EXAMPLES[name]
    expected = np.array(expected, bool)
    assert docstring_facts(fn) == doc_facts
    np.testing.assert_array_equal(docstring_matrix(fn), expected)
    f = masks.facts(**{key: row(*values) for key, values in doc_facts})
    np.testing.assert_array_equal(matrix(make(f))[0], expected)


def test_docstring_example_sliding_window_says_window_2():
    assert "``window=2``" in masks.sliding_window.__doc__


def test_docstring_example_cross():
    """Decoder ``segment_ids = 1 1 1 2 2 0`` against encoder ``segment_ids = 1 1 2 2 2 0``."""
    assert docstring_facts(masks.cross) == [("segment_ids", [1, 1, 1, 2, 2, 0]), ("segment_ids", [1, 1, 2, 2, 2, 0])]
    expected = np.array(
        [[1, 1, 0, 0, 0, 0]] * 3 + [[0, 0, 1, 1, 1, 0]] * 2 + [[0] * 6],
        bool,
    )
    np.testing.assert_array_equal(docstring_matrix(masks.cross), expected)
    dec, enc = masks.facts(row(1, 1, 1, 2, 2, 0)), masks.facts(row(1, 1, 2, 2, 2, 0))
    np.testing.assert_array_equal(matrix(masks.cross(dec, enc))[0], expected)


def test_docstring_example_full():
    assert "the 6x6 matrix of ones" in masks.full.__doc__
    for f in (masks.facts(row(1, 1, 1, 2, 2, 0)), masks.facts(shape=(1, 6))):
        np.testing.assert_array_equal(matrix(masks.full(f))[0], ONES)


@pytest.mark.parametrize("name", list(DOC_EXAMPLES))
def test_docstring_examples_agree_with_the_definition(name):
    doc_facts, _, expected = DOC_EXAMPLES[name]
    values = dict(doc_facts)
    f = {
        "seg": [values.get("segment_ids", [1] * 6)],
        "pos": [values.get("positions", [0, 1, 2, 3, 4, 5])],
        "inp": [[bool(x) for x in values.get("is_input", [0] * 6)]],
    }
    expr = {
        "causal": AND(CAUSAL, SEG),
        "prefix": AND(PREFIX, SEG),
        "same_segment": SEG,
        "not_padding": NOPAD,
        "sliding_window": ("window", 2),
    }[name]
    np.testing.assert_array_equal(reference(expr, f, f)[0], np.array(expected, bool))


def test_default_positions_restart_per_segment():
    f = masks.facts(np.array([[1, 1, 1, 2, 2, 0], [3, 3, 1, 1, 1, 1]]))
    np.testing.assert_array_equal(np.asarray(f.positions), [[0, 1, 2, 0, 1, 0], [0, 1, 0, 1, 2, 3]])
    assert not np.asarray(f.is_input).any()


# -- tiles ----------------------------------------------------------------------------------------


def tiles_by_definition(dense: np.ndarray, block_q: int, block_k: int) -> np.ndarray:
    """Int [B, nq, nk] tile classes from a dense bool mask, cell by cell."""
    B, Q, K = dense.shape
    nq, nk = -(-Q // block_q), -(-K // block_k)
    out = np.zeros((B, nq, nk), int)
    for b in range(B):
        for i in range(nq):
            for j in range(nk):
                cells = [dense[b, q, k] for q in range(i * block_q, min(Q, (i + 1) * block_q)) for k in range(j * block_k, min(K, (j + 1) * block_k))]
                out[b, i, j] = TILE_FULL if all(cells) else (TILE_EMPTY if not any(cells) else TILE_PARTIAL)
    return out


def assert_conservative(summary: np.ndarray, want: np.ndarray) -> None:
    """A summary tile may be partial where the truth is empty or full, nothing else."""
    wrong = (summary != want) & (summary != TILE_PARTIAL)
    assert not wrong.any(), list(zip(*np.nonzero(wrong)))


@settings(max_examples=30, deadline=None)
@given(data=st.data(), expr=expressions(3), block_q=st.integers(1, 4), block_k=st.integers(1, 6))
def test_tiles_agree_with_dense(data, expr, block_q, block_k):
    # Q = 7 and K = 11 leave a ragged last tile for most block sizes; one shape keeps XLA from
    # compiling the mask again for every example.
    qf = data.draw(packed_batch(batch=2, length=7))
    kf = data.draw(packed_batch(batch=2, length=11))
    m = build(expr, to_facts(qf), to_facts(kf))
    want = tiles_by_definition(np.asarray(m.dense())[:, 0], block_q, block_k)
    np.testing.assert_array_equal(np.asarray(m.tiles(block_q, block_k, exact=True)), want)


# Each kind and a few compositions. One shape and tile size for all the summary tests (3 x 4 tiles
# over 11 tokens, ragged both ways) keeps XLA from compiling the summaries again.
SUMMARISED = [(p,) for p in PRIMITIVES] + [("cross",), ("window", 2)] + [
    COMPOSITIONS[name]
    for name in ("causal & same_segment", "prefix & same_segment & not_padding", "~causal | full", "(causal | prefix) & ~not_padding")
]


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_tile_summaries_are_conservative(data):
    """Queries and keys from different facts."""
    q = to_facts(data.draw(packed_batch(batch=2, length=11)))
    k = to_facts(data.draw(packed_batch(batch=2, length=11)))
    for expr in SUMMARISED:
        m = build(expr, q, k)
        assert_conservative(np.asarray(m.tiles(3, 4)), tiles_by_definition(np.asarray(m.allowed()), 3, 4))


@settings(max_examples=10, deadline=None)
@given(f=packed_batch(batch=2, length=11))
def test_tile_summaries_of_packed_causal_rows(f):
    """``causal & same_segment`` (and with a window) over ordered self-attention facts:
    conservative; every tile after the diagonal is empty unless both its blocks hold padding;
    without a window, every tile before the diagonal inside one example is full."""
    block_q, block_k = 3, 4
    facts = to_facts(f)
    assert facts.ordered
    causal = masks.causal(facts) & masks.same_segment(facts)
    seg = np.asarray(f["seg"])
    L = seg.shape[1]
    for m in (causal, causal & masks.sliding_window(3, facts)):
        want = tiles_by_definition(np.asarray(m.allowed()), block_q, block_k)
        summary = np.asarray(m.tiles(block_q, block_k))
        assert_conservative(summary, want)
        for b, i, j in np.ndindex(*want.shape):
            qs, ks = seg[b, i * block_q : (i + 1) * block_q], seg[b, j * block_k : (j + 1) * block_k]
            q_last, k_first, k_last = min(L, (i + 1) * block_q) - 1, j * block_k, min(L, (j + 1) * block_k) - 1
            if k_first > q_last and not (0 in qs and 0 in ks):
                assert summary[b, i, j] == TILE_EMPTY, (b, i, j)
            one_example = len(set(qs) | set(ks)) == 1 and qs[0] != 0
            if m is causal and k_last < i * block_q and one_example:
                assert summary[b, i, j] == TILE_FULL, (b, i, j)


def test_tile_summaries_of_a_packed_row_through_a_pytree_round_trip():
    """Row 0 packs three examples and padding (``1 1 1 1 2 2 2 2 3 0 0``), row 1 is one
    example; 3 x 4 tiles. The order promise the summaries read is static: a mask flattened and
    rebuilt, as ``jax.jit`` does with its arguments, answers the same."""
    f = masks.facts(np.array([[1, 1, 1, 1, 2, 2, 2, 2, 3, 0, 0], [1] * 11]))
    m = masks.causal(f) & masks.same_segment(f)
    P, E, F = TILE_PARTIAL, TILE_EMPTY, TILE_FULL
    want = [[[P, E, E], [P, P, E], [E, P, P], [E, E, P]], [[P, E, E], [F, P, E], [F, P, P], [F, F, P]]]
    np.testing.assert_array_equal(np.asarray(m.tiles(3, 4)), want)
    np.testing.assert_array_equal(np.asarray(m.tiles(3, 4, exact=True)), want)
    again = jax.tree.unflatten(*reversed(jax.tree.flatten(m)))
    np.testing.assert_array_equal(np.asarray(again.tiles(3, 4)), want)


def test_tiles_of_a_causal_mask():
    """8 tokens, 4x4 tiles: the upper tile is empty, the lower full, the diagonal ones partial."""
    m = masks.causal(masks.facts(shape=(1, 8)))
    np.testing.assert_array_equal(np.asarray(m.tiles(4, 4))[0], [[TILE_PARTIAL, TILE_EMPTY], [TILE_FULL, TILE_PARTIAL]])


# -- no NaN through both backends -----------------------------------------------------------------


@pytest.mark.parametrize("backend", [xla_attention, jax_attention], ids=["xla", "jax"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_padding_queries_with_nothing_allowed_give_no_nan(backend, with_bias):
    seg = np.array([[1, 1, 1, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0, 0]])
    f = masks.facts(seg)
    mask = masks.causal(f) & masks.same_segment(f) & masks.not_padding(f)
    allowed = np.asarray(mask.allowed())
    assert not allowed[seg == 0].any()
    B, L, H, G, Dh = 3, 7, 4, 2, 8
    rng = np.random.default_rng(0)
    q = rng.normal(size=(B, L, H, Dh)).astype(np.float32)
    k = rng.normal(size=(B, L, G, Dh)).astype(np.float32)
    v = rng.normal(size=(B, L, G, Dh)).astype(np.float32)
    bias = rng.normal(size=(B, H, L, L)).astype(np.float32) if with_bias else None
    scale = Dh**-0.5
    run = jax.jit(backend, static_argnums=5)
    out = np.asarray(run(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), mask, None if bias is None else jnp.asarray(bias), scale))
    assert np.isfinite(out).all()
    for b in range(B):
        for i in range(L):
            if seg[b, i] == 0:
                continue
            keys = [j for j in range(L) if allowed[b, i, j]]
            for h in range(H):
                g = h // (H // G)
                logits = np.array([q[b, i, h] @ k[b, j, g] * scale + (0.0 if bias is None else bias[b, h, i, j]) for j in keys], np.float64)
                w = np.exp(logits - logits.max())
                w /= w.sum()
                want = sum(wj * v[b, j, g] for wj, j in zip(w, keys))
                np.testing.assert_allclose(out[b, i, h], want, rtol=1e-5, atol=1e-5)


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(segment_ids=np.ones((2, 5)), positions=np.zeros((2, 4))), "positions"),
        (dict(segment_ids=np.ones((2, 5)), is_input=np.zeros((1, 5), bool)), "is_input"),
        (dict(positions=np.zeros((2, 5)), is_input=np.zeros((2, 6), bool)), "is_input"),
        (dict(segment_ids=np.ones((2, 5)), shape=(2, 6)), "segment_ids"),
    ],
)
def test_facts_with_mismatched_shapes_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        masks.facts(**kwargs)


def test_facts_must_be_batch_by_length():
    with pytest.raises(ValueError, match="segment_ids|batch, length"):
        masks.facts(np.ones(5))
    with pytest.raises(ValueError):
        masks.facts()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        # a cast to int32 would truncate 1.5 to 1 and wrap 2**40 to 0 (padding)
        (dict(segment_ids=np.array([[1, 1.5, 2]])), r"segment_ids.*integer.*1\.5 at \(0, 1\)"),
        (dict(segment_ids=np.array([[1, 2**40]])), r"segment_ids.*1099511627776 at \(0, 1\).*int32"),
        (dict(segment_ids=np.array([[1, -(2**33)]])), r"segment_ids.*-8589934592 at \(0, 1\).*int32"),
        (dict(positions=np.array([[0.0, 0.25]])), r"positions.*integer.*0\.25 at \(0, 1\)"),
        (dict(positions=np.array([[0.0, np.nan]])), r"positions.*integer.*nan at \(0, 1\)"),
        (dict(positions=np.array([[0, 2**31]])), r"positions.*2147483648 at \(0, 1\).*int32"),
        (dict(segment_ids=np.array([["a", "b"]])), r"segment_ids.*integer.*<U1"),
        (dict(segment_ids=[[1, 2], [3]]), r"segment_ids.*ragged|segment_ids.*different lengths"),
        (dict(positions=[[0, 1], [0]]), r"positions.*ragged|positions.*different lengths"),
        (dict(is_input=[[True], [True, False]]), r"is_input.*ragged|is_input.*different lengths"),
        (dict(is_input=np.array([["yes", "no"]])), r"is_input.*<U"),
        (dict(shape=(1, -3)), r"shape.*\(1, -3\)"),
        (dict(shape=(2, 2.5)), r"shape.*\(2, 2\.5\)"),
    ],
)
def test_facts_refuse_values_a_cast_would_change_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        masks.facts(**kwargs)


def test_facts_accept_whole_floats_and_bools():
    """Whole-number floats and bools are ids a cast keeps exactly."""
    f = masks.facts(np.array([[1.0, 1.0, 2.0, 0.0]]), is_input=np.array([[1, 0, 1, 0]]))
    np.testing.assert_array_equal(np.asarray(f.segment_ids), [[1, 1, 2, 0]])
    np.testing.assert_array_equal(np.asarray(f.positions), [[0, 1, 0, 0]])
    np.testing.assert_array_equal(np.asarray(f.is_input), [[True, False, True, False]])
    assert f.segment_ids.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(masks.facts(np.array([[True, False]])).segment_ids), [[1, 0]])
    edge = masks.facts(positions=np.array([[0, 2**31 - 1]], np.int64))
    np.testing.assert_array_equal(np.asarray(edge.positions), [[0, 2**31 - 1]])


def test_combining_masks_over_different_lengths_raises():
    a, b = masks.facts(shape=(2, 6)), masks.facts(shape=(2, 5))
    with pytest.raises(ValueError, match="combine"):
        masks.causal(a) & masks.same_segment(b)
    with pytest.raises(ValueError, match="combine"):
        masks.causal(a) | masks.full(b)
    enc = masks.facts(shape=(2, 4))
    with pytest.raises(ValueError, match="combine"):
        masks.cross(a, enc) & masks.full(a)


def test_combining_masks_over_different_batches_raises():
    with pytest.raises(ValueError):
        masks.causal(masks.facts(shape=(2, 6))) & masks.same_segment(masks.facts(shape=(3, 6)))


def test_masks_built_from_different_facts_each_keep_their_own():
    """causal(fa) & same_segment(fb) is the AND of the two masks, each over its own facts."""
    fa = masks.facts(np.array([[1, 1, 1, 1, 1], [1, 1, 1, 2, 2]]))
    fb = masks.facts(np.array([[1, 1, 2, 2, 0], [1, 2, 2, 2, 2]]), positions=np.array([[4, 3, 2, 1, 0], [0, 0, 1, 2, 3]]))
    ca, sb, nb = masks.causal(fa), masks.same_segment(fb), masks.causal(fb)
    np.testing.assert_array_equal(matrix(ca & sb), matrix(ca) & matrix(sb))
    np.testing.assert_array_equal(matrix(sb | ca), matrix(sb) | matrix(ca))
    np.testing.assert_array_equal(matrix(~(ca & nb) | sb), ~(matrix(ca) & matrix(nb)) | matrix(sb))
    nested = (ca & ~nb) | (sb & (nb | ca))
    np.testing.assert_array_equal(matrix(nested), (matrix(ca) & ~matrix(nb)) | (matrix(sb) & (matrix(nb) | matrix(ca))))
    again = jax.tree.unflatten(*reversed(jax.tree.flatten(nested)))
    np.testing.assert_array_equal(matrix(jax.jit(lambda m: m)(again)), matrix(nested))
    # Facts of batch 1 broadcast against facts of batch 2.
    one = masks.facts(np.array([[1, 1, 1, 2, 2]]))
    both = masks.same_segment(one) & masks.causal(fb)
    assert both.shape == (2, 5, 5)
    np.testing.assert_array_equal(matrix(both), matrix(masks.same_segment(one)) & matrix(masks.causal(fb)))


@pytest.mark.parametrize("window", [0, -1, 1.5, True])
def test_sliding_window_must_be_a_positive_int(window):
    with pytest.raises(ValueError, match="window"):
        masks.sliding_window(window, masks.facts(shape=(1, 4)))


@pytest.mark.parametrize("builder", [masks.causal, masks.prefix, masks.full, masks.same_segment, masks.not_padding])
def test_builders_reject_arrays_in_place_of_facts(builder):
    with pytest.raises(TypeError, match="TokenFacts"):
        builder(np.ones((1, 4), np.int32))
    with pytest.raises(TypeError, match="TokenFacts"):
        builder(masks.facts(shape=(1, 4)), np.ones((1, 4), np.int32))


def test_cross_and_sliding_window_reject_arrays_in_place_of_facts():
    f = masks.facts(shape=(1, 4))
    with pytest.raises(TypeError, match="TokenFacts"):
        masks.cross(f, {"segment_ids": np.ones((1, 4))})
    with pytest.raises(TypeError, match="TokenFacts"):
        masks.sliding_window(2, np.ones((1, 4)))


def test_conjuncts_list_the_terms_and_the_facts_they_read():
    f, g = masks.facts(shape=(1, 6)), masks.facts(shape=(1, 6))
    m = masks.causal(f) & masks.sliding_window(4, f) & masks.same_segment(f)
    assert m.conjuncts() == ((0, ("causal",)), (0, ("sliding_window", 4)), (0, ("same_segment",)))
    assert (masks.causal(f) & masks.same_segment(g)).conjuncts() == ((0, ("causal",)), (1, ("same_segment",)))
    assert (masks.causal(f) | masks.full(f)).conjuncts() is None
    assert (masks.causal(f) & ~masks.same_segment(f)).conjuncts() is None


def test_tiles_reject_non_positive_blocks():
    with pytest.raises(ValueError, match="block"):
        masks.causal(masks.facts(shape=(1, 4))).tiles(0, 2)


# -- jit ------------------------------------------------------------------------------------------


def test_a_mask_passes_through_jit_without_recompiling():
    traces = []

    @jax.jit
    def count_allowed(m: Mask):
        traces.append(1)
        return m.allowed().sum(axis=(1, 2))

    def packed_causal(seg):
        f = masks.facts(seg)
        return masks.causal(f) & masks.same_segment(f) & masks.not_padding(f)

    a = np.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]])
    b = np.array([[1, 2, 3, 4, 5, 6], [1, 1, 0, 0, 0, 0]])
    got_a = np.asarray(count_allowed(packed_causal(a)))
    got_b = np.asarray(count_allowed(packed_causal(b)))
    assert len(traces) == 1
    # 1 + 2 + 3 + 1 + 2 allowed pairs in row 0; 21 in row 1. Six singletons; 1 + 2.
    np.testing.assert_array_equal(got_a, [9, 21])
    np.testing.assert_array_equal(got_b, [6, 3])
    # A different expression is a different program.
    count_allowed(masks.full(masks.facts(a)))
    assert len(traces) == 2


def test_mask_round_trips_as_a_pytree():
    f = masks.facts(np.array([[1, 1, 2, 2, 0]]), is_input=np.array([[1, 0, 1, 0, 0]], bool))
    m = masks.prefix(f) & masks.same_segment(f) | ~masks.sliding_window(2, f)
    leaves, treedef = jax.tree.flatten(m)
    assert all(isinstance(x, jax.Array) for x in leaves)
    again = jax.tree.unflatten(treedef, leaves)
    np.testing.assert_array_equal(matrix(again), matrix(m))
    assert again.name == m.name


# -- row order: the static promise behind the causal block path ------------------------------------


def test_facts_know_when_rows_are_in_order():
    assert masks.facts(shape=(2, 5)).ordered
    assert masks.facts(np.array([[1, 1, 2, 2, 0]])).ordered  # packed, padding at the end
    # positions counting up inside each segment, segments interleaved: still in order
    assert masks.facts(np.array([[1, 2, 1, 2]]), positions=np.array([[0, 0, 1, 1]])).ordered
    # a segment id that comes back restarts its default positions: a later key at a lower position
    assert not masks.facts(np.array([[1, 1, 2, 1, 1]])).ordered
    assert not masks.facts(np.ones((1, 4)), positions=np.array([[0, 2, 1, 3]])).ordered
    assert not masks.facts(np.ones((1, 4)), positions=np.array([[0, 1, 1, 2]])).ordered  # not strictly
    assert masks.facts(np.array([[1, 1, 0, 0]]), positions=np.array([[0, 1, 0, 0]])).ordered  # padding ignored
    with pytest.raises(ValueError, match="ordered=True"):
        masks.facts(np.ones((1, 4)), positions=np.array([[3, 2, 1, 0]]), ordered=True)
    # traced arrays cannot be checked: not ordered unless promised
    traced = jax.jit(lambda s: jnp.asarray(masks.facts(s).ordered))
    assert not bool(traced(jnp.ones((1, 4), jnp.int32)))
    assert masks.facts(shape=(1, 6))[:, 2:5].ordered


def brute_lower_triangular(mask) -> bool:
    """No non-padding query of any row may attend to a key after it."""
    allowed = np.asarray(mask.allowed())
    real = np.asarray(mask.q.segment_ids) != 0
    upper = np.triu(np.ones(allowed.shape[1:], bool), k=1)
    return not (allowed & upper & real[:, :, None]).any()


@pytest.mark.parametrize(
    "build, expected",
    [
        (lambda f, g: masks.causal(f) & masks.same_segment(f), True),
        (lambda f, g: masks.same_segment(f) & masks.causal(f) & masks.not_padding(f), True),
        (lambda f, g: masks.sliding_window(2, f) & masks.same_segment(f), True),
        (lambda f, g: masks.causal(f), False),  # positions restart per example: a later example's start
        (lambda f, g: masks.prefix(f) & masks.same_segment(f), False),
        (lambda f, g: masks.full(f) & masks.same_segment(f), False),
        (lambda f, g: (masks.causal(f) & masks.same_segment(f)) | masks.full(f), False),
        (lambda f, g: masks.causal(f) & masks.same_segment(g), False),  # other facts
    ],
)
def test_lower_triangular_only_when_it_holds_for_any_data(build, expected):
    seg = np.array([[1, 1, 1, 2, 2, 3, 0], [1, 1, 1, 1, 1, 1, 1]])
    f, g = masks.facts(seg), masks.facts(seg)
    mask = build(f, g)
    assert mask.lower_triangular == expected
    if expected:
        assert brute_lower_triangular(mask)
    # without the promise, never
    u = TokenFacts(f.segment_ids, f.positions, f.is_input)
    assert not build(u, u).lower_triangular
