"""The fused CPU attention kernel: ``archzoo/kernels/cpu_attention.cc`` as XLA FFI custom calls.

The kernel walks tiles of 32 queries by 64 keys with an online softmax, skips every tile the
mask leaves empty (above the diagonal of a causal mask, after a prefix, across packed examples,
past a sliding window), reads queries, keys and values in the ``[B, L, heads, Dh]`` layout the
projections write (no transposes) and runs on XLA's own CPU threads. The backward pass
recomputes the probabilities tile by tile from each query's log-sum-exp (FlashAttention-2's
scheme). Arithmetic is float32; bfloat16 and float16 inputs are widened for it and the results
narrowed back.

It is compiled with the system C++ compiler (``$CXX``, else ``g++``, ``c++`` or ``clang++``;
``-O3 -march=native``) at first use and cached under ``$ARCHZOO_KERNEL_CACHE`` (default
``~/.cache/archzoo/kernels``), keyed by the source, the compiler, its flags, the jax version and
this CPU's instruction sets. Where no compiler is found or the build fails, one line on the
``archzoo`` logger says why and attention takes the XLA path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from archzoo.sharding import per_device_attention

__all__ = ["available", "supports", "attend", "HEAD_WIDTHS"]

HEAD_WIDTHS = (16, 32, 64, 128)  # the widths the kernel is instantiated for
SOURCE = Path(__file__).resolve().parents[1] / "kernels" / "cpu_attention.cc"
_FORWARD, _BACKWARD = "archzoo_cpu_attention_forward", "archzoo_cpu_attention_backward"
_state: dict = {}  # "ok": bool, "why": the reason it is not


def _cpu_features() -> str:
    """This CPU's instruction-set flags (``-march=native`` compiles for them)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_dir() -> Path:
    env = os.environ.get("ARCHZOO_KERNEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "archzoo" / "kernels"


def _compile(cxx: str, flags: list[str], target: Path) -> str | None:
    """Builds the library at ``target`` (written whole or not at all); why it failed, or None."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        out = subprocess.run([cxx, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            lines = [line for line in out.stderr.splitlines() if "error" in line] or out.stderr.splitlines() or ["no output"]
            return f"{cxx} could not build {SOURCE.name}: {lines[0].strip()}"
        os.replace(tmp, target)
        return None
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{cxx} could not build {SOURCE.name}: {e}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load() -> str | None:
    """Builds (or finds in the cache), loads and registers the kernel; why not, or None."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not cxx:
        return "no C++ compiler found (g++, c++ or clang++; or set CXX)"
    flags = ["-O3", "-march=native", "-std=c++20", "-shared", "-fPIC", "-w", "-isystem", jax.ffi.include_dir()]
    key = hashlib.sha256(
        "\0".join([SOURCE.read_text(), cxx, " ".join(flags), jax.__version__, _cpu_features()]).encode()
    ).hexdigest()[:16]
    unwritable = None
    for folder in (_cache_dir(), Path(tempfile.gettempdir()) / "archzoo-kernels"):  # a read-only home: the temp dir
        library = folder / f"cpu_attention-{key}.so"
        try:
            why = None if library.exists() else _compile(cxx, flags, library)
        except OSError as e:
            unwritable = f"cannot write the kernel cache {folder}: {e.strerror or e}"
            continue
        if why is not None:
            return why
        break
    else:
        return unwritable
    try:
        lib = ctypes.cdll.LoadLibrary(str(library))
        jax.ffi.register_ffi_target(_FORWARD, jax.ffi.pycapsule(lib.ArchzooAttentionForward), platform="cpu")
        jax.ffi.register_ffi_target(_BACKWARD, jax.ffi.pycapsule(lib.ArchzooAttentionBackward), platform="cpu")
    except (OSError, AttributeError) as e:
        return f"cannot load {library}: {e}"
    return None


def available() -> bool:
    """Whether the kernel is built and registered (built at the first call; a failure is said
    once, on the ``archzoo`` logger)."""
    if "ok" not in _state:
        why = _load()
        _state.update(ok=why is None, why=why)
        if why is not None:
            logging.getLogger("archzoo").warning("archzoo: CPU attention takes the XLA path: %s", why)
    return _state["ok"]


def supports(q_BQHD, k_BKGD, bias_BHQK) -> bool:
    """Whether these inputs fit the kernel: a head width it is built for, floating inputs, and
    a bias (if any) of ``[B or 1, H or 1, Q or 1, K]``."""
    B, Q, H, Dh = q_BQHD.shape
    if Dh not in HEAD_WIDTHS or not jnp.issubdtype(q_BQHD.dtype, jnp.floating) or H % k_BKGD.shape[2]:
        return False
    if bias_BHQK is None:
        return True
    b = bias_BHQK.shape
    K = k_BKGD.shape[1]
    return len(b) == 4 and b[3] == K and b[0] in (1, B) and b[1] in (1, H) and b[2] in (1, Q)


def _no_bias():
    return jnp.zeros((1, 1, 1, 1), jnp.float32)


def _forward(q, k, v, allowed, bias, scale):
    B, Q, H, _ = q.shape
    shapes = (jax.ShapeDtypeStruct(q.shape, jnp.float32), jax.ShapeDtypeStruct((B, H, Q), jnp.float32))
    call = jax.ffi.ffi_call(_FORWARD, shapes, vmap_method="sequential")
    return call(q, k, v, allowed, _no_bias() if bias is None else bias, scale=np.float32(scale), has_bias=bias is not None)


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _core(q, k, v, allowed, bias, scale):
    return _forward(q, k, v, allowed, bias, scale)[0]


def _core_fwd(q, k, v, allowed, bias, scale):
    out, lse = _forward(q, k, v, allowed, bias, scale)
    return out, (q, k, v, allowed, bias, out, lse)


def _core_bwd(scale, residuals, g):
    q, k, v, allowed, bias, out, lse = residuals
    B, Q, H, _ = q.shape
    has_bias = bias is not None
    f32 = lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32)
    shapes = (f32(q.shape), f32(k.shape), f32(v.shape), f32((B, H, Q, k.shape[1]) if has_bias else (1, 1, 1, 1)))
    call = jax.ffi.ffi_call(_BACKWARD, shapes, vmap_method="sequential")
    dq, dk, dv, d_logits = call(
        q, k, v, allowed, _no_bias() if bias is None else bias, out, lse, g, scale=np.float32(scale), has_bias=has_bias, bias_grad=has_bias
    )
    d_bias = None
    if has_bias:  # a bias broadcast over an axis gets its gradient summed over it
        summed = tuple(i for i, n in enumerate(bias.shape) if n == 1 and d_logits.shape[i] != 1)
        d_bias = jnp.sum(d_logits, axis=summed, keepdims=True)
    return dq, dk, dv, None, d_bias


_core.defvjp(_core_fwd, _core_bwd)


def attend(q_BQHD, k_BKGD, v_BKGD, allowed_BQK, bias_BHQK, scale: float):
    """The kernel on a dense boolean mask ``[B, Q, K]`` (broadcast from any leading 1):
    ``[B, Q, H, Dh]`` in the inputs' dtype; queries with no allowed key get 0 and no gradient.
    Under an active layout of several devices, each device runs it on its own rows and heads
    (:func:`archzoo.sharding.per_device_attention`). Call :func:`available` and :func:`supports`
    first."""
    dtype = q_BQHD.dtype
    B, Q = q_BQHD.shape[:2]
    f32 = lambda x: x.astype(jnp.float32)
    extras = [(jnp.broadcast_to(allowed_BQK, (B, Q, k_BKGD.shape[1])), "BQK")]
    if bias_BHQK is not None:
        extras.append((f32(bias_BHQK), "BHQK"))

    def kernel(q, k, v, allowed, *bias):
        return _core(q, k, v, allowed, bias[0] if bias else None, float(scale))

    return per_device_attention(kernel, f32(q_BQHD), f32(k_BKGD), f32(v_BKGD), *extras).astype(dtype)
