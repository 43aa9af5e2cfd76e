"""Attention backends: one function each, same signature, selected by ``attention.backend``.

Shapes: ``B`` batch, ``Q``/``K`` query/key length, ``H`` query heads, ``G`` kv heads, ``R = H / G``
query heads per kv head, ``Dh`` head width (``d`` in ``jnp.einsum`` strings, which take one letter
per axis).

Each takes queries ``[B, Q, H, Dh]``, keys and values ``[B, K, G, Dh]`` (G divides H: grouped-
query and multi-query attention share keys across ``H / G`` query heads), the mask value, an
optional additive bias ``[B, H, Q, K]`` and the logit scale, and returns ``[B, Q, H, Dh]``.

The ``xla`` and ``jax`` backends split self-attention queries into blocks of
:data:`CAUSAL_BLOCK` and let each block attend only to the keys up to its end when the mask
allows no later key, skipping the key blocks that the mask empties anyway: at 256 tokens and
blocks of 128, a quarter of the attention work. When the mask is statically lower-triangular
(:attr:`archzoo.masks.Mask.lower_triangular`: causal self-attention over packed rows in order)
that is known when tracing; for any other mask (a prefix, a plug-in's) each block checks its
batch on device (``jax.lax.cond``): a prefix that ends inside the block lets it skip as the
causal mask does. Outputs at non-padding queries are the same as the dense path.

The ``cpu`` backend is a fused blocked attention in C++ (:mod:`archzoo.layers.cpu_fused`): it
reads the dense mask tile by tile and skips the empty tiles itself, for every mask.

The ``cudnn`` and ``splash`` backends hand the mask's structure to a fused kernel
(:mod:`archzoo.layers.cudnn`, :mod:`archzoo.layers.splash`) and give the masks it cannot say
to ``xla``; where a translation assumes a layout of the facts that only the data can confirm
(one example per row for cuDNN's lengths), they branch on device between the kernel and
``xla``. ``auto`` picks when tracing, without such a branch: ``cudnn`` on GPU and ``splash`` on
TPU where the mask translates, holds when traced and the inputs fit the kernel, ``cpu`` on CPU
where the kernel is built and the inputs fit it, ``xla`` otherwise. Under a mesh of several
devices the ``cpu`` and ``splash`` kernels run on each device's own rows and heads
(:func:`archzoo.sharding.per_device_attention`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from einops import rearrange

from archzoo.layers import cpu_fused, cudnn, splash
from archzoo.masks import Mask

__all__ = [
    "xla_attention",
    "jax_attention",
    "cpu_attention",
    "cudnn_attention",
    "splash_attention",
    "auto_attention",
    "BACKENDS",
    "CAUSAL_BLOCK",
]

# Query block of the causal path; rows no longer than one block take the dense path.
CAUSAL_BLOCK = 128


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _xla_core(q_BQHD, k_BKGD, v_BKGD, allowed_BQK, bias_BHQK, scale: float):
    """Einsum attention under a dense boolean mask, float32 softmax, with a hand-written
    backward pass.

    Masked logits get the dtype's most negative finite value, not -inf, so no row gives NaN.
    The backward pass reuses the saved probabilities and writes each gradient as one batched
    matmul in the layout it is needed in; the same step through ``jax.grad`` of the forward
    spent its time transposing ``[B, H, Q, K]`` arrays between the matmuls.
    """
    return _attention_fwd(q_BQHD, k_BKGD, v_BKGD, allowed_BQK, bias_BHQK, scale)[0]


def _heads(q_BQHD, k_BKGD, v_BKGD):
    G = k_BKGD.shape[2]
    q = rearrange(q_BQHD, "B Q (G R) Dh -> B G R Q Dh", G=G)
    return q, rearrange(k_BKGD, "B K G Dh -> B G K Dh"), rearrange(v_BKGD, "B K G Dh -> B G K Dh")


def _attention_fwd(q_BQHD, k_BKGD, v_BKGD, allowed_BQK, bias_BHQK, scale):
    q, k, v = _heads(q_BQHD, k_BKGD, v_BKGD)
    G = k.shape[1]
    logits = jnp.einsum("BGRQd,BGKd->BGRQK", q, k, preferred_element_type=jnp.float32) * scale
    if bias_BHQK is not None:
        logits = logits + rearrange(bias_BHQK.astype(jnp.float32), "B (G R) Q K -> B G R Q K", G=G)
    logits = jnp.where(allowed_BQK[:, None, None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("BGRQK,BGKd->BGRQd", probs.astype(v.dtype), v)
    out_BQHD = rearrange(out, "B G R Q Dh -> B Q (G R) Dh")
    # masked keys have probability 0, so the backward pass needs no mask
    return out_BQHD, (q, k, v, out, probs, bias_BHQK)


def _attention_bwd(scale, residuals, g_BQHD):
    q, k, v, out, probs, bias_BHQK = residuals
    G = k.shape[1]
    g = rearrange(g_BQHD, "B Q (G R) Dh -> B G R Q Dh", G=G)
    d_probs = jnp.einsum("BGRQd,BGKd->BGRQK", g, v, preferred_element_type=jnp.float32)
    # softmax backward: p * (dp - sum_k p dp), with sum_k p dp = <g, out> per query
    row = jnp.sum(g.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    d_logits = probs * (d_probs - row)
    d_scores = (d_logits * scale).astype(q.dtype)
    dq = jnp.einsum("BGRQK,BGKd->BGRQd", d_scores, k)
    dk = jnp.einsum("BGRQK,BGRQd->BGKd", d_scores, q)
    dv = jnp.einsum("BGRQK,BGRQd->BGKd", probs.astype(g.dtype), g)
    d_bias = None
    if bias_BHQK is not None:
        d_bias = rearrange(d_logits, "B G R Q K -> B (G R) Q K")
        # a bias broadcast over batch (or any axis) gets its gradient summed over that axis
        summed = tuple(i for i, n in enumerate(bias_BHQK.shape) if n == 1 and d_bias.shape[i] != 1)
        d_bias = jnp.sum(d_bias, axis=summed, keepdims=True).astype(bias_BHQK.dtype)
    return (
        rearrange(dq, "B G R Q Dh -> B Q (G R) Dh").astype(q.dtype),
        rearrange(dk, "B G K Dh -> B K G Dh").astype(k.dtype),
        rearrange(dv, "B G K Dh -> B K G Dh").astype(v.dtype),
        None,
        d_bias,
    )


_xla_core.defvjp(_attention_fwd, _attention_bwd)


def _dot_product_core(q_BQHD, k_BKGD, v_BKGD, allowed_BQK, bias_BHQK, scale: float):
    bias = None if bias_BHQK is None else bias_BHQK.astype(q_BQHD.dtype)
    return jax.nn.dot_product_attention(q_BQHD, k_BKGD, v_BKGD, bias=bias, mask=allowed_BQK[:, None], scale=scale)


def _attend(core, q_BQHD, k_BKGD, v_BKGD, mask: Mask, bias_BHQK, scale: float):
    """``core`` over the mask's dense form: the causal block path when the mask is statically
    lower-triangular, and zeros for queries with no allowed key."""
    allowed = mask.allowed()
    L, K = q_BQHD.shape[1], k_BKGD.shape[1]
    if L <= CAUSAL_BLOCK or L != K:
        return _zero_empty_rows(core(q_BQHD, k_BKGD, v_BKGD, allowed, bias_BHQK, scale), allowed)

    def block(start, stop, keys):
        """The queries ``start:stop`` against the first ``keys`` keys."""
        bias = None if bias_BHQK is None else bias_BHQK[:, :, start:stop, :keys]
        return core(q_BQHD[:, start:stop], k_BKGD[:, :keys], v_BKGD[:, :keys], allowed[:, start:stop, :keys], bias, scale)

    real_BQ = jnp.broadcast_to(mask.q.segment_ids != 0, allowed.shape[:2])
    blocks = []
    for start in range(0, L, CAUSAL_BLOCK):
        stop = min(start + CAUSAL_BLOCK, L)
        if mask.lower_triangular or stop == K:  # no key after the block's last query: known statically
            blocks.append(block(start, stop, stop))
        else:
            # any other mask (prefix, sliding window, a plug-in's): skip the keys after the block
            # when, for this batch, the mask allows none of them to a real query (a prefix that
            # ends inside the block; padding queries' outputs are unspecified and get no gradient)
            later = jnp.any(allowed[:, start:stop, stop:] & real_BQ[:, start:stop, None])
            blocks.append(jax.lax.cond(later, partial(block, start, stop, K), partial(block, start, stop, stop)))
    return _zero_empty_rows(jnp.concatenate(blocks, axis=1), allowed)


def _zero_empty_rows(out_BQHD, allowed_BQK):
    """Zeros for queries with no allowed key, instead of an average over keys they may not see
    (which would leak across packed examples; e.g. a decoder example whose encoder input is
    empty)."""
    has_key_BQ = allowed_BQK.any(axis=-1)
    return out_BQHD * has_key_BQ[:, :, None, None].astype(out_BQHD.dtype)


def xla_attention(q_BQHD, k_BKGD, v_BKGD, mask: Mask, bias_BHQK, scale: float):
    """Plain XLA: einsum, dense boolean mask, float32 softmax, hand-written backward pass."""
    return _attend(_xla_core, q_BQHD, k_BKGD, v_BKGD, mask, bias_BHQK, scale)


def jax_attention(q_BQHD, k_BKGD, v_BKGD, mask: Mask, bias_BHQK, scale: float):
    """``jax.nn.dot_product_attention`` (default implementation)."""
    return _attend(_dot_product_core, q_BQHD, k_BKGD, v_BKGD, mask, bias_BHQK, scale)


def _guarded(holds, kernel, fallback):
    """``kernel()`` where the translated arguments hold for this batch, else ``fallback()``:
    decided now when ``holds`` is known, on device when it depends on traced facts."""
    if holds is True:
        return kernel()
    return jax.lax.cond(holds, kernel, fallback)


_PLATFORMS = {"cpu": ("cpu", "a CPU"), "cudnn": ("gpu", "an NVIDIA GPU"), "splash": ("tpu", "a TPU")}


def _missing_platform(backend: str) -> str | None:
    """Why this platform cannot run the forced kernel ``backend``, or None."""
    platform, kind = _PLATFORMS.get(backend, (None, None))
    found = jax.default_backend()
    if platform is None or found == platform:
        return None
    return f"{backend} needs {kind}, but JAX runs on {found}; set attention.backend to auto (picks the kernel the platform has) or xla"


def _require(backend: str) -> None:
    problem = _missing_platform(backend)
    if problem is not None:
        raise RuntimeError(f"attention.backend={problem}")


def check_backend(backend: str, key: str = "model.attention.backend") -> None:
    """Refuses, before any training, a forced kernel this platform does not have.

    Raises:
      ConfigError: naming ``key``, the platform and what would do.
    """
    from archzoo.config import ConfigError

    problem = _missing_platform(backend)
    if problem is not None:
        raise ConfigError(f"{key}: {problem}")


def cpu_attention(q_BQHD, k_BKGD, v_BKGD, mask: Mask, bias_BHQK, scale: float):
    """The fused CPU kernel (:mod:`archzoo.layers.cpu_fused`) on the mask's dense form; inputs
    it does not take (head widths other than 16, 32, 64, 128) and a machine without a C++
    compiler take the ``xla`` path.

    Raises:
      RuntimeError: off CPU, naming ``attention.backend``.
    """
    _require("cpu")
    if cpu_fused.supports(q_BQHD, k_BKGD, bias_BHQK) and cpu_fused.available():
        return cpu_fused.attend(q_BQHD, k_BKGD, v_BKGD, mask.allowed(), bias_BHQK, scale)
    return xla_attention(q_BQHD, k_BKGD, v_BKGD, mask, bias_BHQK, scale)


def cudnn_attention(q_BQHD, k_BKGD, v_BKGD, mask: Mask, bias_BHQK, scale: float):
    """cuDNN fused attention (NVIDIA GPUs) told the mask as :func:`archzoo.layers.cudnn.translate`
    arguments; masks it cannot say (packed rows, ``prefix``, ...) and inputs it does not take
    (float32, odd head widths) take the ``xla`` path.

    Raises:
      RuntimeError: off GPU, naming ``attention.backend``.
    """
    _require("cudnn")
    translated = cudnn.translate(mask)
    fallback = lambda: xla_attention(q_BQHD, k_BKGD, v_BKGD, mask, bias_BHQK, scale)
    if translated is None or not cudnn.supports(q_BQHD):
        return fallback()
    kernel = lambda: cudnn.attend(q_BQHD, k_BKGD, v_BKGD, translated, bias_BHQK, scale)
    return _guarded(translated.holds, kernel, fallback)


def splash_attention(q_BQHD, k_BKGD, v_BKGD, mask: Mask, bias_BHQK, scale: float):
    """TPU splash attention told the mask as :func:`archzoo.layers.splash.translate` arguments;
    masks it cannot say (``prefix``, cross-attention, ...) and logit biases take the ``xla``
    path.

    Raises:
      RuntimeError: off TPU, naming ``attention.backend``.
    """
    _require("splash")
    translated = splash.translate(mask)
    fallback = lambda: xla_attention(q_BQHD, k_BKGD, v_BKGD, mask, bias_BHQK, scale)
    if translated is None or not splash.supports(q_BQHD, k_BKGD, bias_BHQK):
        return fallback()
    kernel = lambda: splash.attend(q_BQHD, k_BKGD, v_BKGD, translated, scale)
    return _guarded(translated.holds, kernel, fallback)


def auto_attention(q_BQHD, k_BKGD, v_BKGD, mask: Mask, bias_BHQK, scale: float):
    """cuDNN on GPU, splash on TPU, where the mask translates and is known to hold when traced
    (auto never branches on the data: a translation that assumes a layout of traced facts
    goes to ``xla``) and the inputs fit the kernel; on CPU the fused ``cpu`` kernel where it is
    built and the inputs fit it; ``xla`` otherwise. Under a mesh of several devices the cpu and
    splash kernels run on each device's own rows and heads; cuDNN's call is split by JAX itself.
    A logit bias (ALiBi, T5) keeps to ``xla`` on GPU too: cuDNN's bias gradient is unverified."""
    platform = jax.default_backend()
    if platform == "cpu":
        return cpu_attention(q_BQHD, k_BKGD, v_BKGD, mask, bias_BHQK, scale)
    if platform == "gpu" and cudnn.supports(q_BQHD) and bias_BHQK is None:
        translated = cudnn.translate(mask)
        if translated is not None and translated.holds is True:
            return cudnn.attend(q_BQHD, k_BKGD, v_BKGD, translated, bias_BHQK, scale)
    if platform == "tpu" and splash.supports(q_BQHD, k_BKGD, bias_BHQK):
        translated = splash.translate(mask)
        if translated is not None and translated.holds is True:
            return splash.attend(q_BQHD, k_BKGD, v_BKGD, translated, scale)
    return xla_attention(q_BQHD, k_BKGD, v_BKGD, mask, bias_BHQK, scale)


BACKENDS = {
    "auto": auto_attention,
    "xla": xla_attention,
    "jax": jax_attention,
    "cpu": cpu_attention,
    "cudnn": cudnn_attention,
    "splash": splash_attention,
}
