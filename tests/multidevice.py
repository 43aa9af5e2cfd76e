"""Runs in a subprocess with 8 simulated CPU devices (``XLA_FLAGS`` is set before jax is
imported): a few training steps of one model on one device and on each mesh, printing one JSON
line of the losses and of every parameter's shard shape per mesh.

    python tests/multidevice.py steps '{"model": {...}, "meshes": {"data8": {"data": 8}}}'
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # run as the subprocess: not when a test imports packed_batch from here
    # 8 devices; compiled without LLVM's optimisations, which halves the compile time that
    # dominates these runs (they compare numbers between meshes in this one process, not speed)
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"

import json  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from archzoo.models import load_model_config  # noqa: E402
from archzoo.sharding import Layout, MeshConfig  # noqa: E402
from archzoo.train.optimizer import OptimizerConfig  # noqa: E402
from archzoo.train.step import init_training  # noqa: E402


def packed_batch(cfg, rows: int, length: int, seed: int = 0) -> dict:
    """``[1, rows, length]`` rows packing two examples each, then padding, in the layout the
    feature converters write (positions restart per example; the first half of an example is
    its input)."""
    rng = np.random.default_rng(seed)
    batch = {}
    for spec in cfg.stacks:
        s = spec.name
        seg = np.zeros((rows, length), np.int32)
        pos = np.zeros((rows, length), np.int32)
        inp = np.zeros((rows, length), bool)
        for r in range(rows):
            a = int(rng.integers(4, length // 2))
            b = int(rng.integers(2, length - a - 1))
            for sid, (start, n) in enumerate(((0, a), (a, b)), start=1):
                seg[r, start : start + n] = sid
                pos[r, start : start + n] = np.arange(n)
                inp[r, start : start + n // 2] = True
        tokens = np.where(seg > 0, rng.integers(1, cfg.vocab_size, (rows, length)), 0).astype(np.int32)
        is_input = inp if s == "decoder" and cfg.mask == "prefix" else (np.zeros_like(inp) if s == "decoder" else seg > 0)
        batch.update({f"{s}_tokens": tokens, f"{s}_segment_ids": seg, f"{s}_positions": pos, f"{s}_is_input": is_input})
    loss = cfg.loss_stream
    targets = np.roll(batch[f"{loss}_tokens"], -1, axis=1)
    weights = (batch[f"{loss}_segment_ids"] > 0).astype(np.float32)
    if loss == "decoder" and cfg.mask == "prefix":
        weights = weights * ~batch["decoder_is_input"]
    batch.update({f"{loss}_targets": targets, f"{loss}_weights": weights})
    return {k: v[None] for k, v in batch.items()}


def losses(model_cfg, layout, batches, steps: int) -> tuple[list[float], dict]:
    """The losses of ``steps`` updates, and each parameter's sharding spec and shard shape."""
    t = init_training(model_cfg, OptimizerConfig(lr=3e-3), seed=0, layout=layout)
    params, opt_state, out = t.params, t.opt_state, []
    for i in range(steps):
        params, opt_state, m = t.train_step(params, t.rest, opt_state, t.put_batch(batches[i % len(batches)]), 3e-3)
        out.append(float(m["loss_nats"]))
    shards = {}
    for path, a in jax.tree_util.tree_leaves_with_path(params):
        name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path if getattr(k, "name", None) != "value")
        spec = [list(p) if isinstance(p, tuple) else p for p in getattr(a.sharding, "spec", ())]
        shards[name] = {"shape": list(a.shape), "shard": list(a.addressable_shards[0].data.shape), "spec": spec}
    moments = jax.tree.leaves(opt_state)
    shards["__optimizer_moments_sharded_like_params__"] = all(
        any(m.shape == p.shape and m.sharding == p.sharding for p in jax.tree.leaves(params)) for m in moments if m.ndim > 0
    )
    return out, shards


def steps(spec: dict) -> dict:
    cfg = load_model_config(spec["model"])
    batches = [packed_batch(cfg, spec.get("rows", 8), spec.get("length", 32), seed) for seed in range(2)]
    n = spec.get("steps", 3)
    result = {"one": losses(cfg, None, batches, n)}
    for name, mesh in spec["meshes"].items():
        result[name] = losses(cfg, Layout.of(MeshConfig(**mesh)), batches, n)
    return result


def checkpoints(spec: dict) -> dict:
    """Saves the training state of one mesh with the run's checkpoint manager and restores it
    onto others (``"one"``: a single device): for each hop, whether every array came back equal
    and placed as the target state's template says."""
    from pathlib import Path

    from archzoo.train.checkpoints import RunCheckpoints

    cfg = load_model_config(spec["model"])
    batch = packed_batch(cfg, 8, 32)

    def state(mesh):
        t = init_training(cfg, OptimizerConfig(lr=3e-3), seed=0, layout=None if mesh == "one" else Layout.of(MeshConfig(**mesh)))
        return t, {"params": t.params, "opt_state": t.opt_state}

    result = {}
    for i, (source, target) in enumerate(spec["hops"]):
        t, saved = state(source)
        params, opt_state, _ = t.train_step(t.params, t.rest, t.opt_state, t.put_batch(batch), 3e-3)  # moments not zero
        saved = {"params": params, "opt_state": opt_state}
        manager = RunCheckpoints(Path(spec["dir"]) / str(i), keep=1)
        manager.save(1, saved, {"step": 1})
        manager.close()
        _, template = state(target)
        manager = RunCheckpoints(Path(spec["dir"]) / str(i), keep=1)
        restored = manager.restore_latest(template).state
        manager.close()
        pairs = list(zip(jax.tree.leaves(saved), jax.tree.leaves(restored), jax.tree.leaves(template)))
        result[f"{i}"] = {
            "equal": all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b, _ in pairs),
            "placed": all(b.sharding.is_equivalent_to(c.sharding, b.ndim) for _, b, c in pairs),
            "devices": sorted({len(b.sharding.device_set) for _, b, _ in pairs}),
        }
    return result


def kernel(spec: dict) -> dict:
    """An attention kernel (``backend``: ``splash`` in Pallas interpret mode, or the fused
    ``cpu`` one) over packed causal rows, forward and the gradients of q, k and v (and of a
    logit bias shared by the rows, ``bias: true``), on one device and under each mesh: per
    mesh, the largest difference from one device relative to the largest value of that output,
    the collectives of the compiled program and the specs of the output and of the query
    gradient."""
    import jax.numpy as jnp

    from archzoo import masks
    from archzoo.layers import cpu_fused
    from archzoo.layers import splash as sp

    B, L, H, G, Dh = (spec[k] for k in ("rows", "length", "heads", "kv_heads", "head_dim"))
    rng = np.random.default_rng(0)
    seg, pos = np.zeros((B, L), np.int32), np.zeros((B, L), np.int32)
    for b in range(B):  # two examples, then padding
        a = int(rng.integers(L // 8, L // 2))
        c = int(rng.integers(1, L - a))
        seg[b, :a], pos[b, :a] = 1, np.arange(a)
        seg[b, a : a + c], pos[b, a : a + c] = 2, np.arange(c)
    q, k, v = (jnp.asarray(rng.normal(size=(B, L, n, Dh)), jnp.float32) for n in (H, G, G))
    bias = jnp.asarray(rng.normal(size=(1, H, L, L)), jnp.float32) if spec.get("bias") else None
    g = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
    assert spec["backend"] == "splash" or cpu_fused.available()  # built and registered

    def attention(q, k, v, seg, pos, *bias):
        f = masks.facts(seg, positions=pos, ordered=True)
        mask = masks.causal(f) & masks.same_segment(f)
        if spec["backend"] == "splash":
            attend = lambda q, k, v: sp.attend(q, k, v, sp.translate(mask), Dh**-0.5, interpret=True)
        else:
            attend = lambda q, k, v, *bias: cpu_fused.attend(q, k, v, mask.allowed(), bias[0] if bias else None, Dh**-0.5)
        out, pull = jax.vjp(attend, q, k, v, *bias)
        return (out, *pull(g))

    def spec_of(a):  # one entry per dimension
        spec = list(a.sharding.spec) + [None] * (a.ndim - len(a.sharding.spec))
        return [list(p) if isinstance(p, tuple) else p for p in spec]

    args = (q, k, v, jnp.asarray(seg), jnp.asarray(pos)) + (() if bias is None else (bias,))
    want = jax.jit(attention)(*args)
    result = {}
    for name, mesh in spec["meshes"].items():
        layout = Layout.of(MeshConfig(**mesh))
        names = [("batch", "length", "heads", "head_dim")] + [("batch", "length", "kv_heads", "head_dim")] * 2 + [("batch", "length")] * 2
        names += [(None, "heads", None, None)] * (bias is not None)
        placed = [jax.device_put(a, layout.sharding(n, a.shape)) for a, n in zip(args, names)]

        def under_layout(*a):
            with layout.active():
                return attention(*a)

        compiled = jax.jit(under_layout).lower(*placed).compile()
        text = compiled.as_text()
        got = compiled(*placed)
        result[name] = {
            "max_rel_diff": max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(got, want)),
            "all_gathers": text.count("all-gather("),
            "out_spec": spec_of(got[0]),
            "dq_spec": spec_of(got[1]),
        }
    return result


if __name__ == "__main__":
    what, arg = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps({"steps": steps, "checkpoints": checkpoints, "kernel": kernel}[what](arg)))
