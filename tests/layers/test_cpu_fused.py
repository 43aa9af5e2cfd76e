"""The fused CPU attention kernel against the XLA path: outputs and the gradients of queries,
keys, values and a logit bias, on every mask kind (packed rows with padding, past one tile and
past the XLA path's causal block), grouped-query and multi-query heads, ALiBi and T5 biases and
bfloat16; ``auto`` picks it on CPU (under a mesh, on each device's own rows); a machine without a compiler takes the XLA
path and says so in one line."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AbstractMesh

from archzoo import masks
from archzoo.layers import cpu_fused
from archzoo.layers.config import PositionConfig
from archzoo.layers.kernels import auto_attention, cpu_attention, xla_attention
from archzoo.layers.positions import RelativePositionBias, alibi_bias, alibi_slopes
from archzoo.sharding import Layout

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu" or not cpu_fused.available(), reason="the kernel needs a CPU and a C++ compiler")

B, L, H, Dh = 2, 150, 4, 32  # 150: three query tiles of the kernel's, past one 128-query block of xla's


def packed_facts(length: int, seed: int, prefix: bool = True):
    """Row 0 packs two examples then padding, row 1 one example over the whole row; each
    example's first third is its prefix."""
    rng = np.random.default_rng(seed)
    cut = int(rng.integers(length // 3, 2 * length // 3))
    seg = np.ones((B, length), np.int32)
    seg[0, cut:] = 2
    seg[0, length - 7 :] = 0
    pos = np.zeros((B, length), np.int32)
    is_input = np.zeros((B, length), bool)
    for b in range(B):
        for s in np.unique(seg[b][seg[b] > 0]):
            where = np.flatnonzero(seg[b] == s)
            pos[b, where] = np.arange(len(where))
            is_input[b, where[: len(where) // 3]] = prefix
    return masks.facts(seg, positions=pos, is_input=is_input)


def chunked(q, k, *, chunk: int = 20):  # a plug-in predicate: causal within chunks of positions
    return (k.positions <= q.positions) & (k.positions // chunk == q.positions // chunk) & (k.segment_ids == q.segment_ids)


def mask_of(kind: str, f, fk=None):
    packed = masks.same_segment(f)
    return {
        "causal": lambda: masks.causal(f) & packed,
        "prefix": lambda: masks.prefix(f) & packed,
        "full": lambda: masks.full(f) & packed & masks.not_padding(f),
        "sliding_window": lambda: masks.sliding_window(24, f) & packed,
        "predicate": lambda: masks.predicate(chunked, name="chunked", chunk=20)(f),
        "cross": lambda: masks.cross(f, fk),
    }[kind]()


def inputs(G: int, K: int, dtype, seed: int, Q: int = L, head_dim: int = Dh):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, Q, H, head_dim))
    k, v = rng.normal(size=(2, B, K, G, head_dim))
    return tuple(jnp.asarray(a, dtype) for a in (q, k, v))


def compare(kind: str, G: int, bias: str | None = None, dtype=jnp.float32, seed: int = 0, head_dim: int = Dh):
    f = packed_facts(L, seed)
    K = 90 if kind == "cross" else L
    fk = packed_facts(K, seed + 1) if kind == "cross" else None
    mask = mask_of(kind, f, fk)
    q, k, v = inputs(G, K, dtype, seed, head_dim=head_dim)
    kpos = (fk or f).positions
    if bias == "alibi":
        b = alibi_bias(alibi_slopes(H), f.positions, kpos)
    elif bias == "t5":
        table = RelativePositionBias(PositionConfig(kind="t5_bias"), H, bidirectional=kind != "causal", rngs=nnx.Rngs(seed))
        b = table(f.positions, kpos)[:1]  # [1, H, Q, K]: broadcast over the batch
    else:
        b = None
    real = np.asarray(f.segment_ids != 0)[:, :, None, None]  # padding queries' outputs are unspecified
    w = jnp.asarray(np.random.default_rng(seed + 2).normal(size=(B, L, H, head_dim)) * real, jnp.float32)

    def loss(attention, q, k, v, b):
        out = attention(q, k, v, mask, b, head_dim**-0.5)
        return jnp.sum(out.astype(jnp.float32) * w), out

    args = (q, k, v, b)
    argnums = (0, 1, 2) if b is None else (0, 1, 2, 3)
    got = jax.jit(jax.value_and_grad(lambda *a: loss(cpu_attention, *a), argnums=argnums, has_aux=True))(*args)
    # the reference in float32 whatever the kernel's dtype: the kernel computes in float32
    wide = tuple(None if a is None else a.astype(jnp.float32) for a in args)
    want = jax.jit(jax.value_and_grad(lambda *a: loss(xla_attention, *a), argnums=argnums, has_aux=True))(*wide)
    (_, out), grads = got
    (_, out_ref), grads_ref = want
    # float32 sums in another order (tiles, online softmax): equal within a tolerance relative to
    # the values' scale; bfloat16 outputs and gradients carry its 8-bit mantissa (2**-8)
    rel = 1e-5 if dtype == jnp.float32 else 2**-7
    pairs = [("out", np.asarray(out, np.float32) * real, np.asarray(out_ref) * real)]
    pairs += [(n, np.asarray(a, np.float32), np.asarray(r)) for n, a, r in zip(("dq", "dk", "dv", "dbias"), grads, grads_ref)]
    for name, a, r in pairs:
        scale = max(1.0, float(np.max(np.abs(r))))
        err = float(np.max(np.abs(a - r)))
        assert err <= rel * scale, f"{kind} G={G} Dh={head_dim} bias={bias} {jnp.dtype(dtype).name}: {name} max |delta| {err:.2e} > {rel:.0e} x {scale:.2f}"
    assert np.all(np.asarray(out)[np.asarray(~mask.allowed().any(-1))] == 0)  # a query with no key: 0


@pytest.mark.parametrize("kind", ["causal", "prefix", "full", "sliding_window", "predicate", "cross"])
def test_every_mask_kind_equals_the_xla_path(kind):
    compare(kind, G=2)


@pytest.mark.parametrize("G", [4, 1])
def test_multi_head_and_multi_query_equal_the_xla_path(G):
    compare("causal", G=G)


@pytest.mark.parametrize("bias,kind", [("alibi", "causal"), ("t5", "prefix"), ("t5", "cross")])
def test_alibi_and_t5_biases_and_their_gradient_equal_the_xla_path(bias, kind):
    compare(kind, G=2, bias=bias)


@pytest.mark.parametrize("head_dim", [16, 64, 128])
def test_every_head_width_the_kernel_takes_equals_the_xla_path(head_dim):
    compare("causal", G=2, head_dim=head_dim)


def test_bfloat16_equals_the_xla_path_in_float32():
    compare("prefix", G=2, dtype=jnp.bfloat16)


def test_auto_takes_the_kernel_on_cpu_and_under_a_mesh_runs_it_on_each_devices_rows():
    f = packed_facts(64, 0)
    q, k, v = inputs(2, 64, jnp.float32, 0, Q=64)

    def lowered():
        fn = lambda q, k, v: auto_attention(q, k, v, masks.causal(f) & masks.same_segment(f), None, 0.1)
        return str(jax.make_jaxpr(fn)(q, k, v))

    assert "archzoo_cpu_attention_forward" in lowered() and "shard_map" not in lowered()
    with Layout(AbstractMesh((2, 1, 1, 1), ("data", "fsdp", "tensor", "expert"))).active():
        assert "archzoo_cpu_attention_forward" in lowered() and "shard_map" in lowered()
    odd = jnp.zeros((B, 64, H, 24))  # a head width the kernel is not built for
    assert not cpu_fused.supports(odd, odd[:, :, :2], None)


def test_without_a_compiler_attention_takes_the_xla_path_and_says_so_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("ARCHZOO_KERNEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cpu_fused, "_state", {})
    f = packed_facts(64, 0)
    mask = masks.causal(f) & masks.same_segment(f)
    q, k, v = inputs(2, 64, jnp.float32, 0, Q=64)
    with caplog.at_level(logging.WARNING, logger="archzoo"):
        out = cpu_attention(q, k, v, mask, None, 0.1)
        cpu_attention(q, k, v, mask, None, 0.1)
    notices = [r.getMessage() for r in caplog.records if r.name == "archzoo"]
    assert len(notices) == 1 and notices[0].startswith("archzoo: CPU attention takes the XLA path: ") and "no-such-compiler" in notices[0]
    np.testing.assert_array_equal(np.asarray(out), np.asarray(xla_attention(q, k, v, mask, None, 0.1)))
