"""Attention backends: the hand-written backward pass against ``jax.grad`` of plain attention, and
the causal block path against the dense path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from archzoo import masks
from archzoo.layers import kernels
from archzoo.layers.kernels import jax_attention, xla_attention
from archzoo.masks import TokenFacts

H, Dh = 4, 8
# Three packed rows of 10 tokens: several examples, padding at the end, a row with no padding.
SEGMENTS = np.array([[1, 1, 1, 2, 2, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 2, 2, 2, 2, 2, 0, 0, 0]])
B, L = SEGMENTS.shape


def plain_attention(q, k, v, allowed, bias, scale):
    """Softmax attention written out, differentiated by ``jax.grad``: the reference."""
    G = k.shape[2]
    k = jnp.repeat(k, H // G, axis=2)
    v = jnp.repeat(v, H // G, axis=2)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * scale
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    logits = jnp.where(allowed[:, None], logits, -1e30)
    weights = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)
    return out * allowed.any(-1)[:, :, None, None].astype(out.dtype)


def inputs(G, bias_batch, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(B, L, H, Dh)), dtype)
    k = jnp.asarray(rng.normal(size=(B, L, G, Dh)), dtype)
    v = jnp.asarray(rng.normal(size=(B, L, G, Dh)), dtype)
    bias = None if bias_batch is None else jnp.asarray(rng.normal(size=(bias_batch, H, L, L)), dtype)
    # a cotangent that is zero at padding queries, whose outputs are not specified
    g = jnp.asarray(rng.normal(size=(B, L, H, Dh)) * (SEGMENTS != 0)[:, :, None, None], dtype)
    return q, k, v, bias, g


def value_and_grads(backend, mask, q, k, v, bias, g, scale):
    """Output and gradients of ``<g, attention(...)>`` w.r.t. q, k, v (and the bias)."""

    def f(q, k, v, bias):
        return jnp.sum(backend(q, k, v, mask, bias, scale).astype(jnp.float32) * g.astype(jnp.float32))

    argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
    out = jax.jit(backend, static_argnums=5)(q, k, v, mask, bias, scale)
    return out, jax.jit(jax.grad(f, argnums=argnums))(q, k, v, bias)


def reference(mask, q, k, v, bias, g, scale):
    allowed = mask.allowed()
    backend = lambda q, k, v, mask, bias, scale: plain_attention(q, k, v, allowed, bias, scale)
    return value_and_grads(backend, mask, q, k, v, bias, g, scale)


def packed_causal(ordered: bool):
    f = masks.facts(SEGMENTS)
    assert f.ordered
    f = TokenFacts(f.segment_ids, f.positions, f.is_input, ordered)
    return masks.causal(f) & masks.same_segment(f)


def assert_close(got, want, real, tol):
    """Equal at non-padding queries (``real`` is ``[B, L]``); gradients everywhere."""
    out, grads = got
    want_out, want_grads = want
    np.testing.assert_allclose(np.asarray(out, np.float32)[real], np.asarray(want_out, np.float32)[real], rtol=tol, atol=tol)
    for a, b in zip(grads, want_grads):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", [xla_attention, jax_attention], ids=["xla", "jax"])
@pytest.mark.parametrize("G", [1, 2, 4])
@pytest.mark.parametrize("bias_batch", [None, B, 1], ids=["no-bias", "bias", "bias-broadcast"])
@pytest.mark.parametrize("block", [None, 4], ids=["dense", "causal-blocks"])
def test_output_and_gradients_match_plain_attention(monkeypatch, backend, G, bias_batch, block):
    """Multi-head, grouped and multi-query; with a learned bias (its gradient summed over a
    broadcast batch); dense, and in causal blocks of 4 over rows of 10 (a ragged last block)."""
    if block is not None:
        monkeypatch.setattr(kernels, "CAUSAL_BLOCK", block)
    mask = packed_causal(ordered=block is not None)
    assert mask.lower_triangular == (block is not None)
    q, k, v, bias, g = inputs(G, bias_batch)
    scale = Dh**-0.5
    assert_close(value_and_grads(backend, mask, q, k, v, bias, g, scale), reference(mask, q, k, v, bias, g, scale), SEGMENTS != 0, 2e-5)


# Prefixes of the packed rows: within the first block of 4 (rows 0 and 2), and across it (row 1).
PREFIXES = np.array([[1, 1, 0, 1, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0, 0, 0], [1, 0, 1, 1, 0, 0, 0, 0, 0, 0]], bool)


@pytest.mark.parametrize("backend", [xla_attention, jax_attention], ids=["xla", "jax"])
@pytest.mark.parametrize("rows", [[0, 2], [0, 1, 2]], ids=["prefixes-end-in-the-first-block", "a-prefix-crosses-it"])
def test_prefix_blocks_skip_later_keys_only_when_no_real_query_sees_them(monkeypatch, backend, rows):
    """A prefix mask in blocks of 4: each block checks on device whether any real query of the
    batch sees a key after the block, and attends to the keys up to its end when none does. Both
    branches give plain attention's output and gradients."""
    monkeypatch.setattr(kernels, "CAUSAL_BLOCK", 4)
    seg = SEGMENTS[rows]
    f = masks.facts(seg, is_input=PREFIXES[rows] & (seg != 0))
    mask = masks.prefix(f) & masks.same_segment(f)
    q, k, v, _, g = inputs(2, None)
    q, k, v, g = (a[np.asarray(rows)] for a in (q, k, v, g))
    scale = Dh**-0.5
    assert_close(value_and_grads(backend, mask, q, k, v, None, g, scale), reference(mask, q, k, v, None, g, scale), seg != 0, 2e-5)


def test_bfloat16_backward_tracks_float32(monkeypatch):
    monkeypatch.setattr(kernels, "CAUSAL_BLOCK", 4)
    mask = packed_causal(ordered=True)
    q, k, v, bias, g = inputs(2, B, jnp.bfloat16)
    f32 = [None if a is None else a.astype(jnp.float32) for a in (q, k, v, bias, g)]
    got = value_and_grads(xla_attention, mask, q, k, v, bias, g, Dh**-0.5)
    want = reference(mask, *f32, Dh**-0.5)
    assert_close(got, want, SEGMENTS != 0, 6e-2)


@pytest.mark.parametrize("backend", [xla_attention, jax_attention], ids=["xla", "jax"])
def test_causal_blocks_attend_only_to_keys_up_to_the_block_end(monkeypatch, backend):
    """Rows of 10 in blocks of 4: the queries of block i meet keys [0, 4 (i + 1)), so the score
    matrices are 4x4, 4x8 and 2x10 instead of one 10x10; without the order promise, each block
    but the last chooses on device between all keys and the keys up to its end (both traced)."""
    monkeypatch.setattr(kernels, "CAUSAL_BLOCK", 4)
    q, k, v, _, _ = inputs(2, None)
    seen = []

    def spy(q, k, v, allowed, bias, scale):
        seen.append(allowed.shape[1:])
        return plain_attention(q, k, v, allowed, bias, scale)

    kernels._attend(spy, q, k, v, packed_causal(ordered=True), None, 1.0)
    assert seen == [(4, 4), (4, 8), (2, 10)]
    seen.clear()
    kernels._attend(spy, q, k, v, packed_causal(ordered=False), None, 1.0)
    assert seen == [(4, 10), (4, 4), (4, 10), (4, 8), (2, 10)]
    # and the real backends give the dense path's result at every non-padding query
    blocked = jax.jit(backend, static_argnums=5)(q, k, v, packed_causal(ordered=True), None, 1.0)
    dense = jax.jit(backend, static_argnums=5)(q, k, v, packed_causal(ordered=False), None, 1.0)
    np.testing.assert_allclose(np.asarray(blocked)[SEGMENTS != 0], np.asarray(dense)[SEGMENTS != 0], rtol=1e-5, atol=1e-6)


def test_a_mask_passed_into_jit_keeps_the_causal_block_path(monkeypatch):
    """A mask built outside ``jax.jit`` and passed in as an argument: its leaves come back as
    tracers, and the promise (self-attention over ordered facts) must survive that."""
    monkeypatch.setattr(kernels, "CAUSAL_BLOCK", 4)
    q, k, v, _, _ = inputs(2, None)
    mask = packed_causal(ordered=True)
    again = jax.tree.unflatten(*reversed(jax.tree.flatten(mask)))
    assert again.lower_triangular
    seen, flags = [], []

    def spy(q, k, v, allowed, bias, scale):
        seen.append(allowed.shape[1:])
        return plain_attention(q, k, v, allowed, bias, scale)

    @jax.jit
    def attend(q, k, v, mask):
        flags.append(mask.lower_triangular)
        return kernels._attend(spy, q, k, v, mask, None, 1.0)

    blocked = attend(q, k, v, mask)
    assert flags == [True]
    assert seen == [(4, 4), (4, 8), (2, 10)]
    dense = plain_attention(q, k, v, mask.allowed(), None, 1.0)
    np.testing.assert_allclose(np.asarray(blocked)[SEGMENTS != 0], np.asarray(dense)[SEGMENTS != 0], rtol=1e-5, atol=1e-6)
    # without the order promise, the choice on device under jit too
    seen.clear()
    attend(q, k, v, packed_causal(ordered=False))
    assert seen == [(4, 10), (4, 4), (4, 10), (4, 8), (2, 10)]


def test_auto_on_cpu_is_the_xla_backend_bit_for_bit(monkeypatch):
    """The default backend: on CPU the very program of ``xla``, forward and backward, through the
    causal block path and with a bias (one program, so the same numbers to the last bit)."""
    assert jax.default_backend() == "cpu"
    monkeypatch.setattr(kernels, "CAUSAL_BLOCK", 4)
    mask = packed_causal(ordered=True)
    q, k, v, bias, g = inputs(2, B)

    def program(backend):
        def f(q, k, v, bias):
            out, pull = jax.vjp(lambda *a: backend(*a, mask, bias, Dh**-0.5), q, k, v)
            return out, pull(g)

        return str(jax.make_jaxpr(f)(q, k, v, bias))

    assert program(kernels.auto_attention) == program(xla_attention)


def test_a_forced_kernel_the_platform_lacks_is_refused_before_training_naming_the_key():
    from archzoo.config import ConfigError
    from archzoo.layers.kernels import check_backend

    for backend, needs in (("cudnn", "an NVIDIA GPU"), ("splash", "a TPU")):
        with pytest.raises(ConfigError, match=rf"model.attention.backend: {backend} needs {needs}, but JAX runs on cpu; set attention.backend to auto"):
            check_backend(backend)
    for backend in ("auto", "xla", "jax"):
        check_backend(backend)
