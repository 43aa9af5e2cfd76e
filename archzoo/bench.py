"""Speed benchmarks (``archzoo bench train``): tokens/s, step time, compile time, model FLOPs
utilisation against the float32 matmul peak measured on the same machine in the same run, and
the training step's peak memory.

Benchmarks print figures; tests never check wall-clock time.
"""

from __future__ import annotations

import dataclasses
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from archzoo.config import ConfigError
from archzoo.layers.kernels import check_backend
from archzoo.models import build, count_params, load_model_config
from archzoo.train.flops import feed_forward_params, train_flops
from archzoo.train.optimizer import OptimizerConfig
from archzoo.train.step import make_train_step, split_model

__all__ = ["matmul_peak_flops", "data_sheet_peak", "DATA_SHEET_HALF_PEAKS", "bench_train", "check_model", "bench_against_torch", "compiled_peak_bytes", "bench_moe_layer", "moe_variants", "bench_attention", "DEFAULT_MODEL"]

# GPT-2-style: vocab 256, d_model 256, 4 layers, 4 heads, context 256 (batch 16, float32, AdamW).
DEFAULT_MODEL = dict(
    vocab_size=256,
    d_model=256,
    num_layers=4,
    attention={"num_heads": 4},
    mlp={"d_ff": 1024, "activation": "gelu_tanh"},
    position={"kind": "learned", "max_len": 256},
)


_SEED = 0  # every benchmarked model's initialisation (the torch reference copies the causal decoder's)


def matmul_peak_flops(n: int | None = None, repeats: int = 10, dtype: str = "float32") -> float:
    """FLOP/s of a jitted ``[n, n] @ [n, n]`` matmul in ``dtype`` on the default device (best of
    ``repeats`` runs); ``n`` defaults to 2048 on CPU and 8192 on an accelerator, where a smaller
    matmul is too short to fill it."""
    if n is None:
        n = 2048 if jax.default_backend() == "cpu" else 8192
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
    b = jnp.asarray(np.random.default_rng(1).standard_normal((n, n)), dtype)
    mm = jax.jit(lambda x, y: x @ y)
    mm(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


# Dense (no sparsity) bfloat16/float16 matmul peaks from the makers' data sheets, by a part of
# jax's ``device_kind`` matched as whole words ("A100" is not "A1000"); the first that matches
# counts, so the more specific come first; None: a part whose peak is not listed here.
DATA_SHEET_HALF_PEAKS: tuple[tuple[str, float | None], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989.4e12),  # SXM
    ("H200 NVL", 835e12),
    ("H200", 989.4e12),  # SXM
    ("GH200", 989.4e12),
    ("A100", 312e12),
    ("TPU v4 lite", None),  # v4i
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),  # v5p
    ("TPU v6 lite", 918e12),  # v6e (Trillium)
    ("TPU v6e", 918e12),
)


def data_sheet_peak(device_kind: str, dtype: str) -> float | None:
    """The data-sheet dense matmul peak (FLOP/s) of a device of kind ``device_kind``
    (``jax.devices()[0].device_kind``) in ``dtype``, where :data:`DATA_SHEET_HALF_PEAKS` knows
    it: half precision only (float32 on these parts runs as TF32 or in several bf16 passes,
    whose peaks are not one number); else None."""
    if dtype not in ("bfloat16", "float16"):
        return None
    found = (peak for part, peak in DATA_SHEET_HALF_PEAKS if re.search(rf"(?<!\w){re.escape(part)}(?!\w)", device_kind))
    return next(found, None)


def _synthetic_batch(cfg, batch: int, length: int, prefix: bool) -> dict:
    """Full rows of random tokens (one example per row), in the packed-batch layout, ``[1, B, L]``;
    each target is the token after its input (a target equal to its input is a copy task that a
    tied embedding solves at once, driving the gradients into denormal floats)."""
    rng = np.random.default_rng(0)
    stream = rng.integers(0, cfg.vocab_size, (batch, length + 1), dtype=np.int32)
    tokens, targets = stream[:, :-1], stream[:, 1:]
    ones = np.ones((batch, length), np.int32)
    positions = np.broadcast_to(np.arange(length, dtype=np.int32), (batch, length)).copy()
    is_input = np.zeros((batch, length), bool)
    if prefix:
        is_input[:, : length // 2] = True
    weights = np.ones((batch, length), np.float32)
    out = {}
    for spec in cfg.stacks:
        s = spec.name
        out.update({f"{s}_tokens": tokens, f"{s}_segment_ids": ones, f"{s}_positions": positions, f"{s}_is_input": is_input if s == "decoder" else ~is_input})
    loss = cfg.loss_stream
    out.update({f"{loss}_targets": targets, f"{loss}_weights": weights})
    return {k: v[None] for k, v in out.items()}


def bench_train(model_cfg, *, batch: int = 16, length: int = 256, steps: int = 10, peak: float | None = None) -> dict:
    """Times ``steps`` training steps of one compiled step (after a first, compiling one).

    Returns:
      ``tokens_per_s``, ``step_s``, ``first_step_s`` (model and optimizer init, trace, compile,
      run), ``model_flops`` per step (active parameters: an MoE layer's chosen experts and
      router; recomputation under ``remat`` is not model FLOPs), ``mfu`` (fraction of ``peak``),
      ``params``, ``active_params``, ``remat`` (the model's policy), ``peak_bytes`` (what the
      compiled step needs: :func:`compiled_peak_bytes`) and ``device_peak_bytes`` (the device allocator's
      high-water mark since the process started, where the device reports one (GPUs); else None).
    """
    cfg = load_model_config(model_cfg)
    t0 = time.perf_counter()
    run, compiled, data = _training_step(cfg, batch, length)  # compiled once: timed and measured
    times = []
    for _ in range(steps + 1):  # the first time also counts tracing and compiling
        run()
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
    step_s = float(np.median(times[1:]))
    tokens = batch * length * len(cfg.stacks)
    flops = train_flops(cfg, {k: np.asarray(v[0]) for k, v in data.items()})
    n = count_params(cfg)
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "params": n.total,
        "active_params": n.active,
        "remat": cfg.remat,
        "tokens_per_s": tokens / step_s,
        "step_s": step_s,
        "first_step_s": times[0],
        "model_flops": flops,
        "mfu": flops / step_s / peak if peak else float("nan"),
        "peak_bytes": compiled_peak_bytes(compiled),
        "device_peak_bytes": stats.get("peak_bytes_in_use"),
    }


def check_model(cfg, length: int) -> None:
    """Refuses, before any work, a model the benchmark cannot run as asked: rows longer than its
    learned position table (inside the compiled step a lookup would silently read past it,
    clamped to its last row) or a forced attention kernel this platform does not have.

    Raises:
      ConfigError: naming ``--length`` and ``position.max_len``, or ``attention.backend``.
    """
    if cfg.position.kind == "learned" and length > cfg.position.max_len:
        raise ConfigError(
            f"--length {length} needs {length} learned positions but the model's position.max_len={cfg.position.max_len}; "
            f"pass --set position.max_len={length} or a shorter --length"
        )
    check_backend(cfg.attention.backend, "attention.backend")


def _training_step(cfg, batch: int, length: int):
    """``(run, compiled, batch)``: ``run()`` takes one training step of ``cfg`` (AdamW, lr 1e-3)
    on a synthetic batch, waiting for it, with the state carried from step to step."""
    check_model(cfg, length)
    data = _synthetic_batch(cfg, batch, length, prefix=cfg.bidirectional_prefix)
    data = {k: jnp.asarray(v) for k, v in data.items()}
    graphdef, params, rest = split_model(build(cfg, seed=_SEED))
    lr = 1e-3
    step, tx = make_train_step(graphdef, OptimizerConfig(lr=lr))
    state = [params, tx.init(params)]
    compiled = step.lower(params, rest, state[1], data, lr).compile()

    def run():
        state[0], state[1], metrics = compiled(state[0], rest, state[1], data, lr)
        jax.block_until_ready(metrics)

    return run, compiled, data


def _torch_reference():
    """``benchmarks/torch_gpt.py`` of the source tree archzoo runs from."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "torch_gpt.py"
    if not path.is_file():
        raise FileNotFoundError(f"--reference torch needs the source tree's benchmarks/torch_gpt.py; not found at {path}")
    spec = importlib.util.spec_from_file_location("archzoo_torch_gpt", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_against_torch(variants, *, batch: int = 16, length: int = 256, steps: int = 5, rounds: int = 5) -> dict:
    """Times archzoo's training step of each variant and the plain PyTorch step of the same
    causal decoder (``benchmarks/torch_gpt.py``, mirroring the first variant and starting from
    its weights) on the same batch in one process, interleaved: each round times ``steps`` steps
    of every archzoo variant, then of the reference (each after one untimed step), so drifts of a
    shared machine reach both alike.

    Args:
      variants: ``[(name, ModelConfig)]``; the first is a GPT-2-style causal decoder.

    Returns:
      ``{"torch": [tokens/s per round], name: [tokens/s per round], ...}``.
    """
    import torch

    ref = _torch_reference()
    base = variants[0][1]
    opt = OptimizerConfig(lr=1e-3)
    from archzoo.convert import get_params

    model = ref.from_archzoo(base, get_params(build(base, seed=_SEED)))  # the weights _training_step starts from
    torch_step = ref.TorchStep(model, lr=opt.lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay, clip_norm=opt.clip_norm)
    data = _synthetic_batch(base, batch, length, prefix=False)
    tokens = torch.from_numpy(data["decoder_tokens"][0].astype(np.int64))
    targets = torch.from_numpy(data["decoder_targets"][0].astype(np.int64))
    runs = [(name, _training_step(cfg, batch, length)[0], batch * length * len(cfg.stacks)) for name, cfg in variants]
    runs.append(("torch", lambda: torch_step(tokens, targets), batch * length))
    for _, run, _ in runs:  # warm: compiled (archzoo), allocator and threads (both)
        run(), run()
    rates = {name: [] for name, _, _ in runs}
    for _ in range(rounds):
        for name, run, n in runs:
            # One untimed step first: PyTorch's OpenMP threads spin for a while after its step
            # (the next step measured after it took 0.8-0.97 s against 0.36-0.43 s), which would
            # charge the contender after it for the interleaving, not for its own step.
            run()
            t0 = time.perf_counter()
            for _ in range(steps):
                run()
            rates[name].append(n * steps / (time.perf_counter() - t0))
    return rates


def compiled_peak_bytes(compiled) -> int:
    """Bytes a compiled function holds at its peak, from XLA's memory analysis: its arguments
    (live for the whole call), its outputs, and its temporaries (one block, laid out by XLA's
    buffer assignment: buffers never live at the same time share bytes), less the outputs written
    into donated arguments (counted among both arguments and outputs)."""
    m = compiled.memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


def _time(fn, *args, steps: int) -> tuple[float, float]:
    """First call (compile + run) and the median of ``steps`` more, in seconds (``fn`` may return
    JAX arrays, waited for, or anything else)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times))


def moe_variants(base, experts: int = 8, top_k: int = 2) -> list[tuple[str, object]]:
    """The dense model and its MoE twins at the same active parameters: ``experts`` experts of
    width ``d_ff / top_k`` in every block, ``top_k`` per token (plus the router), dispatched
    dropless in blocks, by padding (:mod:`archzoo.layers.moe`) and by ``ragged_dot``, and by
    capacity (factor 1.25)."""
    from archzoo.layers.config import MoeConfig

    width = base.mlp.d_ff // top_k
    moe = MoeConfig(num_experts=experts, top_k=top_k, d_ff=width)

    def with_moe(**kw):
        return base.replace(moe=dataclasses.replace(moe, **kw))

    return [
        ("dense", base),
        ("dropless (blocks)", with_moe(grouped_matmul="blocks")),
        ("dropless (padded)", with_moe(grouped_matmul="padded")),
        ("dropless (ragged_dot)", with_moe(grouped_matmul="ragged")),
        ("capacity 1.25", with_moe(dispatch="capacity", capacity_factor=1.25)),
    ]


def bench_moe_layer(cfg, *, batch: int, length: int, steps: int, peak: float | None = None) -> dict:
    """Forward and backward of one feed-forward layer of ``cfg`` (its MLP, or its MoE layer) on
    ``[batch, length, d_model]`` float32 inputs: seconds per call and MFU of its active FLOPs."""
    from flax import nnx

    from archzoo.layers.mlp import make_mlp
    from archzoo.layers.moe import MoE

    rngs = nnx.Rngs(params=0)
    if cfg.moe is None:
        layer = make_mlp(cfg.mlp, cfg.d_model, rngs=rngs)
    else:
        layer = MoE(cfg.moe, cfg.mlp, cfg.d_model, name="bench/0", rngs=rngs)
    graphdef, params = nnx.split(layer, nnx.Param)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, length, cfg.d_model)), jnp.float32)

    def loss(params, x):
        out = nnx.merge(graphdef, params)(x)
        y = out[0] if isinstance(out, tuple) else out
        return jnp.sum(y * y)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    first, step_s = _time(grad, params, x, steps=steps)
    flops = 3 * 2 * batch * length * feed_forward_params(cfg, "decoder", 0)
    return {"step_s": step_s, "first_step_s": first, "tokens_per_s": batch * length / step_s, "mfu": flops / step_s / peak if peak else float("nan")}


def bench_attention(*, batch: int = 16, length: int = 256, heads: int = 4, head_dim: int = 64, steps: int = 10, reference: str | None = None) -> list[dict]:
    """Forward and backward of the attention core alone (no projections) under a causal and a
    prefix mask (half of each row), on each CPU backend and, with ``reference="torch"``, in
    PyTorch's ``scaled_dot_product_attention``: ``[{"mask", "backend", "forward_s", "step_s"}]``
    (medians of ``steps`` calls after a first one)."""
    from archzoo import masks
    from archzoo.layers.kernels import BACKENDS

    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((batch, length, heads, head_dim)), jnp.float32) for _ in range(3))
    prefix = np.broadcast_to(np.arange(length) < length // 2, (batch, length))
    facts = {"causal": masks.facts(shape=(batch, length)), "prefix": masks.facts(shape=(batch, length), is_input=prefix)}
    rows = []
    for name, make in (("causal", masks.causal), ("prefix", masks.prefix)):
        for backend in ("xla", "cpu"):
            def loss(q, k, v, backend=backend, mask=make(facts[name])):
                return jnp.sum(BACKENDS[backend](q, k, v, mask, None, head_dim**-0.5) ** 2)

            _, forward = _time(jax.jit(loss), q, k, v, steps=steps)
            _, step = _time(jax.jit(jax.grad(loss, argnums=(0, 1, 2))), q, k, v, steps=steps)
            rows.append({"mask": name, "backend": backend, "forward_s": forward, "step_s": step})
        if reference == "torch":
            rows.append({"mask": name, "backend": "torch", **_torch_attention(q, k, v, name, steps)})
    return rows


def _torch_attention(q, k, v, mask: str, steps: int) -> dict:
    """PyTorch's ``scaled_dot_product_attention`` on the same inputs (``is_causal``; the prefix
    as a boolean mask), eager: medians of ``steps`` forward and forward-and-backward calls."""
    import torch
    import torch.nn.functional as F

    q, k, v = (torch.from_numpy(np.array(a)).transpose(1, 2).contiguous().requires_grad_(True) for a in (q, k, v))  # [B, H, L, Dh]
    L = q.shape[2]
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    kwargs = {"is_causal": True} if mask == "causal" else {"attn_mask": causal | (torch.arange(L) < L // 2)}

    def forward():
        with torch.no_grad():
            return F.scaled_dot_product_attention(q, k, v, **kwargs)

    def both():
        (F.scaled_dot_product_attention(q, k, v, **kwargs) ** 2).sum().backward()

    _, forward_s = _time(forward, steps=steps)
    _, step_s = _time(both, steps=steps)
    return {"forward_s": forward_s, "step_s": step_s}
