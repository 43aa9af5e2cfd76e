"""The cuDNN translation of masks, against the dense mask rebuilt from its arguments by a loop;
the same arguments through jax's XLA implementation against the xla backend; the backend's
platform check and its branch on the data. cuDNN itself needs a GPU."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from archzoo import masks
from archzoo.layers import cudnn, kernels
from tests.layers import mask_cases
from tests.layers.mask_cases import ONE_EXAMPLE, PACKED, causal_or_full, decode_step_mask, facts

H, G, Dh = 4, 2, 8
PADDED = [[1, 1, 1, 1, 1, 0, 0, 0], [3, 3, 3, 3, 3, 3, 3, 3], [1, 1, 0, 0, 0, 0, 0, 0]]
LEFT_PADDED = [[0, 0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1, 1]]
self_mask = partial(mask_cases.self_mask, seg=PADDED)  # rows of one example plus padding
# encoder rows for cross-attention from PADDED: one example each, the last one empty
ENCODER = [[1, 1, 1, 0, 0, 0, 0, 0], [3, 3, 3, 3, 3, 3, 3, 0], [0, 0, 0, 0, 0, 0, 0, 0]]




def gapped_positions():
    """One example per row, ordered, but positions that skip (0, 2, 4, ...)."""
    seg = np.array(PADDED)
    return facts(seg, positions=np.where(seg != 0, 2 * np.arange(8), 0))


def from_arguments(cm: cudnn.CudnnMask, B: int, Q: int, K: int) -> np.ndarray:
    """Bool [B, Q, K] that cuDNN's arguments allow, cell by cell."""
    q_len = None if cm.query_seq_lengths is None else np.broadcast_to(np.asarray(cm.query_seq_lengths), (B,))
    kv_len = None if cm.key_value_seq_lengths is None else np.broadcast_to(np.asarray(cm.key_value_seq_lengths), (B,))
    out = np.zeros((B, Q, K), bool)
    for b in range(B):
        for i in range(Q):
            for j in range(K):
                ok = True
                if cm.is_causal:
                    ok = ok and j <= i
                if cm.local_window_size is not None:
                    left, right = cm.local_window_size
                    ok = ok and i - left <= j <= i + right
                if q_len is not None:
                    ok = ok and i < q_len[b] and j < kv_len[b]
                out[b, i, j] = ok
    return out


xla = jax.jit(kernels.xla_attention, static_argnums=5)


def real_lengths(seg):
    return [sum(1 for s in row if s != 0) for row in seg]


CAUSAL_SEG = (("causal",), ("same_segment",))
# name: (mask, is_causal, local_window_size, rows whose real tokens are the query and key
# lengths, or None for no lengths)
SUPPORTED = {
    "causal & same_segment, one example + padding": (lambda: self_mask(*CAUSAL_SEG), True, None, PADDED, PADDED),
    "causal & sliding_window(3) & same_segment": (
        lambda: self_mask(*CAUSAL_SEG, ("window", 3)), True, (2, 0), PADDED, PADDED
    ),
    "sliding_window(2) & causal & same_segment & not_padding": (
        lambda: self_mask(("window", 2), *CAUSAL_SEG, ("not_padding",)), True, (1, 0), PADDED, PADDED
    ),
    "encoder full & same_segment": (lambda: self_mask(("full",), ("same_segment",)), False, None, PADDED, PADDED),
    "encoder full & not_padding over packed rows": (
        lambda: self_mask(("full",), ("not_padding",), seg=PACKED), False, None, PACKED, PACKED
    ),
    "cross, one example per row": (lambda: masks.cross(facts(PADDED), facts(ENCODER)), False, None, PADDED, ENCODER),
    "full": (lambda: self_mask(("full",), seg=PACKED), False, None, None, None),
    "causal, one example without padding": (lambda: self_mask(("causal",), seg=ONE_EXAMPLE), True, None, None, None),
}


def prefix_mask():
    f = facts(PADDED, is_input=np.array(PADDED) == 1)
    return masks.prefix(f) & masks.same_segment(f)


def gapped_window_mask():
    f = gapped_positions()
    return masks.sliding_window(3, f) & masks.same_segment(f)




UNSUPPORTED = {
    "causal & same_segment over packed rows": lambda: self_mask(*CAUSAL_SEG, seg=PACKED),
    "causal & same_segment over left-padded rows": lambda: self_mask(*CAUSAL_SEG, seg=LEFT_PADDED),
    "full & not_padding over left-padded rows": lambda: self_mask(("full",), ("not_padding",), seg=LEFT_PADDED),
    "causal alone over padded rows": lambda: self_mask(("causal",)),
    "prefix & same_segment": prefix_mask,
    "cross over packed rows": lambda: masks.cross(facts(PACKED), facts([[1, 1, 2, 2, 0, 0, 0, 0]] * 3)),
    "causal over unordered facts": lambda: self_mask(*CAUSAL_SEG, ordered=False),
    "sliding window over skipping positions": gapped_window_mask,
    "decode step against a cache": lambda: decode_step_mask(PADDED),
    "causal | full": lambda: causal_or_full(PADDED),
    "terms over two facts": lambda: masks.causal(facts(PADDED)) & masks.same_segment(facts(PADDED)),
}


@pytest.mark.parametrize("name", list(SUPPORTED))
def test_translation_names_the_arguments_and_equals_the_mask_at_real_queries(name):
    build, is_causal, window, q_rows, k_rows = SUPPORTED[name]
    mask = build()
    cm = cudnn.translate(mask)
    assert cm is not None
    assert (cm.is_causal, cm.local_window_size, cm.holds) == (is_causal, window, True)
    for got, rows in ((cm.query_seq_lengths, q_rows), (cm.key_value_seq_lengths, k_rows)):
        assert (got is None) == (rows is None)
        if rows is not None:
            np.testing.assert_array_equal(np.asarray(got), real_lengths(rows))
    B, Q, K = mask.shape
    real = np.asarray(mask.q.segment_ids) != 0
    np.testing.assert_array_equal(from_arguments(cm, B, Q, K)[real], np.asarray(mask.allowed())[real])


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_masks_cudnn_cannot_say_translate_to_none(name):
    assert cudnn.translate(UNSUPPORTED[name]()) is None


def test_under_jit_the_layout_is_checked_on_device():
    """Packed and padded rows give the same traced arguments; ``holds`` tells them apart."""
    holds = jax.jit(lambda m: cudnn.translate(m).holds)
    assert bool(holds(self_mask(*CAUSAL_SEG)))
    assert not bool(holds(self_mask(*CAUSAL_SEG, seg=PACKED)))
    assert not bool(holds(self_mask(*CAUSAL_SEG, seg=LEFT_PADDED)))
    assert not bool(holds(gapped_window_mask()))


def inputs(K=8, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(3, 8, H, Dh)), dtype)
    k = jnp.asarray(rng.normal(size=(3, K, G, Dh)), dtype)
    v = jnp.asarray(rng.normal(size=(3, K, G, Dh)), dtype)
    return q, k, v


def reference(q, k, v, mask, bias, scale):
    """cuDNN's arguments through jax's XLA implementation of ``dot_product_attention``."""
    return cudnn.attend(q, k, v, cudnn.translate(mask), bias, scale, implementation="xla")


@pytest.mark.parametrize(
    "name",
    [
        "sliding_window(2) & causal & same_segment & not_padding",
        "encoder full & not_padding over packed rows",
        "cross, one example per row",
    ],
)
def test_the_arguments_through_jax_reference_equal_the_xla_backend(name):
    """The same outputs at real queries, zeros at padding queries."""
    mask = SUPPORTED[name][0]()
    q, k, v = inputs(mask.shape[2])
    both = jax.jit(lambda mask: [backend(q, k, v, mask, None, Dh**-0.5) for backend in (reference, kernels.xla_attention)])
    got, want = (np.asarray(a) for a in both(mask))
    real = np.asarray(mask.q.segment_ids) != 0
    np.testing.assert_allclose(got[real], want[real], rtol=1e-5, atol=1e-6)
    assert not got[~real].any()


def test_gradients_through_the_arguments_equal_the_xla_backend():
    """A sliding window over padded rows; the cotangent is zero at padding queries."""
    mask = SUPPORTED["sliding_window(2) & causal & same_segment & not_padding"][0]()
    q, k, v = inputs()
    g = jnp.asarray(np.random.default_rng(1).normal(size=q.shape) * (np.array(PADDED) != 0)[:, :, None, None], q.dtype)

    def grads(backend, mask):
        return jax.vjp(lambda q, k, v: backend(q, k, v, mask, None, 0.5), q, k, v)[1](g)

    got, want = jax.jit(lambda mask: (grads(reference, mask), grads(kernels.xla_attention, mask)))(mask)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_the_backend_refuses_to_run_off_gpu():
    q, k, v = inputs()
    with pytest.raises(RuntimeError, match=r"attention\.backend=cudnn.*GPU.*cpu"):
        kernels.cudnn_attention(q, k, v, self_mask(*CAUSAL_SEG), None, 1.0)


KERNEL, XLA = 7.0, 3.0


@pytest.fixture
def on_gpu(monkeypatch):
    """The platform reads as GPU; the kernel and the xla path are markers (sevens and threes)
    so a test sees which path ran."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(cudnn, "attend", lambda q, *args, **kw: jnp.full_like(q, KERNEL))
    monkeypatch.setattr(kernels, "xla_attention", lambda q, *args: jnp.full_like(q, XLA))


def ran(out) -> float:
    values = np.unique(np.asarray(out, np.float32))
    assert len(values) == 1, values
    return float(values[0])


def test_the_backend_branches_on_the_layout_under_jit(on_gpu):
    q, k, v = inputs(dtype=jnp.bfloat16)
    run = jax.jit(kernels.cudnn_attention, static_argnums=5)
    assert ran(run(q, k, v, self_mask(*CAUSAL_SEG), None, 1.0)) == KERNEL
    assert ran(run(q, k, v, self_mask(*CAUSAL_SEG, seg=PACKED), None, 1.0)) == XLA
    # masks it cannot say, and float32 inputs, take the xla path without a branch
    assert ran(run(q, k, v, prefix_mask(), None, 1.0)) == XLA
    assert ran(run(*inputs(), self_mask(*CAUSAL_SEG), None, 1.0)) == XLA


def test_auto_takes_cudnn_only_where_it_needs_no_branch(on_gpu):
    """A mask closed over by the jitted function has concrete facts, checked when tracing; one
    passed in as an argument has traced facts, and auto then keeps to xla rather than branch."""
    q, k, v = inputs(dtype=jnp.bfloat16)
    padded = self_mask(*CAUSAL_SEG)

    def closed(q, k, v, mask, bias=None):
        return jax.jit(lambda q, k, v: kernels.auto_attention(q, k, v, mask, bias, 1.0))(q, k, v)

    traced = jax.jit(kernels.auto_attention, static_argnums=5)
    assert ran(closed(q, k, v, padded)) == KERNEL
    assert ran(traced(q, k, v, padded, None, 1.0)) == XLA
    # a mask with no layout to check translates even when traced
    assert ran(traced(q, k, v, self_mask(("full",), seg=PACKED), None, 1.0)) == KERNEL
    # float32 inputs, a position bias, a head width cuDNN does not take
    assert ran(closed(*inputs(), padded)) == XLA
    assert ran(closed(q, k, v, padded, jnp.ones((1, H, 8, 8), jnp.bfloat16))) == XLA
    assert ran(closed(q[..., :4], k[..., :4], v[..., :4], padded)) == XLA


def test_the_translation_reads_only_what_survives_jit():
    """A mask passed into jit keeps the static facts (self-attention, ``ordered``) it reads."""
    seen = []

    @jax.jit
    def lengths(mask):
        cm = cudnn.translate(mask)
        seen.append(None if cm is None else cm.is_causal)
        return mask.q.positions if cm is None else cm.query_seq_lengths

    np.testing.assert_array_equal(np.asarray(lengths(self_mask(*CAUSAL_SEG))), real_lengths(PADDED))
    lengths(self_mask(*CAUSAL_SEG, ordered=False))
    assert seen == [True, None]


# -- the kernel itself, at a size it runs (on a GPU; its harness on CPU through jax's reference) --


def scaled(rows, n: int = 32) -> np.ndarray:
    """Each token of ``rows`` repeated ``n`` times: the same layouts at ``n`` times the length."""
    return np.repeat(np.asarray(rows), n, axis=1)


# every supported layout at 256 tokens, head width 64
AT_SIZE = {
    "causal & same_segment, one example + padding": lambda: self_mask(*CAUSAL_SEG, seg=scaled(PADDED)),
    "causal & sliding_window(64) & same_segment": lambda: self_mask(*CAUSAL_SEG, ("window", 64), seg=scaled(PADDED)),
    "encoder full & same_segment": lambda: self_mask(("full",), ("same_segment",), seg=scaled(PADDED)),
    "encoder full & not_padding over packed rows": lambda: self_mask(("full",), ("not_padding",), seg=scaled(PACKED)),
    "cross, one example per row (one row without encoder tokens)": lambda: masks.cross(facts(scaled(PADDED)), facts(scaled(ENCODER))),
    "full": lambda: self_mask(("full",), seg=scaled(PACKED)),
    "causal, one example without padding": lambda: self_mask(("causal",), seg=scaled(ONE_EXAMPLE)),
}


def kernel_against_xla(mask, implementation: str, dtype=jnp.bfloat16) -> dict:
    """The translated kernel and the xla backend on the same half-precision inputs, each
    measured against the xla backend in float32 on those inputs: the largest error of each at
    real queries, for the output and the three gradients. The cotangent is zero at padding
    queries."""
    B, Q, K = mask.shape
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(B, n, h, 64)), dtype) for n, h in ((Q, 4), (K, 2), (K, 2)))
    real = np.asarray(jnp.broadcast_to(mask.q.segment_ids != 0, (B, Q)))
    g = jnp.asarray(rng.normal(size=q.shape) * real[:, :, None, None], dtype)
    cm = cudnn.translate(mask)
    assert cm is not None and cm.holds is True

    def run(attend, *args):
        out, pull = jax.vjp(lambda q, k, v: attend(q, k, v), *args)
        return (out, *pull(g.astype(out.dtype)))

    kernel = jax.jit(lambda *a: run(lambda q, k, v: cudnn.attend(q, k, v, cm, None, 0.125, implementation=implementation), *a))
    xla = jax.jit(lambda *a: run(lambda q, k, v: kernels.xla_attention(q, k, v, mask, None, 0.125), *a))
    exact = xla(*(a.astype(jnp.float32) for a in (q, k, v)))
    errors = {}
    for name, got in (("kernel", kernel(q, k, v)), ("xla", xla(q, k, v))):
        diffs = [np.abs(np.asarray(a, np.float32) - np.asarray(b)) for a, b in zip(got, exact)]
        errors[name] = [float(diffs[0][real].max()), *(float(d.max()) for d in diffs[1:])]
        errors[name + "_padding_out"] = float(np.abs(np.asarray(got[0], np.float32)[~real]).max(initial=0.0))
    errors["lengths"] = cm.query_seq_lengths is not None
    return errors


def assert_as_close_as_xla(errors: dict) -> None:
    """The kernel's error from the float32 result is at most twice the xla backend's own in
    the same precision, plus 1e-3 (half precision rounds differently, not worse); where the
    translation gives lengths, padding queries give zeros."""
    for part, kernel, xla in zip(("out", "dq", "dk", "dv"), errors["kernel"], errors["xla"]):
        assert kernel <= 2 * xla + 1e-3, (part, errors)
    if errors["lengths"]:
        assert errors["kernel_padding_out"] == 0.0, errors


@pytest.mark.parametrize("name", list(AT_SIZE))
def test_the_harness_of_the_kernel_check_through_jax_reference(name):
    """What the GPU test below runs, through jax's XLA implementation of the same arguments."""
    assert_as_close_as_xla(kernel_against_xla(AT_SIZE[name](), "xla"))


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN needs an NVIDIA GPU")
@pytest.mark.parametrize("name", list(AT_SIZE))
def test_on_a_gpu_cudnn_equals_the_xla_backend(name):
    assert_as_close_as_xla(kernel_against_xla(AT_SIZE[name](), "cudnn"))
