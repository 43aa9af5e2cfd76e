"""Sharding over a named device mesh (DESIGN.md §5): JAX's SPMD partitioner does the work.

A run's ``mesh`` section names the sizes of four mesh axes (``data``, ``fsdp``, ``tensor``,
``expert``; one may be ``-1``, taking the devices left) and rules that map logical axis names to
mesh axes. Every parameter carries logical names from its creation (``("embed", "mlp")``, see
:func:`archzoo.layers.params.param`); activations are constrained at the boundaries that
matter (:func:`constrain`: embeddings, attention heads, MLP width, logits, expert dispatch).
The same model code runs on one device, on 8 simulated CPU devices, on a GPU or a TPU slice:
only the mesh changes.

Default rules (:data:`DEFAULT_RULES`), FSDP plus tensor and expert parallelism:

==============  ===========================  ==================================================
logical name    mesh axes                    what carries it
==============  ===========================  ==================================================
``embed``       ``fsdp``                     parameters' model-width dimension
``mlp``         ``tensor``                   MLP width (parameters and activations)
``heads``       ``tensor``                   query heads (parameters and activations)
``kv_heads``    ``tensor``                   key/value heads (parameters and activations)
``head_dim``    (none)
``vocab``       ``tensor``                   embedding rows, output head, logits
``expert``      ``expert``                   MoE experts (parameters and the dispatch buffer)
``layers``      (none)                       the stacked layer axis of a scanned stack
``batch``       ``data, fsdp, expert``       rows of a batch
``length``      (none)                       positions of a row
``act_embed``   (none)                       activations' model width
``act_tokens``  ``data, fsdp``               tokens in an expert's dispatch buffer
==============  ===========================  ==================================================

A mesh axis of size 1 shards nothing, so the rules serve every mesh.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from archzoo.config import ConfigError, invalid

__all__ = [
    "MESH_AXES",
    "DEFAULT_RULES",
    "MeshConfig",
    "Layout",
    "constrain",
    "per_device_attention",
    "attention_specs",
    "create_sharded",
    "check_divisible",
    "variable_shardings",
]

MESH_AXES = ("data", "fsdp", "tensor", "expert")

DEFAULT_RULES: dict[str, tuple[str, ...]] = {
    "embed": ("fsdp",),
    "mlp": ("tensor",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": (),
    "vocab": ("tensor",),
    "expert": ("expert",),
    "layers": (),
    "batch": ("data", "fsdp", "expert"),
    "length": (),
    "act_embed": (),
    "act_tokens": ("data", "fsdp"),
}


def _rule_axes(name: str, value: Any) -> tuple[str, ...]:
    """A rule's value as a tuple of mesh axes (``null`` or ``[]``: not sharded)."""
    axes = () if value is None else (value,) if isinstance(value, str) else value
    if not isinstance(axes, (list, tuple)) or not all(isinstance(a, str) for a in axes):
        raise invalid(f"mesh.rules.{name}", f"expected a mesh axis, a list of mesh axes or null, got {value!r}")
    for a in axes:
        if a not in MESH_AXES:
            close = difflib.get_close_matches(a, MESH_AXES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise invalid(f"mesh.rules.{name}", f"{a!r} is not a mesh axis ({', '.join(MESH_AXES)}){hint}")
    if len(set(axes)) != len(axes):
        raise invalid(f"mesh.rules.{name}", f"names a mesh axis twice: {list(axes)}")
    return tuple(axes)


@dataclass(frozen=True)
class MeshConfig:
    """The device mesh of a run and how logical axes map onto it.

    Attributes:
      data, fsdp, tensor, expert: the mesh axes' sizes. Their product must equal the number of
        devices (of every process together); one of them may be ``-1``, taking the rest.
        ``data`` replicates parameters and splits rows; ``fsdp`` splits rows and the
        parameters' ``embed`` dimension (gathered for each use); ``tensor`` splits heads, MLP
        width and vocabulary; ``expert`` splits an MoE layer's experts (and rows elsewhere).
      rules: overrides of :data:`DEFAULT_RULES`, logical name to a mesh axis, a list of mesh
        axes or null (replicated): ``{vocab: null, batch: [data, fsdp]}``.
    """

    data: int = 1
    fsdp: int = 1
    tensor: int = 1
    expert: int = 1
    rules: Any = None

    def __post_init__(self):
        sizes = self.sizes
        for axis, n in sizes.items():
            if not isinstance(n, int) or isinstance(n, bool) or (n < 1 and n != -1):
                raise invalid(f"mesh.{axis}", f"must be a positive integer or -1 (the devices left), got {n!r}")
        rest = [a for a, n in sizes.items() if n == -1]
        if len(rest) > 1:
            raise invalid(f"mesh.{rest[1]}", f"only one mesh axis may be -1; {' and '.join(rest)} both are")
        if self.rules is not None and not isinstance(self.rules, dict):
            raise invalid("mesh.rules", f"expected a mapping of logical axis names to mesh axes, got {self.rules!r}")
        for name, value in (self.rules or {}).items():
            if name not in DEFAULT_RULES:
                close = difflib.get_close_matches(str(name), DEFAULT_RULES, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(DEFAULT_RULES)}"
                raise invalid(f"mesh.rules.{name}", f"unknown logical axis name; {hint}")
            _rule_axes(name, value)

    @property
    def sizes(self) -> dict[str, int]:
        return {a: getattr(self, a) for a in MESH_AXES}

    def resolved_sizes(self, devices: int) -> dict[str, int]:
        """The axes' sizes with ``-1`` resolved for ``devices`` devices.

        Raises:
          ConfigError: the product differs from ``devices`` (or the known sizes do not divide it).
        """
        sizes = self.sizes
        known = math.prod(n for n in sizes.values() if n != -1)
        described = " x ".join(f"{a}={n}" for a, n in sizes.items())
        rest = [a for a, n in sizes.items() if n == -1]
        if rest:
            if devices % known:
                raise ConfigError(f"mesh: {described} cannot fill {devices} devices: the other axes' product {known} does not divide {devices}")
            sizes[rest[0]] = devices // known
        elif known != devices:
            raise ConfigError(
                f"mesh: {described} is {known} devices but {devices} are visible "
                f"({jax.default_backend()}); make the product {devices}, or set one axis to -1 to take the rest"
            )
        return sizes

    def rule_table(self) -> dict[str, tuple[str, ...]]:
        """Every logical name's mesh axes: the defaults, updated by ``rules``."""
        table = dict(DEFAULT_RULES)
        table.update({name: _rule_axes(name, value) for name, value in (self.rules or {}).items()})
        return table


@dataclass(frozen=True)
class Layout:
    """A mesh and the logical-name rules over it: what :func:`constrain` and the train step read.

    Build it with :meth:`of` from a :class:`MeshConfig`, or directly from a ``jax.sharding.Mesh``
    whose axis names are among :data:`MESH_AXES`.
    """

    mesh: jax.sharding.Mesh
    rules: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=lambda: dict(DEFAULT_RULES))

    @classmethod
    def of(cls, cfg: MeshConfig, devices=None) -> "Layout":
        """The layout of ``cfg`` over ``devices`` (default: every device of every process)."""
        devices = jax.devices() if devices is None else list(devices)
        sizes = cfg.resolved_sizes(len(devices))
        shape = tuple(sizes[a] for a in MESH_AXES)
        # Auto axes: the partitioner propagates shardings from the parameters, the batch and the
        # constraints (explicit axes would put shardings in the types of every array).
        auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
        try:  # the devices in an order that suits the interconnect, where jax knows one
            mesh = jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)
        except (ValueError, NotImplementedError):
            mesh = jax.sharding.Mesh(np.asarray(devices, dtype=object).reshape(shape), MESH_AXES, axis_types=auto)
        return cls(mesh, cfg.rule_table())

    def __hash__(self):
        return hash((self.mesh, tuple(sorted(self.rules.items()))))

    def axis_size(self, name: str | None) -> int:
        """Devices a dimension of logical name ``name`` is split over."""
        return math.prod(self.mesh.shape[a] for a in self._axes(name))

    def _axes(self, name: str | None) -> tuple[str, ...]:
        if name is None:
            return ()
        if name not in self.rules:
            raise KeyError(f"logical axis name {name!r} has no sharding rule (known: {', '.join(self.rules)})")
        return tuple(a for a in self.rules[name] if a in self.mesh.shape)

    def spec(self, names: tuple[str | None, ...], shape: tuple[int, ...] | None = None) -> PartitionSpec:
        """The partition spec of an array whose dimensions carry logical ``names``.

        A mesh axis already taken by an earlier dimension is not used again (``embed`` of an
        activation and ``batch`` may not both take ``fsdp``), and axes of size 1 are left out.
        Given the array's ``shape``, a dimension keeps only the leading axes whose product
        divides it (an activation of one row is not split; parameters are checked beforehand
        by :func:`check_divisible`).
        """
        used, parts = set(), []
        for i, name in enumerate(names):
            axes = tuple(a for a in self._axes(name) if a not in used and self.mesh.shape[a] > 1)
            if shape is not None:
                while axes and shape[i] % math.prod(self.mesh.shape[a] for a in axes):
                    axes = axes[:-1]
            used.update(axes)
            parts.append(None if not axes else axes[0] if len(axes) == 1 else axes)
        return PartitionSpec(*parts)

    def sharding(self, names: tuple[str | None, ...], shape: tuple[int, ...] | None = None) -> NamedSharding:
        return NamedSharding(self.mesh, self.spec(names, shape))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def batch_devices(self) -> int:
        """How many ways a batch's rows are split."""
        return self.axis_size("batch")

    def on_mesh(self, tree):
        """The shardings of a tree of arrays: each array's own where it lies on this mesh,
        replicated over the mesh otherwise (an array on one device)."""

        def of(a):
            s = getattr(a, "sharding", None)
            return s if isinstance(s, NamedSharding) and s.mesh == self.mesh else self.replicated

        return jax.tree.map(of, tree)

    def like_params(self, tree, params):
        """Shardings for ``tree`` (an optimizer state's shapes) that give each leaf holding a
        parameter-shaped array (Adam's moments: the parameters' tree under another key) that
        parameter's sharding, and everything else (the step count) replication."""
        by_path = {jax.tree_util.keystr(path): a for path, a in jax.tree_util.tree_leaves_with_path(params)}

        def of(path, leaf):
            key = jax.tree_util.keystr(path)
            for param_path, a in by_path.items():
                if key.endswith(param_path) and tuple(leaf.shape) == tuple(a.shape):
                    return a.sharding
            return self.replicated

        return jax.tree_util.tree_map_with_path(of, tree)

    def put_rows(self, batch: dict, axis: int) -> dict:
        """This process's rows of a batch (host arrays) as global arrays split over the
        ``batch`` mesh axes along ``axis``; with several processes, each gives its own rows and
        the global batch is their concatenation in process order."""
        out = {}
        for key, value in batch.items():
            names = [None] * value.ndim
            names[axis] = "batch"
            out[key] = jax.make_array_from_process_local_data(self.sharding(tuple(names)), np.asarray(value))
        return out

    def check_rows(self, rows: int, key: str, processes: int = 1) -> None:
        """Refuses a batch of ``rows`` rows (config ``key``) that the mesh's batch axes, or the
        ``processes`` feeding them, do not split evenly.

        Raises:
          ConfigError: naming the key, the axes and the multiple that would do.
        """
        split = self.batch_devices
        if rows % split == 0 and rows % processes == 0:
            return
        axes = " x ".join(f"{a}={self.mesh.shape[a]}" for a in self._axes("batch") if self.mesh.shape[a] > 1)
        by = f"the mesh's batch axes ({axes} = {split} ways)" if split > 1 else ""
        if processes > 1:
            by = f"{by} and {processes} processes" if by else f"{processes} processes"
        raise ConfigError(f"{key}={rows} rows cannot be split evenly over {by}; make it a multiple of {math.lcm(split, processes)}")

    @contextlib.contextmanager
    def active(self):
        """Makes this layout the one :func:`constrain` uses while tracing (the train step enters
        it around its body)."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)


_ACTIVE: contextvars.ContextVar[Layout | None] = contextvars.ContextVar("archzoo_layout", default=None)


def active_layout() -> Layout | None:
    """The :class:`Layout` active (``with layout.active():``) around this trace, or None."""
    return _ACTIVE.get()


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
    """``x`` constrained to the sharding its dimensions' logical ``names`` map to under the
    active :class:`Layout`; ``x`` itself when none is active (one device, generation, tests)."""
    layout = _ACTIVE.get()
    if layout is None:
        return x
    assert len(names) == x.ndim, (names, x.shape)
    return jax.lax.with_sharding_constraint(x, layout.sharding(names, x.shape))


def attention_specs(layout: Layout, q_shape, k_shape) -> tuple[PartitionSpec, PartitionSpec]:
    """The partition specs of queries ``[B, Q, H, Dh]`` and of keys and values ``[B, K, G, Dh]``
    that split rows over the layout's ``batch`` axes and heads over its ``heads`` axes, never
    positions or head width (each device attends its rows in full).

    Query heads are split only where the key/value heads are split alike (a device keeps the
    key/value heads of its query heads), or where there is one key/value head, which every
    device keeps.
    """
    q = layout.spec(("batch", "length", "heads", "head_dim"), tuple(q_shape))
    kv = layout.spec(("batch", "length", "kv_heads", "head_dim"), tuple(k_shape))
    rows, heads, kv_heads = q[0], q[2], kv[2]
    if heads != kv_heads and k_shape[2] != 1:
        heads = kv_heads = None
    return PartitionSpec(rows, None, heads, None), PartitionSpec(rows, None, kv_heads, None)


def per_device_attention(kernel: Callable, q_BQHD: jax.Array, k_BKGD: jax.Array, v_BKGD: jax.Array, *extras):
    """``kernel(q, k, v, *arrays)`` (``[B, Q, H, Dh]`` out) run on each device's own rows and
    heads under an active :class:`Layout` of several devices (``jax.shard_map`` over its
    ``batch`` and ``heads`` axes, :func:`attention_specs`); called as it is otherwise.

    For the attention kernels the partitioner cannot split (a Pallas call, an FFI custom call):
    it would gather every query, key and value onto each device and repeat the whole attention
    there. Gradients flow through: shard_map's transpose sums an input's cotangent over the mesh
    axes that do not split it (one key/value head shared by split query heads, a bias broadcast
    over rows).

    Args:
      kernel: the attention of the rows and heads at hand.
      q_BQHD, k_BKGD, v_BKGD: queries, keys and values.
      *extras: ``(array, dims)`` pairs: ``dims`` names each dimension of ``array``, ``"B"``
        rows and ``"H"`` query heads split like the queries', any other letter kept whole, as
        is a dimension of size 1 (broadcast).
    """
    arrays = [a for a, _ in extras]
    layout = active_layout()
    if layout is None or layout.mesh.size == 1:
        return kernel(q_BQHD, k_BKGD, v_BKGD, *arrays)
    q_spec, kv_spec = attention_specs(layout, q_BQHD.shape, k_BKGD.shape)
    split = {"B": q_spec[0], "H": q_spec[2]}
    specs = [PartitionSpec(*(split.get(d) if n != 1 else None for d, n in zip(dims, a.shape, strict=True))) for a, dims in extras]
    sharded = jax.shard_map(kernel, mesh=layout.mesh, in_specs=(q_spec, kv_spec, kv_spec, *specs), out_specs=q_spec, check_vma=False)
    return sharded(q_BQHD, k_BKGD, v_BKGD, *arrays)


def _is_variable(x) -> bool:
    from flax import nnx

    return isinstance(x, nnx.Variable)


def _names(v, ndim: int) -> tuple[str | None, ...]:
    names = v.get_metadata().get("out_sharding") if hasattr(v, "get_metadata") else None
    return tuple(names) if names else (None,) * ndim


def check_divisible(state, layout: Layout) -> None:
    """Refuses a parameter whose dimension the mesh axes of its logical name do not divide.

    Raises:
      ConfigError: naming the parameter, its shape, the dimension, its logical name and the
        mesh axes (an MoE layer's experts also name ``moe.experts``).
    """
    for path, v in jax.tree_util.tree_leaves_with_path(state, is_leaf=_is_variable):
        shape = tuple(v.shape)
        for dim, (n, name) in enumerate(zip(shape, _names(v, len(shape)))):
            axes = [a for a in layout._axes(name) if layout.mesh.shape[a] > 1]
            split = math.prod(layout.mesh.shape[a] for a in axes)
            if split > 1 and n % split:
                where = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
                mesh = " x ".join(f"{a}={layout.mesh.shape[a]}" for a in axes)
                hint = " (moe.num_experts must be a multiple of mesh.expert)" if name == "expert" else ""
                raise ConfigError(
                    f"mesh: parameter {where} of shape {shape}: dimension {dim} ({name}) has {n}, not divisible by "
                    f"mesh {mesh}{hint}; change the model's size, the mesh, or mesh.rules.{name}"
                )


def variable_shardings(state, layout: Layout):
    """A tree like ``state`` (an ``nnx.State``) holding each variable's ``NamedSharding``."""
    return jax.tree.map(lambda v: v.replace(layout.sharding(_names(v, v.ndim))), state, is_leaf=_is_variable)


def create_sharded(make: Callable[[], Any], layout: Layout):
    """Builds the NNX module ``make()`` with every variable created sharded on ``layout``.

    The initialisation runs inside one ``jax.jit`` whose outputs carry the variables'
    shardings, so each device computes only its own shards: the full model is never
    materialised on one device.

    Raises:
      ConfigError: a parameter's dimension the mesh does not divide (:func:`check_divisible`).
    """
    from flax import nnx

    abstract = nnx.eval_shape(make)
    graphdef, state = nnx.split(abstract)
    check_divisible(state, layout)
    shardings = variable_shardings(state, layout)

    state = jax.jit(lambda: nnx.split(make())[1], out_shardings=shardings)()
    return nnx.merge(graphdef, state)
