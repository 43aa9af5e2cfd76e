"""The splash-attention translation of masks, against the dense mask rebuilt from the kernel's
own static mask and segment ids; the kernel in Pallas interpret mode (on CPU) against the xla
backend; the backend's platform check and its branch on the data."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas.ops.tpu import splash_attention as sa

from archzoo import masks
from archzoo.layers import kernels, splash
from tests.layers import mask_cases
from tests.layers.mask_cases import ONE_EXAMPLE, PACKED, causal_or_full, decode_step_mask, facts

ROOT = Path(__file__).resolve().parents[2]

self_mask = partial(mask_cases.self_mask, seg=PACKED)





def from_arguments(sm: splash.SplashMask, B: int) -> np.ndarray:
    """Bool [B, Q, K]: the kernel's static mask and-ed with equal segment ids, cell by cell."""
    static = np.asarray(sm.static[:, :])
    Q, K = static.shape
    if sm.q_segment_ids is None:
        q_seg, kv_seg = np.zeros((B, Q)), np.zeros((B, K))
    else:
        q_seg, kv_seg = np.broadcast_to(sm.q_segment_ids, (B, Q)), np.broadcast_to(sm.kv_segment_ids, (B, K))
    out = np.zeros((B, Q, K), bool)
    for b in range(B):
        for i in range(Q):
            for j in range(K):
                out[b, i, j] = bool(static[i, j]) and q_seg[b, i] == kv_seg[b, j]
    return out


# name: (mask, static mask class, LocalMask window, segment ids given)
SUPPORTED = {
    "causal & same_segment over packed rows": (lambda: self_mask(("causal",), ("same_segment",)), sa.CausalMask, None, True),
    "causal & sliding_window(3) & same_segment": (
        lambda: self_mask(("causal",), ("window", 3), ("same_segment",)), sa.LocalMask, (2, 0), True
    ),
    "sliding_window(2) & same_segment & not_padding": (
        lambda: self_mask(("window", 2), ("same_segment",), ("not_padding",)), sa.LocalMask, (1, 0), True
    ),
    "encoder full & same_segment": (lambda: self_mask(("full",), ("same_segment",)), sa.FullMask, None, True),
    "encoder full & same_segment & not_padding": (
        lambda: self_mask(("full",), ("same_segment",), ("not_padding",)), sa.FullMask, None, True
    ),
    "causal, one example per row": (lambda: self_mask(("causal",), seg=ONE_EXAMPLE), sa.CausalMask, None, False),
    "full": (lambda: self_mask(("full",)), sa.FullMask, None, False),
}


def prefix_mask():
    f = facts(PACKED, is_input=np.array([[1, 1, 0, 1, 0, 0, 0, 0]] * 3, bool))
    return masks.prefix(f) & masks.same_segment(f)


def continued_window_mask():
    """The second example starts at position 5 (a continuation): ordered, but a window over
    indices is no longer the window over positions."""
    f = facts(PACKED, positions=np.array([[0, 1, 2, 5, 6, 7, 0, 0], [0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 0, 1, 2, 3, 4, 0]]))
    return masks.sliding_window(3, f) & masks.same_segment(f)




UNSUPPORTED = {
    "prefix & same_segment": prefix_mask,
    "cross": lambda: masks.cross(facts(PACKED), facts([[1, 1, 2, 2, 0, 0, 0, 0]] * 3)),
    "full & not_padding": lambda: self_mask(("full",), ("not_padding",)),
    "causal over unordered facts": lambda: self_mask(("causal",), ("same_segment",), ordered=False),
    "causal alone over packed rows": lambda: self_mask(("causal",)),
    "sliding window over a continued example": continued_window_mask,
    "decode step against a cache": lambda: decode_step_mask(PACKED),
    "causal | full": lambda: causal_or_full(PACKED),
}


@pytest.mark.parametrize("name", list(SUPPORTED))
def test_translation_names_the_arguments_and_equals_the_mask_at_real_queries(name):
    build, kind, window, segments = SUPPORTED[name]
    mask = build()
    sm = splash.translate(mask)
    assert sm is not None and sm.holds is True
    assert type(sm.static) is kind and sm.static.shape == mask.shape[1:]
    if window is not None:
        assert (sm.static.window_size, sm.static.offset) == (window, 0)
    assert (sm.q_segment_ids is not None) == segments
    if segments:
        np.testing.assert_array_equal(np.asarray(sm.q_segment_ids), PACKED)
    real = np.asarray(mask.q.segment_ids) != 0
    np.testing.assert_array_equal(from_arguments(sm, mask.shape[0])[real], np.asarray(mask.allowed())[real])


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_masks_splash_cannot_say_translate_to_none(name):
    assert splash.translate(UNSUPPORTED[name]()) is None


def test_packed_causal_rows_need_no_check_under_jit_and_windows_do():
    """The training mask translates from its structure alone; a window's layout is data."""
    seen = []

    @jax.jit
    def holds(mask):
        sm = splash.translate(mask)
        seen.append(sm.holds is True)
        return jnp.asarray(sm.holds)

    assert bool(holds(self_mask(("causal",), ("same_segment",))))
    assert bool(holds(self_mask(("causal",), ("window", 3), ("same_segment",))))
    assert not bool(holds(continued_window_mask()))
    assert seen == [True, False, False]


# -- the kernel, in interpret mode -----------------------------------------------------------------

H, G, Dh, L = 4, 2, 8, splash.BLOCK
SEGMENTS = np.array([[1] * 50 + [2] * 40 + [3] * 30 + [0] * 8, [1] * L])


def kernel_inputs(seed=0):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(2, L, H, Dh)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(2, L, G, Dh)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(2, L, G, Dh)), jnp.float32)
    g = jnp.asarray(rng.normal(size=q.shape) * (SEGMENTS != 0)[:, :, None, None], jnp.float32)
    return q, k, v, g


def test_the_kernel_equals_the_xla_backend_at_real_queries():
    """Packed causal rows, the training mask: outputs at real queries and gradients, grouped
    query heads, in interpret mode; the cotangent is zero at padding queries. (The other static
    masks are checked by the translation test, from the mask objects themselves.)"""
    f = masks.facts(SEGMENTS)
    q, k, v, g = kernel_inputs()
    scale = Dh**-0.5

    def kernel(q, k, v, mask, bias, scale):
        return splash.attend(q, k, v, splash.translate(mask), scale, interpret=True)

    def with_grads(backend, mask):
        out, pull = jax.vjp(lambda q, k, v: backend(q, k, v, mask, None, scale), q, k, v)
        return out, pull(g)

    @jax.jit
    def run(mask):
        return with_grads(kernel, mask), with_grads(kernels.xla_attention, mask)

    (out, grads), (want, want_grads) = run(masks.causal(f) & masks.same_segment(f))
    real = SEGMENTS != 0
    np.testing.assert_allclose(np.asarray(out)[real], np.asarray(want)[real], rtol=2e-5, atol=2e-5)
    for a, b in zip(grads, want_grads):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)


def test_the_backend_refuses_to_run_off_tpu():
    q, k, v, _ = kernel_inputs()
    f = masks.facts(SEGMENTS)
    with pytest.raises(RuntimeError, match=r"attention\.backend=splash.*TPU.*cpu"):
        kernels.splash_attention(q, k, v, masks.causal(f) & masks.same_segment(f), None, 1.0)


KERNEL, XLA = 7.0, 3.0


def ran(out) -> float:
    values = np.unique(np.asarray(out, np.float32))
    assert len(values) == 1, values
    return float(values[0])


def test_the_backend_branches_on_the_layout_and_auto_does_not(monkeypatch):
    """The kernel and the xla path are markers (sevens and threes) so the test sees which ran;
    tiles of 8 tokens make the 8-token rows whole tiles."""
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    monkeypatch.setattr(splash, "attend", lambda q, *args, **kw: jnp.full_like(q, KERNEL))
    monkeypatch.setattr(kernels, "xla_attention", lambda q, *args: jnp.full_like(q, XLA))
    monkeypatch.setattr(splash, "BLOCK", 8)
    q, k, v = (jnp.zeros((3, 8, n, Dh)) for n in (H, G, G))
    forced = jax.jit(kernels.splash_attention, static_argnums=5)
    auto = jax.jit(kernels.auto_attention, static_argnums=5)
    window = self_mask(("causal",), ("window", 3), ("same_segment",))
    causal = self_mask(("causal",), ("same_segment",))
    assert ran(forced(q, k, v, window, None, 1.0)) == KERNEL
    assert ran(forced(q, k, v, continued_window_mask(), None, 1.0)) == XLA
    assert ran(forced(q, k, v, prefix_mask(), None, 1.0)) == XLA
    # auto does not branch on the data: the window needs a check, the packed causal rows do not
    assert ran(auto(q, k, v, window, None, 1.0)) == XLA
    assert ran(auto(q, k, v, causal, None, 1.0)) == KERNEL
    # a logit bias, or lengths that are not whole tiles, stay on xla
    assert ran(auto(q, k, v, causal, jnp.zeros((1, H, 8, 8)), 1.0)) == XLA
    monkeypatch.setattr(splash, "BLOCK", 16)
    assert ran(forced(q, k, v, causal, None, 1.0)) == XLA
