"""The Mixture-of-Experts layer against a brute-force numpy reference.

The reference (:class:`Reference`) is written from the spec, not from the layer: Python loops over
tokens and experts in float64, each expert's MLP on one token vector at a time, capacity claimed
assignment by assignment in the stated priority order, expert choice expert by expert.

Routers are drawn 3x wider than their init (logits with std about 3) and the reference checks
that no choice is a near-tie (a relative gap of at least 1e-4 between the last score chosen and
the first left out), so float32 rounding cannot flip a choice. Outputs are compared with a
tolerance of 2e-5 times the largest output (float32 on values of order 1 through a few dot
products of width <= 16); gradients with 1e-5 of the largest entry; statistics 1e-5.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from archzoo.layers.config import MlpConfig, MoeConfig
from archzoo.layers.moe import (
    MoE,
    block_layout,
    capacity,
    grouped_matmul_kind,
    update_balance_biases,
)
from archzoo.sharding import Layout

B, L, D, F = 2, 8, 8, 16
TOL = 2e-5  # relative to the largest reference value
MARGIN = 1e-4  # the least relative gap between the last chosen score and the first left out

SWIGLU = MlpConfig(d_ff=F, activation="silu", gated=True, bias=False)
RELU_BIAS = MlpConfig(d_ff=F, activation="relu", gated=False, bias=True)
GELU_GATED_BIAS = MlpConfig(d_ff=F, activation="gelu", gated=True, bias=True)


# -- building and drawing --------------------------------------------------------------------------


def make_moe(mlp: MlpConfig = SWIGLU, *, seed: int = 0, router_scale: float = 3.0, **moe) -> MoE:
    """An MoE layer with every weight drawn from numpy (seeded): biases nonzero, the router
    ``router_scale`` times its init width."""
    cfg = MoeConfig(**moe)
    # built abstractly and filled from numpy: no init to compile (most of a small test's time)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: MoE(cfg, mlp, D, name="decoder/0", rngs=nnx.Rngs(0))))
    layer = nnx.merge(graphdef, jax.tree.map(lambda s: jnp.asarray(np.zeros(s.shape, s.dtype)), state))
    rng = np.random.default_rng(seed)

    def draw(p, std):
        if p is not None:
            p[...] = jnp.asarray(rng.normal(scale=std, size=p.shape), jnp.float32)

    d_in = layer.up.shape[1]
    draw(layer.router, router_scale / math.sqrt(d_in))
    draw(layer.up, 1 / math.sqrt(d_in))
    draw(layer.gate, 1 / math.sqrt(d_in))
    draw(layer.down, 1 / math.sqrt(layer.down.shape[1]))
    draw(layer.up_bias, 0.5)
    draw(layer.down_bias, 0.5)
    if layer.shared is not None:
        draw(layer.shared.up, 1 / math.sqrt(d_in))
        draw(layer.shared.gate, 1 / math.sqrt(d_in))
        draw(layer.shared.down, 1 / math.sqrt(layer.shared.down.shape[0]))
        draw(layer.shared.up_bias, 0.5)
        draw(layer.shared.down_bias, 0.5)
    draw(layer.shared_gate, 1 / math.sqrt(d_in))
    return layer


def inputs(seed: int, b: int = B, l: int = L) -> np.ndarray:
    return np.random.default_rng(100 + seed).normal(size=(b, l, D)).astype(np.float32)


def right_padded(b: int = B, l: int = L, pad: int = 3) -> np.ndarray:
    """Every row real except the last ``pad`` tokens of the last row."""
    valid = np.ones((b, l), bool)
    valid[-1, l - pad :] = False
    return valid


def run(layer: MoE, x: np.ndarray, valid: np.ndarray, rng=None):
    y, report = layer(jnp.asarray(x), jnp.asarray(valid), rng=rng)
    return np.asarray(y, np.float64), report


def assert_close(got, want, tol: float = TOL, what: str = ""):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    err = float(np.max(np.abs(got - want))) if want.size else 0.0
    assert err <= tol * scale, f"{what}: max abs error {err:.3g} > {tol:.1g} * {scale:.3g}"


# -- the reference ---------------------------------------------------------------------------------


def np_act(name: str, x):
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "silu":
        return x / (1.0 + np.exp(-x))
    if name == "gelu":
        return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    raise ValueError(name)


def f64(p):
    return None if p is None else np.asarray(p[...], np.float64)


class Reference:
    """The layer's spec, one token and one expert at a time, in float64."""

    def __init__(self, layer: MoE, mlp: MlpConfig):
        self.cfg, self.act, self.gated = layer.cfg, mlp.activation, mlp.gated
        self.router, self.up, self.gate, self.down = (
            f64(layer.router),
            f64(layer.up),
            f64(layer.gate),
            f64(layer.down),
        )
        self.up_bias, self.down_bias = f64(layer.up_bias), f64(layer.down_bias)
        self.E, self.K = (
            layer.cfg.num_experts * layer.cfg.granularity,
            layer.cfg.top_k * layer.cfg.granularity,
        )
        self.balance_bias = np.zeros(self.E) if layer.balance_bias is None else f64(layer.balance_bias)
        self.shared = None
        if layer.shared is not None:
            s = layer.shared
            self.shared = [
                f64(s.up),
                f64(s.gate),
                f64(s.down),
                f64(s.up_bias),
                f64(s.down_bias),
            ]
        self.shared_gate = f64(layer.shared_gate)

    # one token, one expert
    def expert(self, e: int, x):
        h = x @ self.up[e]
        if self.up_bias is not None:
            h = h + self.up_bias[e]
        h = np_act(self.act, x @ self.gate[e]) * h if self.gated else np_act(self.act, h)
        y = h @ self.down[e]
        if self.down_bias is not None:
            y = y + self.down_bias[e]
        return y

    def shared_out(self, x):
        up, gate, down, up_bias, down_bias = self.shared
        h = x @ up
        if up_bias is not None:
            h = h + up_bias
        h = np_act(self.act, x @ gate) * h if gate is not None else np_act(self.act, h)
        y = h @ down
        if down_bias is not None:
            y = y + down_bias
        if self.shared_gate is not None:
            y = y / (1.0 + np.exp(-(x @ self.shared_gate)))
        return y

    def logits(self, x):
        return x @ self.router

    def probs(self, x):
        z = self.logits(x)
        p = np.exp(z - z.max())
        return p / p.sum()

    def choose(self, x, check: bool = True):
        """A token's experts (best first) and their weights (``check``: that no near-tie decides)."""
        p = self.probs(x)
        scores = p + self.balance_bias
        order = sorted(range(self.E), key=lambda e: -scores[e])
        if check and self.K < self.E:
            gap = (scores[order[self.K - 1]] - scores[order[self.K]]) / scores[order[self.K - 1]]
            assert gap > MARGIN, f"near-tie in the top-{self.K} choice (gap {gap:.2g}): pick another seed"
        chosen = order[: self.K]
        w = np.array([p[e] for e in chosen])
        if self.cfg.normalize:
            w = w / w.sum()
        return chosen, w

    def capacity(self, S: int) -> int:
        cfg, tc = self.cfg, self.cfg.router == "token_choice"
        if cfg.expert_capacity is not None:
            return min(cfg.expert_capacity, S * (self.K if tc else 1))
        factor = 1.0 if cfg.capacity_factor is None else cfg.capacity_factor
        return max(1, min(math.ceil(factor * self.K * S / self.E), S * self.K if tc else S))

    def groups(self, b: int, l: int):
        if self.cfg.group == "row":
            return [[(i, j) for j in range(l)] for i in range(b)]
        return [[(i, j) for i in range(b) for j in range(l)]]

    def __call__(self, x, valid, *, count_padding: bool = False):
        """Output ``[B, L, D]``, the stats of the spec and ``dropped``: the set of dropped
        ``(token, expert)`` assignments (token choice) or of unpicked tokens (expert choice).
        ``count_padding``: padding claims capacity like a real token (what the layer must NOT do;
        for showing that a test would catch it)."""
        x = np.asarray(x, np.float64)
        b, l, _ = x.shape
        cfg, E, K = self.cfg, self.E, self.K
        y = np.zeros_like(x)
        counts = np.zeros(E)
        dropped = set()
        for group in self.groups(b, l):
            real = [t for t in group if valid[t]]
            claimants = group if count_padding else real
            if cfg.router == "expert_choice":
                C = self.capacity(len(group))
                p = {t: self.probs(x[t]) for t in real}
                picked = set()
                for e in range(E):
                    ranked = sorted(real, key=lambda t: -p[t][e])  # stable: ties by position
                    if len(ranked) > C:
                        gap = (p[ranked[C - 1]][e] - p[ranked[C]][e]) / p[ranked[C - 1]][e]
                        assert gap > MARGIN, "near-tie in an expert's pick"
                    for t in ranked[:C]:
                        y[t] += p[t][e] * self.expert(e, x[t])
                        counts[e] += 1
                        picked.add(t)
                dropped |= {t for t in real if t not in picked}
                continue
            choice = {t: self.choose(x[t], check=t in claimants) for t in group}
            for t in real:
                for e in choice[t][0]:
                    counts[e] += 1
            if cfg.dispatch == "capacity":
                C = self.capacity(len(group))
                # position priority: every first choice in position order, then every second choice
                claims = [(j, t) for j in range(K) for t in group if t in claimants]
                if cfg.priority == "score":  # by router probability (before any renormalisation)
                    prob = {t: self.probs(x[t]) for t in group}
                    claims.sort(key=lambda jt: -prob[jt[1]][choice[jt[1]][0][jt[0]]])  # stable: ties keep the order above
                taken = np.zeros(E, int)
                contenders = {e: [] for e in range(E)}
                for j, t in claims:
                    e = choice[t][0][j]
                    contenders[e].append(prob[t][e] if cfg.priority == "score" else choice[t][1][j])
                    if taken[e] < C:
                        taken[e] += 1
                    elif valid[t]:
                        dropped.add((t, e))
                if cfg.priority == "score":
                    for ws in contenders.values():
                        if len(ws) > C:
                            gap = (ws[C - 1] - ws[C]) / ws[C - 1]
                            assert gap == 0 or gap > MARGIN, "near-tie at an expert's capacity"
            for t in real:
                for e, w in zip(*choice[t]):
                    if (t, e) not in dropped:
                        y[t] += w * self.expert(e, x[t])
        if self.shared is not None:
            for group in self.groups(b, l):
                for t in group:
                    if valid[t]:
                        y[t] += self.shared_out(x[t])
        return y, self.stats(x, valid, counts, dropped), dropped

    def stats(self, x, valid, counts, dropped):
        real = [(i, j) for i in range(x.shape[0]) for j in range(x.shape[1]) if valid[i, j]]
        E = self.E
        P = np.zeros(E)
        entropy = z = 0.0
        for t in real:
            logits = self.logits(x[t])
            p = self.probs(x[t])
            P += p / len(real)
            entropy += -np.sum(p * np.log(p)) / len(real)
            lse = logits.max() + np.log(np.sum(np.exp(logits - logits.max())))
            z += lse**2 / len(real)
        f = counts / counts.sum()
        if self.cfg.router == "expert_choice":
            dropped_fraction = len(dropped) / len(real)
        else:
            dropped_fraction = len(dropped) / counts.sum()
        return {
            "expert_fraction": f,
            "dropped_fraction": dropped_fraction,
            "router_entropy": entropy,
            "load_balance": E * np.sum(f * P),
            "router_z": z,
        }


# -- 1. token choice, dropless ---------------------------------------------------------------------

ROUTINGS = {
    "switch_top1_raw": {"top_k": 1, "normalize": False},
    "mixtral_top2_normalized": {"top_k": 2, "normalize": True},
    "top2_raw": {"top_k": 2, "normalize": False},
}
MLPS = {"swiglu": SWIGLU, "relu_bias": RELU_BIAS}
DROPLESS_CASES = [
    ("switch_top1_raw", "relu_bias"),
    ("switch_top1_raw", "swiglu"),
    ("mixtral_top2_normalized", "swiglu"),
    ("top2_raw", "relu_bias"),
]


@pytest.mark.parametrize("matmul", ["ragged", "blocks", "padded"])
@pytest.mark.parametrize("routing,mlp_name", DROPLESS_CASES)
def test_dropless_token_choice_matches_the_loop(routing, mlp_name, matmul):
    mlp = MLPS[mlp_name]
    layer = make_moe(mlp, seed=1, num_experts=4, grouped_matmul=matmul, **ROUTINGS[routing])
    assert grouped_matmul_kind(layer.cfg) == matmul
    x, valid = inputs(1), right_padded()
    got, report = run(layer, x, valid)
    want, _stats, dropped = Reference(layer, mlp)(x, valid)
    assert_close(got[valid], want[valid], what="real tokens")
    assert np.all(got[~valid] == 0), "padding must output exactly 0"
    assert float(report.stats["dropped_fraction"]) == 0.0 and not dropped


def test_auto_grouped_matmul_is_blocks_on_cpu_and_padded_under_an_expert_axis():
    cpu = jax.default_backend() == "cpu"
    assert grouped_matmul_kind(MoeConfig(grouped_matmul="auto")) == ("blocks" if cpu else "ragged")
    assert grouped_matmul_kind(MoeConfig(grouped_matmul="ragged")) == "ragged"
    for experts_split, want in ((1, "blocks"), (2, "padded")):  # an expert axis of one device splits nothing
        with Layout(jax.sharding.AbstractMesh((2, experts_split), ("data", "expert"))).active():
            assert grouped_matmul_kind(MoeConfig(grouped_matmul="auto")) == (want if cpu else "ragged")


@pytest.mark.parametrize("assignments,experts", [(8192, 8), (16, 4), (32, 4), (4096, 64), (8, 8)])
def test_the_blocks_hold_any_load(assignments, experts):
    """``nb`` blocks of R rows hold every load: all on one expert, one on each but the last,
    or R + 1 on each (every last block nearly empty), the rest on the last."""
    R, nb = block_layout(assignments, experts)
    assert R % 8 == 0
    for first in (0, 1, R + 1):
        loads = [min(first, assignments // experts)] * (experts - 1)
        loads.append(assignments - sum(loads))
        assert sum(-(-c // R) for c in loads) <= nb, (first, loads)


def prototypes(ref: Reference, seed: int) -> list[np.ndarray]:
    """One input per expert that the router sends (top-1, clearly) to that expert."""
    rng = np.random.default_rng(seed)
    found = {}
    while len(found) < ref.E:
        v = rng.normal(size=D)
        p = ref.probs(v)
        if np.sort(p)[-1] > 2 * np.sort(p)[-2]:
            found.setdefault(int(np.argmax(p)), v)
    return [found[e] for e in range(ref.E)]


def skewed_inputs(ref: Reference, on_zero: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """``[B, L, D]`` inputs whose first choice is expert 0 for ``on_zero`` of the 16 tokens and
    experts 1-3 in turn for the rest (shuffled), each a scaled prototype."""
    protos = prototypes(ref, seed)
    experts = [0] * on_zero + [1 + i % 3 for i in range(B * L - on_zero)]
    np.random.default_rng(on_zero).shuffle(experts)
    scale = np.random.default_rng(50 + on_zero).uniform(0.8, 1.2, size=B * L)
    x = np.stack([s * protos[e] for s, e in zip(scale, experts)]).reshape(B, L, D).astype(np.float32)
    return x, experts


# 16 real tokens, top-1, E = 4: mean load 4; the padded path's first pass holds 5 per expert
# (1.25 times the mean), the rest go to its overflow pass
@pytest.mark.parametrize("matmul", ["blocks", "padded"])
@pytest.mark.parametrize("load", [4, 5, 6, 7, 8, 9, 12, 13, 16])
def test_dropless_holds_any_load(load, matmul):
    """The most loaded expert's load below, at and past the padded path's first capacity, up to
    every token on one expert: nothing is ever dropped."""
    layer = make_moe(RELU_BIAS, seed=2, num_experts=4, top_k=1, grouped_matmul=matmul)
    ref = Reference(layer, RELU_BIAS)
    x, experts = skewed_inputs(ref, load, seed=2)  # the others take at most the mean
    assert [ref.choose(t)[0][0] for t in x.reshape(-1, D)] == experts
    valid = np.ones((B, L), bool)
    got, report = run(layer, x, valid)
    want, _stats, _ = ref(x, valid)
    assert_close(got, want)
    assert float(report.stats["dropped_fraction"]) == 0.0
    assert float(report.stats["expert_fraction"][0]) == pytest.approx(load / 16)


@pytest.mark.parametrize("matmul", ["blocks", "padded"])
def test_dropless_with_padding_on_the_loaded_expert(matmul):
    """Left padding whose inputs also go to the overloaded expert: it is routed nowhere (in
    no pass of ``padded``) and outputs 0."""
    layer = make_moe(RELU_BIAS, seed=2, num_experts=4, top_k=1, grouped_matmul=matmul)
    ref = Reference(layer, RELU_BIAS)
    protos = prototypes(ref, 2)
    experts = [0, 0, 0] + [0] * 6 + [1, 2, 3] * 2 + [0]
    x = np.stack([protos[e] for e in experts]).reshape(B, L, D).astype(np.float32)
    valid = np.ones((B, L), bool)
    valid[0, :3] = False
    got, report = run(layer, x, valid)
    want, _stats, _ = ref(x, valid)
    assert_close(got[valid], want[valid])
    assert np.all(got[~valid] == 0)
    assert float(report.stats["expert_fraction"][0]) == pytest.approx(7 / 13)


FULLY_PADDED_ROW_CASES = {
    "dropless": {"top_k": 2},
    "capacity": {"top_k": 2, "dispatch": "capacity", "expert_capacity": 2},
    "capacity_batch_score": {
        "top_k": 2,
        "dispatch": "capacity",
        "expert_capacity": 2,
        "group": "batch",
        "priority": "score",
    },
    "expert_choice": {"top_k": 2, "router": "expert_choice"},
}


@pytest.mark.parametrize("case", list(FULLY_PADDED_ROW_CASES))
def test_a_fully_padded_row(case):
    layer = make_moe(SWIGLU, seed=25, num_experts=4, **FULLY_PADDED_ROW_CASES[case])
    x = inputs(25)
    valid = np.ones((B, L), bool)
    valid[0] = False
    want, stats, _ = Reference(layer, SWIGLU)(x, valid)
    got, report = run(layer, x, valid)
    assert np.all(got[0] == 0)
    assert_close(got[1], want[1])
    for name, w in stats.items():
        assert_close(report.stats[name], w, tol=1e-5, what=name)


def test_no_valid_mask_means_every_token_is_real():
    layer = make_moe(SWIGLU, seed=26, num_experts=4, top_k=2)
    x = inputs(26)
    y, report = layer(jnp.asarray(x))
    want, stats, _ = Reference(layer, SWIGLU)(x, np.ones((B, L), bool))
    assert_close(y, want)
    assert float(report.stats["router_z"]) == pytest.approx(stats["router_z"], rel=1e-5)


def test_bfloat16_experts_float32_router():
    """The experts run in the input's dtype; the router, and so the choice and every statistic,
    in float32 (the reference routes the bfloat16-rounded input in float64)."""
    layer = make_moe(SWIGLU, seed=27, num_experts=4, top_k=2)
    x = np.asarray(jnp.asarray(inputs(27), jnp.bfloat16).astype(jnp.float32))
    valid = right_padded()
    y, report = layer(jnp.asarray(x, jnp.bfloat16), jnp.asarray(valid))
    assert y.dtype == jnp.bfloat16
    want, stats, _ = Reference(layer, SWIGLU)(x, valid)
    assert_close(np.asarray(y.astype(jnp.float32))[valid], want[valid], tol=3e-2)  # bfloat16: 8 bits
    for name, w in stats.items():
        assert report.stats[name].dtype == jnp.float32
        assert_close(report.stats[name], w, tol=1e-5, what=name)


# -- 2. shared and fine-grained experts -------------------------------------------------------------


@pytest.mark.parametrize("shared_gate", [False, True])
def test_shared_experts(shared_gate):
    layer = make_moe(
        GELU_GATED_BIAS,
        seed=3,
        num_experts=4,
        top_k=2,
        num_shared_experts=1,
        shared_gate=shared_gate,
    )
    assert layer.shared.up.shape == (D, F)  # one shared expert of the routed width
    assert (layer.shared_gate is not None) == shared_gate
    x, valid = inputs(3), right_padded()
    got, _ = run(layer, x, valid)
    want, _, _ = Reference(layer, GELU_GATED_BIAS)(x, valid)
    assert_close(got[valid], want[valid])
    # the shared part matters: without it the reference is far off
    layer_routed = Reference(layer, GELU_GATED_BIAS)
    layer_routed.shared = None
    routed_only, _, _ = layer_routed(x, valid)
    assert np.max(np.abs(routed_only[valid] - want[valid])) > 0.1


@pytest.mark.parametrize("shared_gate", [False, True])
def test_shared_experts_padding_outputs_zero(shared_gate):
    """Padding tokens output 0 from the layer, shared experts included."""
    layer = make_moe(
        GELU_GATED_BIAS,
        seed=3,
        num_experts=4,
        top_k=2,
        num_shared_experts=1,
        shared_gate=shared_gate,
    )
    x, valid = inputs(3), right_padded()
    got, _ = run(layer, x, valid)
    assert np.all(got[~valid] == 0), f"padding outputs up to {np.max(np.abs(got[~valid])):.3g}, not 0"


@pytest.mark.parametrize("matmul", ["ragged", "blocks", "padded"])
def test_fine_grained_experts(matmul):
    layer = make_moe(SWIGLU, seed=4, num_experts=2, top_k=1, granularity=2, grouped_matmul=matmul)
    assert (layer.cfg.experts, layer.cfg.k) == (4, 2)
    assert layer.up.shape == (4, D, F // 2) and layer.down.shape == (4, F // 2, D) and layer.router.shape == (D, 4)
    x, valid = inputs(4), right_padded()
    got, _ = run(layer, x, valid)
    want, _, _ = Reference(layer, SWIGLU)(x, valid)
    assert_close(got[valid], want[valid])
    assert np.all(got[~valid] == 0)


# -- 3, 4. capacity dispatch -----------------------------------------------------------------------


def test_capacity_formula():
    tc = {"num_experts": 4, "top_k": 2}
    assert capacity(MoeConfig(**tc), 8) == 4  # ceil(1 * 2 * 8 / 4)
    assert capacity(MoeConfig(**tc, capacity_factor=1.25), 8) == 5
    assert capacity(MoeConfig(**tc, capacity_factor=0.3), 8) == 2  # ceil(1.2)
    assert capacity(MoeConfig(**tc, capacity_factor=0.01), 8) == 1  # at least 1
    assert capacity(MoeConfig(**tc, capacity_factor=100.0), 8) == 16  # at most k * S
    assert capacity(MoeConfig(**tc, expert_capacity=3), 8) == 3
    assert capacity(MoeConfig(**tc, expert_capacity=99), 8) == 16
    ec = {"num_experts": 4, "top_k": 2, "router": "expert_choice"}
    assert capacity(MoeConfig(**ec), 8) == 4
    assert capacity(MoeConfig(**ec, capacity_factor=100.0), 8) == 8  # at most the group
    assert capacity(MoeConfig(**ec, expert_capacity=99), 8) == 8


@pytest.mark.parametrize("priority", ["position", "score"])
@pytest.mark.parametrize("group", ["row", "batch"])
def test_capacity_without_overflow_equals_dropless(group, priority):
    common = {
        "seed": 5,
        "num_experts": 4,
        "top_k": 2,
        "group": group,
        "priority": priority,
    }
    dropless = make_moe(RELU_BIAS, **common, grouped_matmul="ragged")
    roomy = make_moe(RELU_BIAS, **common, dispatch="capacity", capacity_factor=4.0)  # C = k * S
    x, valid = inputs(5), right_padded()
    want, _ = run(dropless, x, valid)
    got, report = run(roomy, x, valid)
    assert_close(got, want)
    assert float(report.stats["dropped_fraction"]) == 0.0


CAPACITY_CASES = [
    (top_k, normalize, group, priority)
    for top_k, normalize in [(1, False), (2, True), (2, False)]
    for group in ["row", "batch"]
    for priority in ["position", "score"]
]


@pytest.mark.parametrize("top_k,normalize,group,priority", CAPACITY_CASES)
def test_capacity_drops_exactly_the_assignments_past_capacity(top_k, normalize, group, priority):
    E = 4
    S = L if group == "row" else B * L
    cap = 2  # below the mean load k S / E (2 to 8); one capacity for all: fewer shapes to compile
    layer = make_moe(
        SWIGLU, seed=6, num_experts=E, top_k=top_k, normalize=normalize, group=group, priority=priority,
        dispatch="capacity", expert_capacity=cap,
    )  # fmt: skip
    assert capacity(layer.cfg, S) == cap
    x, valid = inputs(6), right_padded(pad=2)
    ref = Reference(layer, SWIGLU)
    want, stats, dropped = ref(x, valid)
    got, report = run(layer, x, valid)
    assert dropped, "the case must drop something"
    # a dropped assignment changes its token's output: the output pins the dropped set
    ref.cfg = dataclasses.replace(ref.cfg, dispatch="dropless")
    full, _, _ = ref(x, valid)
    for t, e in dropped:
        assert np.max(np.abs(full[t] - want[t])) > 100 * TOL, (t, e)
    assert_close(got[valid], want[valid])
    assert np.all(got[~valid] == 0)
    assert float(report.stats["dropped_fraction"]) == pytest.approx(len(dropped) / (top_k * valid.sum()), rel=1e-6)
    assert_close(report.stats["expert_fraction"], stats["expert_fraction"], tol=1e-6)


@pytest.mark.parametrize("top_k,normalize", [(1, False), (2, True)])
def test_position_and_score_priority_drop_different_assignments(top_k, normalize):
    """The cases above could not tell the priorities apart if they dropped the same."""
    sets = []
    for priority in ["position", "score"]:
        layer = make_moe(
            SWIGLU, seed=6, num_experts=4, top_k=top_k, normalize=normalize, priority=priority,
            dispatch="capacity", expert_capacity=2,
        )  # fmt: skip
        x, valid = inputs(6), right_padded(pad=2)
        want, _, dropped = Reference(layer, SWIGLU)(x, valid)
        got, _ = run(layer, x, valid)
        assert_close(got[valid], want[valid])
        sets.append(dropped)
    assert sets[0] != sets[1]


@pytest.mark.parametrize("priority", ["position", "score"])
@pytest.mark.parametrize("group", ["row", "batch"])
def test_padding_takes_no_capacity(group, priority):
    """Left padding that copies the row's real tokens would, if it claimed places, take them
    first (position) or tie with them (score) and push real assignments out."""
    pad = 3
    x = inputs(7)
    x[:, :pad] = x[:, pad : 2 * pad]
    valid = np.ones((B, L), bool)
    valid[:, :pad] = False
    probe = make_moe(SWIGLU, seed=7, num_experts=4, top_k=2, group=group)
    ref = Reference(probe, SWIGLU)
    # the capacity that real tokens exactly fill: the most real assignments any expert gets in a group
    loads = []
    for g in ref.groups(B, L):
        load = np.zeros(4, int)
        for t in g:
            if valid[t]:
                load[ref.choose(x[t])[0]] += 1
        loads.append(load.max())
    cap = int(max(loads))
    layer = make_moe(
        SWIGLU,
        seed=7,
        num_experts=4,
        top_k=2,
        group=group,
        priority=priority,
        dispatch="capacity",
        expert_capacity=cap,
    )
    ref = Reference(layer, SWIGLU)
    want, _, dropped = ref(x, valid)
    assert not dropped
    _, _, dropped_if_padding_counted = ref(x, valid, count_padding=True)
    assert dropped_if_padding_counted, "the padding must be able to claim places in this case"
    got, report = run(layer, x, valid)
    assert_close(got[valid], want[valid])
    assert np.all(got[~valid] == 0)
    assert float(report.stats["dropped_fraction"]) == 0.0


# -- 5. expert choice ------------------------------------------------------------------------------


def few_real_in_row_1() -> np.ndarray:
    valid = np.ones((B, L), bool)
    valid[1, 2:] = False  # 2 real tokens in row 1: fewer than a capacity of 8
    return valid


@pytest.mark.parametrize(
    "group,extra,valid",
    [
        ("row", {}, right_padded()),  # C = ceil(2 * 8 / 4) = 4
        (
            "batch",
            {"capacity_factor": 0.5},
            right_padded(),
        ),  # C = ceil(0.5 * 2 * 16 / 4) = 4
        ("batch", {}, right_padded()),  # C = 8
        # an expert of row 1 picks both its real tokens and no padding
        ("row", {"capacity_factor": 2.0}, few_real_in_row_1()),  # C = 8
    ],
)
def test_expert_choice_matches_the_loop(group, extra, valid):
    layer = make_moe(
        RELU_BIAS,
        seed=8,
        num_experts=4,
        top_k=2,
        router="expert_choice",
        group=group,
        **extra,
    )
    x = inputs(8)
    ref = Reference(layer, RELU_BIAS)
    assert capacity(layer.cfg, L if group == "row" else B * L) == ref.capacity(L if group == "row" else B * L)
    want, stats, unpicked = ref(x, valid)
    got, report = run(layer, x, valid)
    assert_close(got[valid], want[valid])
    assert np.all(got[~valid] == 0)
    n_real = int(valid.sum())
    assert float(report.stats["dropped_fraction"]) == pytest.approx(len(unpicked) / n_real, rel=1e-6)
    assert_close(report.stats["expert_fraction"], stats["expert_fraction"], tol=1e-6)


def test_expert_choice_leaks_across_positions_and_token_choice_does_not():
    v = inputs(10)[0, 0]
    x = 0.1 * inputs(11)  # near-uniform router probabilities everywhere...
    x[0, 0] = v  # ...but for token 0, which its best expert then picks
    later = x.copy()
    later[0, L - 1] = 2 * v  # the last token: the same expert, more sharply
    valid = np.ones((B, L), bool)
    ec = make_moe(
        RELU_BIAS,
        seed=10,
        num_experts=4,
        top_k=1,
        router="expert_choice",
        expert_capacity=1,
    )
    ref = Reference(ec, RELU_BIAS)
    before, after = run(ec, x, valid)[0], run(ec, later, valid)[0]
    assert_close(before, ref(x, valid)[0])
    assert_close(after, ref(later, valid)[0])
    assert np.max(np.abs(before[0, 0] - after[0, 0])) > 0.1, "changing token L-1 must change token 0"
    tc = make_moe(RELU_BIAS, seed=10, num_experts=4, top_k=1)
    before, after = run(tc, x, valid)[0], run(tc, later, valid)[0]
    np.testing.assert_allclose(after[0, : L - 1], before[0, : L - 1], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(after[1], before[1])


# -- 6. the report ---------------------------------------------------------------------------------

REPORT_CASES = {
    "dropless_top2": {"top_k": 2},
    "capacity_top1_dropping": {
        "top_k": 1,
        "normalize": False,
        "dispatch": "capacity",
        "expert_capacity": 2,
    },
    "capacity_batch_score": {
        "top_k": 2,
        "dispatch": "capacity",
        "expert_capacity": 2,
        "group": "batch",
        "priority": "score",
    },
    "expert_choice": {"top_k": 2, "router": "expert_choice"},
}


@pytest.mark.parametrize("case", list(REPORT_CASES))
def test_report_statistics_and_losses(case):
    moe = dict(
        num_experts=4,
        load_balance_weight=0.03,
        z_loss_weight=0.002,
        **REPORT_CASES[case],
    )
    layer = make_moe(SWIGLU, seed=24, **moe)
    x, valid = inputs(12), right_padded(pad=3)
    x[~valid] *= 5  # padding far from the real tokens: counted, it would move every statistic
    _, stats, _ = Reference(layer, SWIGLU)(x, valid)
    all_real = Reference(layer, SWIGLU)(x, np.ones_like(valid))[1]
    _, report = run(layer, x, valid)
    for name, want in stats.items():
        got = np.asarray(report.stats[name], np.float64)
        assert_close(got, want, tol=1e-5, what=name)
        # (expert choice: every expert takes C tokens, so its loads are even whatever the padding)
        if name != "dropped_fraction" and not (name in ("expert_fraction", "load_balance") and case == "expert_choice"):
            assert np.max(np.abs(np.asarray(all_real[name]) - want)) > 1e-3, f"padding must matter to {name} here"
    assert set(report.stats) == set(stats)
    assert report.stats["expert_fraction"].shape == (4,)
    want_losses = {"router_z_loss": 0.002 * stats["router_z"]}
    if layer.cfg.router == "token_choice":
        want_losses["load_balance_loss"] = 0.03 * stats["load_balance"]
    assert set(report.losses) == set(want_losses)
    for name, want in want_losses.items():
        assert float(report.losses[name]) == pytest.approx(want, rel=1e-5), name


def test_losses_absent_when_unweighted_or_bias_balanced():
    x, valid = inputs(13), right_padded()
    for moe in [
        {"load_balance_weight": 0.0, "z_loss_weight": 0.0},
        {"balance": "bias", "load_balance_weight": 0.01, "z_loss_weight": 0.0},
    ]:
        layer = make_moe(SWIGLU, seed=13, num_experts=4, top_k=2, **moe)
        _, report = run(layer, x, valid)
        assert report.losses == {}, moe
        assert "load_balance" in report.stats  # still reported


def test_even_router_has_load_balance_one():
    """A zero router spreads every token evenly: P_e = 1/E, so E * sum_e f_e P_e = 1 whatever
    the loads, and the entropy is log E."""
    layer = make_moe(SWIGLU, seed=14, num_experts=4, top_k=2, router_scale=0.0)
    _, report = run(layer, inputs(14), right_padded())
    assert float(report.stats["load_balance"]) == pytest.approx(1.0, rel=1e-6)
    assert float(report.stats["router_entropy"]) == pytest.approx(math.log(4), rel=1e-6)
    assert float(report.stats["router_z"]) == pytest.approx(math.log(4) ** 2, rel=1e-6)


# -- 7. gradients ----------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("normalize", "activation"))
def reference_grads(params, x, valid, r, chosen, kept, *, normalize: bool, activation: str):
    """The gradient of the spec's loss ``sum(y * r)`` w.r.t. ``params`` (router, up, gate, down)
    and ``x``, in jnp, dense over every expert, with the choices fixed: ``kept`` ``[B, L, E]``
    (1: the expert's weight counts), ``chosen`` (the normaliser's experts)."""
    act = {"silu": jax.nn.silu, "relu": jax.nn.relu}[activation]

    def loss(params, x):
        router, up, gate, down = params
        probs = jax.nn.softmax(jnp.einsum("bld,de->ble", x, router), axis=-1)
        w = probs * kept
        if normalize:
            w = w / (jnp.sum(probs * chosen, axis=-1, keepdims=True) + (1.0 - valid[..., None]))  # padding: / 1
        h = jnp.einsum("bld,edf->blef", x, up)
        h = act(jnp.einsum("bld,edf->blef", x, gate)) * h if gate is not None else act(h)
        y_e = jnp.einsum("blef,efd->bled", h, down)
        y = jnp.einsum("ble,bled->bld", w, y_e) * valid[..., None]
        return jnp.sum(y * r)

    return jax.grad(loss, argnums=(0, 1))(params, x)


def _loss(m, x, valid, r):
    return jnp.sum(m(x, valid)[0] * r)


# module level, so tests of one config share one compile (jit: compiling once beats op by op on CPU)
layer_grads = nnx.jit(nnx.grad(_loss, argnums=(0, 1)))
PARAMS = ["router", "up", "gate", "down"]


def chosen_mask(ref: Reference, x, valid, dropped=frozenset()):
    chosen = np.zeros((*valid.shape, ref.E), np.float32)
    kept = np.zeros_like(chosen)
    for t in zip(*np.nonzero(valid)):
        for e in ref.choose(x[t])[0]:
            chosen[t][e] = 1
            kept[t][e] = (t, e) not in dropped
    return chosen, kept


def check_grads(layer: MoE, x, valid, r, chosen, kept, names=PARAMS):
    g_layer, g_x = layer_grads(layer, jnp.asarray(x), jnp.asarray(valid), jnp.asarray(r))
    want_params, want_x = reference_grads(
        tuple(getattr(layer, n)[...] for n in PARAMS), jnp.asarray(x), jnp.asarray(valid), jnp.asarray(r),
        jnp.asarray(chosen), jnp.asarray(kept), normalize=layer.cfg.normalize, activation=layer.activation,
    )  # fmt: skip
    want = dict(zip(PARAMS, want_params), x=want_x)
    got = {n: g_layer[n][...] for n in PARAMS} | {"x": g_x}
    for name in [*names, "x"]:
        scale = float(np.max(np.abs(want[name])))
        assert scale > 1e-3, f"d/d{name} must not vanish"
        assert_close(
            np.asarray(got[name]) / scale,
            np.asarray(want[name]) / scale,
            tol=1e-5,
            what=f"d/d{name}",
        )
    return g_layer


GRAD_CASES = [
    (1, False),
    (2, True),
]  # top-1 raw probabilities; top-2 through the normaliser


@pytest.mark.parametrize("top_k,normalize", GRAD_CASES)
@pytest.mark.parametrize("overflow", [False, True])
def test_padded_dropless_gradients(top_k, normalize, overflow):
    """The padded path's gradients (parameters and input) against the dense reference, with the
    most loaded expert within its first capacity (1.25 times the mean) and past it (the overflow
    pass and its own backward pass). The router learns through the weights; the balance bias
    takes no gradient."""
    layer = make_moe(
        SWIGLU,
        seed=28,
        num_experts=4,
        top_k=top_k,
        normalize=normalize,
        grouped_matmul="padded",
        balance="bias",
    )
    ref = Reference(layer, SWIGLU)
    x = skewed_inputs(ref, 12 if overflow else 4, seed=28)[0]  # 4: first choices even
    valid = right_padded(pad=2)
    chosen, kept = chosen_mask(ref, x, valid)
    first_capacity = math.ceil(1.25 * B * L * top_k / 4)
    assert (chosen.sum(axis=(0, 1)).max() > first_capacity) == overflow
    r = np.random.default_rng(28).normal(size=x.shape).astype(np.float32)
    g = check_grads(layer, x, valid, r, chosen, kept)
    assert np.all(np.asarray(g["balance_bias"][...]) == 0), "the balance bias takes no gradient"


@pytest.mark.parametrize("top_k,normalize", GRAD_CASES)
def test_gradients_of_capacity_without_drops_equal_dropless(top_k, normalize):
    common = {
        "seed": 15,
        "num_experts": 4,
        "top_k": top_k,
        "normalize": normalize,
        "balance": "bias",
    }
    x, valid = inputs(15), right_padded()
    r = np.random.default_rng(15).normal(size=x.shape).astype(np.float32)
    grads = {}
    for matmul in ["ragged", "padded"]:
        dropless = make_moe(SWIGLU, **common, grouped_matmul=matmul)
        grads[matmul] = layer_grads(dropless, jnp.asarray(x), jnp.asarray(valid), jnp.asarray(r))
    roomy = make_moe(SWIGLU, **common, dispatch="capacity", capacity_factor=4.0)
    ref = Reference(roomy, SWIGLU)
    grads["capacity"] = (
        check_grads(roomy, x, valid, r, *chosen_mask(ref, x, valid)),
        None,
    )
    up = np.asarray(grads["padded"][0]["up"][...])
    assert np.max(np.abs(up)) > 1e-3
    for kind in ["ragged", "capacity"]:
        assert_close(
            grads[kind][0]["up"][...] / np.max(np.abs(up)),
            up / np.max(np.abs(up)),
            tol=1e-5,
            what=kind,
        )
    assert_close(grads["ragged"][1], grads["padded"][1], tol=1e-5, what="d/dx")


def test_dropped_assignments_take_no_gradient():
    """A dropped assignment adds nothing, so neither does it to the gradients."""
    layer = make_moe(
        SWIGLU,
        seed=16,
        num_experts=4,
        top_k=1,
        normalize=False,
        dispatch="capacity",
        expert_capacity=2,
    )
    x, valid = inputs(16), np.ones((B, L), bool)
    ref = Reference(layer, SWIGLU)
    _, _, dropped = ref(x, valid)
    assert dropped
    chosen, kept = chosen_mask(ref, x, valid, dropped)
    r = np.random.default_rng(16).normal(size=x.shape).astype(np.float32)
    check_grads(layer, x, valid, r, chosen, kept)


# -- 8. balance bias -------------------------------------------------------------------------------


class Holder(nnx.Module):
    def __init__(self, layer):
        self.block = layer


def test_update_balance_biases_sign_rule():
    layer = make_moe(SWIGLU, seed=17, num_experts=4, top_k=1, balance="bias", bias_rate=0.1)
    layer.balance_bias[...] = jnp.asarray([0.0, 0.3, -0.2, 0.05], jnp.float32)
    holder = Holder(layer)
    before = np.asarray(layer.balance_bias[...], np.float64)
    f = np.array([0.5, 0.25, 0.0, 0.25], np.float32)  # over, even, under, even
    update_balance_biases(holder, {"decoder/0/expert_fraction": jnp.asarray(f)})
    want = before + 0.1 * np.array([-1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(np.asarray(layer.balance_bias[...]), want, rtol=0, atol=1e-7)


def test_update_balance_biases_from_the_layer_report():
    layer = make_moe(SWIGLU, seed=18, num_experts=4, top_k=2, balance="bias", bias_rate=0.1)
    x, valid = inputs(18), right_padded()
    _, report = run(layer, x, valid)
    _, stats, _ = Reference(layer, SWIGLU)(x, valid)
    f = stats["expert_fraction"]
    update_balance_biases(Holder(layer), report.prefixed("decoder/0").stats)
    want = 0.1 * np.sign(1 / 4 - f)
    assert np.any(want > 0) and np.any(want < 0)
    np.testing.assert_allclose(np.asarray(layer.balance_bias[...]), want, rtol=0, atol=1e-7)


def test_update_balance_biases_in_a_built_model():
    """The model's stats, named by the stack, reach its MoE layer's bias."""
    from archzoo.models import build

    def make():
        return build(
            moe={"num_experts": 4, "top_k": 1, "balance": "bias", "bias_rate": 0.1},
            d_model=16, num_layers=1, vocab_size=32, mlp={"d_ff": 32}, attention={"num_heads": 2},
        )  # fmt: skip

    # built abstractly and filled from numpy (the real init costs seconds of compiling)
    graphdef, state = nnx.split(nnx.eval_shape(make))
    rng = np.random.default_rng(19)
    state = jax.tree.map(
        lambda s: jnp.asarray(rng.normal(scale=0.5, size=s.shape).astype(s.dtype)),
        state,
    )
    model = nnx.merge(graphdef, state)
    layers = [m for _, m in nnx.iter_modules(model) if isinstance(m, MoE)]
    assert len(layers) == 1 and layers[0].name == "decoder/0"
    layers[0].balance_bias[...] = jnp.zeros((4,), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, 32, size=(2, 8)), jnp.int32)
    out = nnx.jit(lambda m, t: m.forward(t))(model, tokens)
    f = np.asarray(out.stats["decoder/0/expert_fraction"], np.float64)
    assert f.sum() == pytest.approx(1.0)
    assert np.any(f != 0.25)
    update_balance_biases(model, out.stats)
    np.testing.assert_allclose(
        np.asarray(layers[0].balance_bias[...]),
        0.1 * np.sign(0.25 - f),
        rtol=0,
        atol=1e-7,
    )


@pytest.mark.parametrize("top_k,normalize", [(1, False), (2, True), (2, False)])
def test_balance_bias_changes_the_choice_not_the_weights(top_k, normalize):
    layer = make_moe(
        RELU_BIAS,
        seed=20,
        num_experts=4,
        top_k=top_k,
        normalize=normalize,
        balance="bias",
    )
    x, valid = inputs(20), right_padded()
    unbiased, _ = run(layer, x, valid)
    ref0 = Reference(layer, RELU_BIAS)
    layer.balance_bias[...] = jnp.asarray([0.0, 0.0, 0.0, 2.0], jnp.float32)  # more than any probability gap
    ref = Reference(layer, RELU_BIAS)
    got, report = run(layer, x, valid)
    want, stats, _ = ref(x, valid)
    changed = 0
    for t in zip(*np.nonzero(valid)):
        experts, w = ref.choose(x[t])
        assert 3 in experts
        p = ref.probs(x[t])
        raw = np.array([p[e] for e in experts])
        np.testing.assert_allclose(w, raw / raw.sum() if normalize else raw)  # probabilities, not scores
        changed += 3 not in ref0.choose(x[t])[0]
    assert changed > 0, "the bias must change some token's choice"
    assert_close(got[valid], want[valid])
    assert np.max(np.abs(got - unbiased)) > 0.1
    assert float(report.stats["expert_fraction"][3]) == pytest.approx(stats["expert_fraction"][3])
    # the statistics other than the loads read the probabilities, not the biased scores
    assert float(report.stats["router_entropy"]) == pytest.approx(stats["router_entropy"], rel=1e-5)


# -- 9. jitter and noise ---------------------------------------------------------------------------


@pytest.mark.parametrize("router", ["token_choice", "expert_choice"])
def test_without_rng_jitter_and_noise_are_off(router):
    noisy = make_moe(SWIGLU, seed=21, num_experts=4, top_k=2, router=router, jitter=0.2, noise=1.0)
    x, valid = inputs(21), right_padded()
    got, report = run(noisy, x, valid)
    again, _ = run(noisy, x, valid)
    np.testing.assert_array_equal(got, again)
    want, stats, _ = Reference(noisy, SWIGLU)(x, valid)
    assert_close(got[valid], want[valid])
    assert float(report.stats["router_z"]) == pytest.approx(stats["router_z"], rel=1e-5)


@pytest.mark.parametrize("kind", [{"jitter": 0.2}, {"noise": 1.0}])
def test_rng_perturbs_the_router_reproducibly(kind):
    layer = make_moe(SWIGLU, seed=22, num_experts=4, top_k=2, **kind)
    x, valid = inputs(22), right_padded()
    plain, plain_report = run(layer, x, valid)
    a, report_a = run(layer, x, valid, rng=jax.random.key(1))
    a2, _ = run(layer, x, valid, rng=jax.random.key(1))
    b, _ = run(layer, x, valid, rng=jax.random.key(2))
    np.testing.assert_array_equal(a, a2)
    assert np.max(np.abs(a - plain)) > 1e-3
    assert np.max(np.abs(a - b)) > 1e-3
    assert float(report_a.stats["router_z"]) != pytest.approx(float(plain_report.stats["router_z"]), rel=1e-4)
    assert np.all(a[~valid] == 0)


def test_jitter_leaves_the_expert_inputs_alone():
    """Top-1 normalised: the weight is 1 whatever the logits, so while the choice stands the
    output is the chosen expert on the input as given. A token's choice stands under any jitter
    draw when its top-two logit gap exceeds 2 * jitter * max_e sum_d |x_d r_de| (the most the
    jitter can move a logit); the router's logits (router_z) do move."""
    jitter = 0.02
    layer = make_moe(RELU_BIAS, seed=23, num_experts=4, top_k=1, normalize=True, jitter=jitter)
    x, valid = inputs(23), right_padded()
    ref = Reference(layer, RELU_BIAS)
    stands = np.zeros_like(valid)
    for t in zip(*np.nonzero(valid)):
        logits = np.sort(ref.logits(x[t]))
        reach = jitter * np.max(np.abs(x[t][:, None] * ref.router).sum(axis=0))
        stands[t] = logits[-1] - logits[-2] > 2 * reach
    assert stands.sum() >= 10, "most tokens must keep their choice for the check to mean much"
    plain, plain_report = run(layer, x, valid)
    jittered, report = run(layer, x, valid, rng=jax.random.key(3))
    want, _, _ = ref(x, valid)
    assert_close(plain[valid], want[valid])
    assert_close(jittered[stands], plain[stands], tol=1e-6)
    assert abs(float(report.stats["router_z"]) - float(plain_report.stats["router_z"])) > 1e-3
