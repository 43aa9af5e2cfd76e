"""Multi-head, grouped-query and multi-query attention against a per-head numpy loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from archzoo import masks
from archzoo.layers.attention import Attention
from archzoo.layers.config import AttentionConfig

B, L, D, H, Dh = 2, 9, 32, 4, 8
SEGMENTS = np.array([[1, 1, 1, 1, 2, 2, 2, 0, 0], [1, 1, 2, 3, 3, 3, 3, 3, 3]])


def packed_causal_mask():
    f = masks.facts(SEGMENTS)
    return masks.causal(f) & masks.same_segment(f)


def module(G: int, backend: str, *, bias: bool) -> Attention:
    """An Attention layer whose parameters (biases included) are drawn from numpy with a fixed
    seed, so two layers that differ only in backend hold the same weights."""
    cfg = AttentionConfig(num_heads=H, num_kv_heads=G, bias=bias, out_bias=bias, backend=backend)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Attention(cfg, D, Dh, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(G)
    state = jax.tree.map(lambda s: jnp.asarray(rng.normal(scale=0.3, size=s.shape).astype(np.float32)), state)
    return nnx.merge(graphdef, state)


@nnx.jit
def forward(m: Attention, x, mask, bias_BHQK):
    q = m.project_q(x)
    k, v = m.project_kv(x)
    return m.attend(q, k, v, mask, bias_BHQK)


def numpy_attention(m: Attention, x, allowed, bias_BHQK) -> np.ndarray:
    """Per batch row, per head, per query: softmax over the allowed keys, keys of head h taken
    from kv head h // (H / G)."""
    x = np.asarray(x, np.float64)
    wq, wk, wv, wo = (np.asarray(w[...], np.float64) for w in (m.q, m.k, m.v, m.o))
    G = wk.shape[1]
    zeros = lambda *s: np.zeros(s)
    bq = zeros(H, Dh) if m.q_bias is None else np.asarray(m.q_bias[...], np.float64)
    bk = zeros(G, Dh) if m.k_bias is None else np.asarray(m.k_bias[...], np.float64)
    bv = zeros(G, Dh) if m.v_bias is None else np.asarray(m.v_bias[...], np.float64)
    bo = zeros(D) if m.o_bias is None else np.asarray(m.o_bias[...], np.float64)
    out = np.zeros((B, L, D))
    for b in range(B):
        for i in range(L):
            heads = np.zeros((H, Dh))
            keys = [j for j in range(L) if allowed[b, i, j]]
            for h in range(H):
                g = h // (H // G)
                q = x[b, i] @ wq[:, h] + bq[h]
                logits = []
                for j in keys:
                    kj = x[b, j] @ wk[:, g] + bk[g]
                    logits.append(q @ kj / np.sqrt(Dh) + (0.0 if bias_BHQK is None else bias_BHQK[b, h, i, j]))
                w = np.exp(np.array(logits) - max(logits))
                w /= w.sum()
                heads[h] = sum(wj * (x[b, j] @ wv[:, g] + bv[g]) for wj, j in zip(w, keys))
            out[b, i] = sum(heads[h] @ wo[h] for h in range(H)) + bo
    return out


@pytest.mark.parametrize("G", [4, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "additive_bias"])
def test_backends_agree_with_each_other_and_a_numpy_loop(G, with_bias):
    proj_bias = G == 2  # q, k, v and output biases ride along on the GQA case
    rng = np.random.default_rng(G)
    x = rng.normal(size=(B, L, D)).astype(np.float32)
    bias = rng.normal(size=(B, H, L, L)).astype(np.float32) if with_bias else None
    mask = packed_causal_mask()
    xla, jax_ = module(G, "xla", bias=proj_bias), module(G, "jax", bias=proj_bias)
    np.testing.assert_array_equal(np.asarray(xla.k[...]), np.asarray(jax_.k[...]))
    out_xla = np.asarray(forward(xla, x, mask, bias))
    out_jax = np.asarray(forward(jax_, x, mask, bias))
    np.testing.assert_allclose(out_xla, out_jax, atol=1e-5, rtol=1e-5)
    want = numpy_attention(xla, x, np.asarray(mask.allowed()), bias)
    np.testing.assert_allclose(out_xla, want, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(out_jax, want, atol=1e-5, rtol=1e-4)


def test_grouped_query_equals_multi_head_with_repeated_kv_heads():
    """GQA with G kv heads is MHA whose k, v projections repeat each kv head H / G times."""
    x = np.random.default_rng(3).normal(size=(B, L, D)).astype(np.float32)
    mask = packed_causal_mask()
    gqa = module(2, "xla", bias=False)
    mha = module(4, "xla", bias=False)
    mha.q[...] = gqa.q[...]
    mha.o[...] = gqa.o[...]
    mha.k[...] = np.repeat(np.asarray(gqa.k[...]), 2, axis=1)
    mha.v[...] = np.repeat(np.asarray(gqa.v[...]), 2, axis=1)
    out_gqa = np.asarray(forward(gqa, x, mask, None))
    out_mha = np.asarray(forward(mha, x, mask, None))
    # Two differently shaped float32 computations agree to rounding, not bitwise: their reductions
    # run in an order that depends on the shapes and the CPU. Allow a few float32 ulps of the
    # outputs' scale (|out| reaches ~6 here, so 1e-6 absolute is under two ulps and fails on some CPUs).
    scale = np.abs(out_mha).max()
    np.testing.assert_allclose(out_gqa, out_mha, rtol=0, atol=16 * np.finfo(np.float32).eps * scale)
