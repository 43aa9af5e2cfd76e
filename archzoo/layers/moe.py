"""The Mixture-of-Experts layer: a drop-in for the MLP of any block of any family.

A router scores E experts for every real token (float32, whatever the compute dtype); each token
goes to its chosen experts (token choice: top-1 as in Switch, top-k as in GShard, GLaM and
Mixtral) or each expert takes its best tokens of a group (expert choice, Zhou et al. 2022), and
the layer returns the weighted sum of the experts' outputs, plus any shared experts every token
passes through (DeepSeekMoE; Qwen-MoE gates them by a sigmoid).

Dispatch:

- ``dropless``: no assignment is dropped: they are sorted by expert and run through a grouped
  matmul (``jax.lax.ragged_dot``), or laid out as for capacity dispatch in passes that together
  hold the most loaded expert (``padded``: batched matmuls; the fast one on CPU).
- ``capacity``: each expert takes at most C assignments per group (a batch row or the whole
  batch); the ones past C by the stated priority are dropped: that expert adds nothing for them,
  so a token dropped by all its experts passes through the block's residual unchanged.

Padding (segment id 0) is never routed: it takes no capacity and counts in no loss or statistic.

Report per layer (:class:`~archzoo.models.output.LayerReport`): the weighted losses
``load_balance_loss`` (Switch Transformer eq. 4, ``E * sum_e f_e P_e`` over real tokens, 1 when
balanced; ``f_e`` the fraction of assignments to expert e, ``P_e`` its mean router probability)
and ``router_z_loss`` (ST-MoE), and the statistics ``expert_fraction`` ``[E]`` (``f_e``, before
any dropping), ``dropped_fraction`` (of assignments), ``router_entropy`` (mean over real tokens, in
nats), ``load_balance`` and ``router_z`` (unweighted).

Shapes: ``G`` groups, ``S`` tokens per group, ``E`` experts, ``K`` experts per token, ``C``
capacity, ``M`` assignments, ``F`` expert width.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from archzoo.layers.config import MlpConfig, MoeConfig
from archzoo.layers.mlp import Mlp, feed_forward
from archzoo.layers.params import dense_init, param, zeros
from archzoo.layers.report import LayerReport
from archzoo.sharding import active_layout, constrain

__all__ = ["MoE", "BalanceBias", "update_balance_biases", "capacity", "grouped_matmul_kind", "block_layout"]


class BalanceBias(nnx.Param):
    """The per-expert routing bias of auxiliary-loss-free balancing (DeepSeek-V3).

    Saved and restored with the parameters, but not trained by the optimizer (its gradient is
    zero: it only changes which experts are chosen) and not counted as a model parameter; the
    train step moves it after each update (:func:`update_balance_biases`).
    """


def capacity(cfg: MoeConfig, group_tokens: int) -> int:
    """Assignments each expert takes per group: ``expert_capacity``, or
    ``ceil(capacity_factor * k * group_tokens / E)`` (factor 1 by default), at most the group."""
    if cfg.expert_capacity is not None:
        return min(cfg.expert_capacity, group_tokens * (cfg.k if cfg.router == "token_choice" else 1))
    factor = 1.0 if cfg.capacity_factor is None else cfg.capacity_factor
    c = math.ceil(factor * cfg.k * group_tokens / cfg.experts)
    return max(1, min(c, group_tokens if cfg.router == "expert_choice" else group_tokens * cfg.k))


def grouped_matmul_kind(cfg: MoeConfig) -> str:
    """``ragged``, ``blocks`` or ``padded``: the dropless path this config runs here.

    ``auto`` is ``ragged`` on GPU and TPU; on CPU, where ``ragged_dot`` is slow (measured by
    ``archzoo bench moe``), ``blocks``, or ``padded`` under a mesh that splits the experts
    (its ``[E, C, D]`` layout is the one the ``expert`` axis shards)."""
    if cfg.grouped_matmul != "auto":
        return cfg.grouped_matmul
    if jax.default_backend() != "cpu":
        return "ragged"
    layout = active_layout()
    return "padded" if layout is not None and layout.axis_size("expert") > 1 else "blocks"


def block_layout(assignments: int, experts: int) -> tuple[int, int]:
    """``(R, nb)`` of the ``blocks`` dropless path: R rows per block, a multiple of 8 near a
    quarter of the mean load (larger blocks run the batched matmul faster, smaller ones pad
    less: measured at 8 experts and 8192 assignments, R 256 beat 128 and 512), and the ``nb``
    blocks that hold any load, each expert's last block partly empty."""
    R = 8 * max(1, math.ceil(assignments / (4 * experts) / 8))
    return R, math.ceil(assignments / R) + experts - 1


class MoE(nnx.Module):
    """Router, E expert MLPs and optional shared experts.

    Parameters: ``router`` ``[D, E]``; per expert ``up`` ``[E, D, F]``, ``gate`` (gated MLPs),
    ``down`` ``[E, F, D]`` and biases when the MLP has them; ``shared`` (an
    :class:`~archzoo.layers.mlp.Mlp`) and ``shared_gate`` ``[D]`` when configured;
    ``balance_bias`` ``[E]`` for ``balance: bias``.

    Args:
      cfg: the MoE config.
      mlp: the model's MLP config (the experts' activation, gating and biases).
      d_model: D.
      name: how the layer's report is named (``decoder/3``): the train step finds its expert
        loads there to move the balance bias.

    Expert choice in a decoder is refused by :class:`~archzoo.models.config.ModelConfig`
    unless its config acknowledges the leak.
    """

    def __init__(
        self,
        cfg: MoeConfig,
        mlp: MlpConfig,
        d_model: int,
        *,
        name: str,
        rngs: nnx.Rngs,
        init_std: float | None = None,
        out_std: float | None = None,
    ):
        D, E, F = d_model, cfg.experts, cfg.expert_width(mlp.d_ff)
        out_std = init_std if out_std is None else out_std
        self.cfg, self.name, self.activation = cfg, name, mlp.activation
        if isinstance(cfg.router_logits, str):
            self.router = param(rngs, dense_init(D, init_std), (D, E), ("embed", None), width_role="hidden")
        else:  # the user's router module (layers/plugins.py: RouterPlugin)
            self.router = cfg.router_logits.construct(cfg, D, rngs=rngs, init_std=init_std)
        self.up = param(rngs, dense_init(D, init_std), (E, D, F), ("expert", "embed", "mlp"), width_role="hidden")
        self.gate = (
            param(rngs, dense_init(D, init_std), (E, D, F), ("expert", "embed", "mlp"), width_role="hidden") if mlp.gated else None
        )
        self.down = param(rngs, dense_init(F, out_std), (E, F, D), ("expert", "mlp", "embed"), width_role="hidden")
        self.up_bias = param(rngs, zeros, (E, F), ("expert", "mlp"), width_role="input") if mlp.bias else None
        self.down_bias = param(rngs, zeros, (E, D), ("expert", "embed"), width_role="input") if mlp.bias else None
        shared = cfg.shared_width(mlp.d_ff)
        self.shared = (
            Mlp(dataclasses.replace(mlp, d_ff=shared), D, rngs=rngs, init_std=init_std, out_std=out_std) if shared else None
        )
        self.shared_gate = (
            param(rngs, dense_init(D, init_std), (D,), ("embed",), width_role="hidden") if cfg.shared_gate else None
        )
        self.balance_bias = BalanceBias(jnp.zeros((E,), jnp.float32), width_role="input") if cfg.balance == "bias" else None

    def inactive_params(self) -> int:
        """Parameters of the routed experts a token does not use: ``(E - k)`` experts' worth."""
        per_expert = sum(
            math.prod(p.shape[1:]) for p in (self.up, self.gate, self.down, self.up_bias, self.down_bias) if p is not None
        )
        return (self.cfg.experts - self.cfg.k) * per_expert

    # -- the experts ---------------------------------------------------------------------------

    def _experts(self, x, matmul, bias_rows, hidden):
        """The experts' MLP (:func:`~archzoo.layers.mlp.feed_forward`): ``matmul(x, w)`` applies
        each row's expert slice of ``w [E, ...]``, ``bias_rows(b)`` lays ``b [E, ...]`` out for it."""
        dtype = x.dtype

        def cast(p):
            return None if p is None else p[...].astype(dtype)

        def bias(p):
            return None if p is None else bias_rows(cast(p))

        return feed_forward(
            x,
            self.activation,
            matmul,
            cast(self.up),
            cast(self.down),
            cast(self.gate),
            bias(self.up_bias),
            bias(self.down_bias),
            hidden=hidden,
        )

    def _experts_dense(self, x_ECD: jax.Array) -> jax.Array:
        """Each expert's MLP on its own rows: ``[E, C, D] -> [E, C, D]``, the experts split over
        the mesh's ``expert`` axis (the dispatch buffer moves there and back)."""
        names = ("expert", "act_tokens", "act_embed")
        x_ECD = constrain(x_ECD, names)
        y = self._experts(x_ECD, lambda x, w: jnp.einsum("ECi,Eio->ECo", x, w), lambda b: b[:, None], ("expert", "act_tokens", "mlp"))
        return constrain(y, names)

    def _experts_ragged(self, x_MD, expert_M, group_sizes_E):
        E = group_sizes_E.shape[0]
        safe_e = jnp.minimum(expert_M, E - 1)
        y = self._experts(x_MD, lambda x, w: jax.lax.ragged_dot(x, w, group_sizes_E), lambda b: b[safe_e], (None, "mlp"))
        return jnp.where((expert_M < E)[:, None], y, 0)

    # -- routing ---------------------------------------------------------------------------------

    def _router_logits(self, x_GSD: jax.Array, rng) -> jax.Array:
        """float32 ``[G, S, E]``; with ``rng`` (training), jittered input and noisy logits."""
        cfg = self.cfg
        x = x_GSD.astype(jnp.float32)
        if rng is not None and cfg.jitter > 0:
            x = x * jax.random.uniform(jax.random.fold_in(rng, 0), x.shape, jnp.float32, 1 - cfg.jitter, 1 + cfg.jitter)
        if isinstance(self.router, nnx.Param):
            logits = jnp.einsum("GSD,DE->GSE", x, self.router[...].astype(jnp.float32))
        else:
            logits = self.router(x).astype(jnp.float32)
        if rng is not None and cfg.noise > 0:
            logits = logits + cfg.noise * jax.random.normal(jax.random.fold_in(rng, 1), logits.shape, jnp.float32)
        return logits

    def __call__(self, x_BLD: jax.Array, valid_BL: jax.Array | None = None, *, rng=None) -> tuple[jax.Array, LayerReport]:
        """Args: x ``[B, L, D]``; ``valid_BL`` real tokens (None: all); ``rng``: a key in
        training (jitter and noise), None otherwise. Returns ``[B, L, D]`` and the report."""
        cfg = self.cfg
        B, L, D = x_BLD.shape
        valid_BL = jnp.ones((B, L), bool) if valid_BL is None else valid_BL
        G, S = (B, L) if cfg.group == "row" else (1, B * L)
        x = x_BLD.reshape(G, S, D)
        valid = valid_BL.reshape(G, S)
        logits = self._router_logits(x, rng)
        probs = jax.nn.softmax(logits, axis=-1)
        if cfg.router == "expert_choice":
            y, assigned_E, dropped = self._expert_choice(x, probs, valid)
        else:
            y, assigned_E, dropped = self._token_choice(x, probs, valid)
        if self.shared is not None:
            s = self.shared(x)
            if self.shared_gate is not None:
                s = s * jax.nn.sigmoid(jnp.einsum("GSD,D->GS", x.astype(jnp.float32), self.shared_gate[...]))[..., None].astype(s.dtype)
            y = y + jnp.where(valid[..., None], s, 0)  # padding gets nothing from any expert
        report = self._report(logits, probs, valid, assigned_E, dropped)
        return y.reshape(B, L, D).astype(x_BLD.dtype), report

    def _choose(self, probs_GSE: jax.Array, valid_GS: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Each token's K experts ``[G, S, K]`` and their weights (0 on padding)."""
        cfg = self.cfg
        scores = probs_GSE
        if self.balance_bias is not None:
            scores = scores + jax.lax.stop_gradient(self.balance_bias[...])
        _, experts = jax.lax.top_k(scores, cfg.k)
        weights = jnp.take_along_axis(probs_GSE, experts, axis=-1)
        if cfg.normalize:
            weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
        return experts, jnp.where(valid_GS[..., None], weights, 0.0)

    def _token_choice(self, x_GSD, probs_GSE, valid_GS):
        """Token-choice routing; returns the output, assignments per expert ``[E]`` (real tokens,
        before dropping) and the dropped assignments."""
        cfg = self.cfg
        E = cfg.experts
        experts, weights = self._choose(probs_GSE, valid_GS)
        real_GSK = jnp.broadcast_to(valid_GS[..., None], experts.shape)
        assigned = jnp.sum(jax.nn.one_hot(experts, E, dtype=jnp.float32) * real_GSK[..., None], axis=(0, 1, 2))
        if cfg.dispatch == "capacity":
            scores = jnp.take_along_axis(probs_GSE, experts, axis=-1)  # score priority: the router's probability
            y, dropped = self._capacity_dispatch(x_GSD, experts, weights, real_GSK, scores)
        else:
            y, dropped = self._dropless_dispatch(x_GSD, experts, weights, real_GSK), jnp.zeros((), jnp.float32)
        return y, assigned, dropped

    def _dropless_dispatch(self, x_GSD, experts_GSK, weights_GSK, real_GSK):
        """Every assignment reaches its expert: the grouped matmul over rows sorted by expert
        (``ragged``), blocks of rows of one expert each (``blocks``), or the capacity layout with
        a capacity no expert's load exceeds (``padded``)."""
        kind = grouped_matmul_kind(self.cfg)
        if kind == "padded":
            return self._dropless_padded(x_GSD, experts_GSK, weights_GSK, real_GSK)
        if kind == "blocks":
            return self._dropless_blocks(x_GSD, experts_GSK, weights_GSK, real_GSK)
        G, S, D = x_GSD.shape
        E, K = self.cfg.experts, self.cfg.k
        N = G * S
        expert_M = jnp.where(real_GSK, experts_GSK, E).reshape(N * K)  # padding: "expert" E, sorted last
        token_M = jnp.repeat(jnp.arange(N), K)
        order = jnp.argsort(expert_M, stable=True)
        group_sizes = jnp.bincount(expert_M, length=E + 1)[:E].astype(jnp.int32)
        rows = x_GSD.reshape(N, D)[token_M[order]]
        h = self._experts_ragged(rows, expert_M[order], group_sizes)
        w = weights_GSK.reshape(N * K)[order].astype(h.dtype)
        y = jnp.zeros((N, D), h.dtype).at[token_M[order]].add(h * w[:, None])
        return y.reshape(G, S, D)

    def _dropless_blocks(self, x_GSD, experts_GSK, weights_GSK, real_GSK):
        """Each expert's assignments fill whole blocks of R rows (its last block padded with a
        zero row), and every block runs through its expert in one batched matmul ``[nb, R, D]``
        against the experts' weights gathered per block. ``nb`` is fixed by the shapes alone
        (``ceil(M / R) + E - 1`` holds any load, one expert taking every token included), so the
        cost follows the number of assignments, not the most loaded expert."""
        G, S, D = x_GSD.shape
        E, K = self.cfg.experts, self.cfg.k
        N = G * S
        R, nb = block_layout(N * K, E)
        x, experts, weights, real = (a.reshape(1, N, *a.shape[2:]) for a in (x_GSD, experts_GSK, weights_GSK, real_GSK))
        place = self._places(experts, weights, real, "position")[0]  # [N, K]: its place in the expert's rows
        experts, weights, real = experts[0], weights[0], real[0]
        counts = jnp.sum(jax.nn.one_hot(experts, E, dtype=jnp.int32) * real[..., None], axis=(0, 1))
        blocks = (counts + R - 1) // R
        ends = jnp.cumsum(blocks)
        row = jnp.where(real, (ends - blocks)[experts] * R + place, nb * R)  # padding: the spare zero row
        token = jnp.broadcast_to(jnp.arange(N)[:, None], (N, K))
        source = jnp.full((nb * R + 1,), N, jnp.int32).at[row].set(token)[: nb * R]  # N: the zero row
        block_expert = jnp.minimum(jnp.searchsorted(ends, jnp.arange(nb), side="right"), E - 1)  # unused blocks: any

        def rows_of(a):
            return jnp.concatenate([a, jnp.zeros((1, D), a.dtype)])

        h = rows_of(x[0])[source].reshape(nb, R, D)
        out = self._experts(
            h,
            lambda x, w: jnp.einsum("bri,bio->bro", x, w[block_expert]),
            lambda b: b[block_expert][:, None],
            (None, None, "mlp"),
        )
        picked = rows_of(out.reshape(nb * R, D))[row]  # [N, K, D]
        y = jnp.sum(picked * weights[..., None].astype(out.dtype), axis=1)
        return y.reshape(G, S, D)

    def _dropless_padded(self, x_GSD, experts_GSK, weights_GSK, real_GSK):
        """The whole batch as one group in the capacity layout: one batched matmul ``[E, C, D]``
        with C 1.25 times the mean load, then, for the assignments past it (an expert more
        loaded than that), passes of 0.5, 1, 2, ... times the mean load more, each run only when
        some assignment reaches it (``lax.cond``), until every token fits. Nothing is dropped;
        the cost follows the most loaded expert (each pass pads every expert to its width)."""
        G, S, D = x_GSD.shape
        E, K = self.cfg.experts, self.cfg.k
        N = G * S
        x, experts, weights, real = (a.reshape(1, N, *a.shape[2:]) for a in (x_GSD, experts_GSK, weights_GSK, real_GSK))
        place = self._places(experts, weights, real, "position")
        mean = N * K / E
        start = min(N, max(1, math.ceil(1.25 * mean)))
        y, _ = self._capacity_layout(x, experts, weights, real, place, C=start)
        step = 0.5
        while start < N:  # an expert takes each token once at most
            width = min(N - start, max(1, math.ceil(step * mean)))
            y = y + self._overflow(x, experts, weights, real & (place >= start), place - start, width)
            start, step = start + width, 2 * step
        return y.reshape(G, S, D)

    def _overflow(self, x, experts, weights, over, place, C: int):
        """The assignments ``over`` (places counted from this pass's start) in a pass of
        capacity C, run (forward and backward) only when there are any. A custom VJP keeps
        ``lax.cond`` from saving the unused branch's activations as zeros for the backward pass
        (measured: that made the untaken branch cost as much as the layer); the backward pass
        recomputes the branch."""
        graphdef, state = nnx.split(self)

        def run(state, x, weights, experts, over, place):
            return nnx.merge(graphdef, state)._capacity_layout(x, experts, weights, over, place, C=C)[0]

        def no_ints(*arrays):  # integer and boolean inputs have no cotangent
            return tuple(np.zeros(a.shape, jax.dtypes.float0) for a in arrays)

        # ``needed`` is computed from the arguments each time, not closed over: under remat the
        # forward pass is traced again, and a closed-over value would be the first trace's
        @jax.custom_vjp
        def apply(state, x, weights, experts, over, place):
            return jax.lax.cond(jnp.any(over), run, lambda *args: jnp.zeros_like(args[1]), state, x, weights, experts, over, place)

        def forward(*args):
            return apply(*args), args

        def backward(args, g):
            state, x, weights, experts, over, place = args

            def grads():
                return jax.vjp(lambda s, x, w: run(s, x, w, experts, over, place), state, x, weights)[1](g)

            cotangents = jax.lax.cond(jnp.any(over), grads, lambda: jax.tree.map(jnp.zeros_like, (state, x, weights)))
            return (*cotangents, *no_ints(experts, over, place))

        apply.defvjp(forward, backward)
        return apply(state, x, weights, experts, over, place)

    def _places(self, experts_GSK, scores_GSK, real_GSK, priority: str) -> jax.Array:
        """Each assignment's place in its expert's queue within its group ``[G, S, K]``, in the
        order of ``priority`` (``score``: higher ``scores_GSK`` first; padding takes no place)."""
        G, S, K = experts_GSK.shape
        E = self.cfg.experts

        def slot_major(a_GSK):  # [G, K*S]: every token's first choice, in position order, then the second ...
            return jnp.swapaxes(a_GSK, 1, 2).reshape(G, K * S)

        flat_e, flat_real = slot_major(experts_GSK), slot_major(real_GSK)
        if priority == "position":
            order = jnp.broadcast_to(jnp.arange(K * S), (G, K * S))
        else:  # by score, ties in the position order
            order = jnp.argsort(-slot_major(scores_GSK), axis=-1, stable=True)
        e_sorted = jnp.take_along_axis(flat_e, order, axis=-1)
        real_sorted = jnp.take_along_axis(flat_real, order, axis=-1)
        onehot = jax.nn.one_hot(e_sorted, E, dtype=jnp.int32) * real_sorted[..., None]
        place_sorted = jnp.sum((jnp.cumsum(onehot, axis=1) - 1) * onehot, axis=-1)  # [G, K*S]
        place = jnp.zeros_like(place_sorted).at[jnp.arange(G)[:, None], order].set(place_sorted)
        return jnp.swapaxes(place.reshape(G, K, S), 1, 2)

    def _capacity_dispatch(self, x_GSD, experts_GSK, weights_GSK, real_GSK, scores_GSK):
        """Each expert takes its first C assignments per group by the priority (``score``: the
        router probabilities ``scores_GSK``, before renormalisation); the rest drop."""
        place = self._places(experts_GSK, scores_GSK, real_GSK, self.cfg.priority)
        return self._capacity_layout(x_GSD, experts_GSK, weights_GSK, real_GSK, place, C=capacity(self.cfg, x_GSD.shape[1]))

    def _capacity_layout(self, x_GSD, experts_GSK, weights_GSK, real_GSK, place_GSK, *, C: int):
        """Assignments with a place below C run in one batched matmul ``[E, G*C, D]``; the output
        and the count of dropped assignments."""
        G, S, D = x_GSD.shape
        E, K = self.cfg.experts, self.cfg.k
        kept = real_GSK & (place_GSK < C)
        slot = jnp.where(kept, place_GSK, C)  # dropped and padding: a spare slot, cut off below
        g = jnp.broadcast_to(jnp.arange(G)[:, None, None], experts_GSK.shape)
        tokens = jnp.broadcast_to(x_GSD[:, :, None, :], (G, S, K, D))
        buf = jnp.zeros((G, E, C + 1, D), x_GSD.dtype).at[g, experts_GSK, slot].set(tokens)
        out = self._experts_dense(jnp.swapaxes(buf[:, :, :C], 0, 1).reshape(E, G * C, D))
        out = jnp.swapaxes(out.reshape(E, G, C, D), 0, 1)
        out = jnp.concatenate([out, jnp.zeros((G, E, 1, D), out.dtype)], axis=2)
        picked = out[g, experts_GSK, slot]  # [G, S, K, D]
        w = jnp.where(kept, weights_GSK, 0.0).astype(out.dtype)
        y = jnp.sum(picked * w[..., None], axis=2)
        dropped = jnp.sum((real_GSK & ~kept).astype(jnp.float32))
        return y, dropped

    def _expert_choice(self, x_GSD, probs_GSE, valid_GS):
        """Each expert takes its C highest-probability real tokens of the group."""
        cfg = self.cfg
        G, S, D = x_GSD.shape
        E = cfg.experts
        C = capacity(cfg, S)
        scores = jnp.where(valid_GS[..., None], probs_GSE, -1.0)
        gate, token = jax.lax.top_k(jnp.swapaxes(scores, 1, 2), C)  # [G, E, C]
        chosen_real = jnp.take_along_axis(jnp.broadcast_to(valid_GS[:, None, :], (G, E, S)), token, axis=-1)
        gate = jnp.where(chosen_real, gate, 0.0)
        g = jnp.arange(G)[:, None, None]
        rows = x_GSD[g, token]  # [G, E, C, D]
        out = self._experts_dense(jnp.swapaxes(rows, 0, 1).reshape(E, G * C, D))
        out = jnp.swapaxes(out.reshape(E, G, C, D), 0, 1)
        y = jnp.zeros((G, S, D), out.dtype).at[g, token].add(out * gate[..., None].astype(out.dtype))
        assigned = jnp.sum(chosen_real.astype(jnp.float32), axis=(0, 2))
        picked_by = jnp.zeros((G, S), jnp.float32).at[g, token].add(chosen_real.astype(jnp.float32))
        unpicked = jnp.sum(((picked_by == 0) & valid_GS).astype(jnp.float32))
        return y, assigned, unpicked

    # -- the report ------------------------------------------------------------------------------

    def _report(self, logits_GSE, probs_GSE, valid_GS, assigned_E, dropped) -> LayerReport:
        cfg = self.cfg
        E = cfg.experts
        v = valid_GS.astype(jnp.float32)
        n = jnp.maximum(jnp.sum(v), 1.0)
        total = jnp.maximum(jnp.sum(assigned_E), 1.0)
        fraction = assigned_E / total
        mean_prob = jnp.sum(probs_GSE * v[..., None], axis=(0, 1)) / n
        load_balance = E * jnp.sum(fraction * mean_prob)
        router_z = jnp.sum(jax.nn.logsumexp(logits_GSE, axis=-1) ** 2 * v) / n
        entropy = -jnp.sum(jnp.sum(probs_GSE * jnp.log(jnp.maximum(probs_GSE, 1e-30)), axis=-1) * v) / n
        # expert choice: "dropped" counts tokens no expert picked, as a fraction of tokens
        dropped_fraction = dropped / (n if cfg.router == "expert_choice" else total)
        losses = {}
        if cfg.router == "token_choice" and cfg.balance == "loss" and cfg.load_balance_weight > 0:
            losses["load_balance_loss"] = cfg.load_balance_weight * load_balance
        if cfg.z_loss_weight > 0:
            losses["router_z_loss"] = cfg.z_loss_weight * router_z
        stats = {
            "expert_fraction": fraction,
            "dropped_fraction": dropped_fraction,
            "router_entropy": entropy,
            "load_balance": load_balance,
            "router_z": router_z,
        }
        return LayerReport(losses, stats)


def update_balance_biases(model: nnx.Module, stats: dict) -> None:
    """Moves every ``balance: bias`` router's bias towards equal load (DeepSeek-V3):
    ``b_e += bias_rate * sign(1/E - f_e)``, with ``f_e`` the step's ``{name}/expert_fraction``
    (a scanned stack's layer, named ``{stack}/{layer}``, moves its ``[L, E]`` biases per layer)."""
    for _, module in nnx.iter_modules(model):
        if isinstance(module, MoE) and module.balance_bias is not None:
            if "{layer}" in module.name:
                layers = range(module.balance_bias.shape[0])
                fraction = jnp.stack([stats[f"{module.name.format(layer=i)}/expert_fraction"] for i in layers])
            else:
                fraction = stats[f"{module.name}/expert_fraction"]
            E = fraction.shape[-1]
            module.balance_bias[...] = module.balance_bias[...] + module.cfg.bias_rate * jnp.sign(1.0 / E - fraction)
