"""What the Hugging Face converters share: reading tensors by name, the head layout of linear
weights, attention projections (separate or fused q/k/v) and the output head, the weight tables
of the encoder-decoders, the routed experts of Mixture-of-Experts layers, activation names, and
the checks that a config fits a Hugging Face format."""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

import numpy as np
from einops import rearrange

from archzoo.config import to_dict
from archzoo.data.special import SpecialTokens
from archzoo.layers.config import InitConfig
from archzoo.models.config import ModelConfig, NormConfig, PositionConfig, TokenIds

__all__ = [
    "TensorReader",
    "heads_from_linear",
    "heads_to_linear",
    "out_from_linear",
    "out_to_linear",
    "qkv_from_linear",
    "qkv_to_linear",
    "fused_qkv_from_hf",
    "fused_qkv_to_hf",
    "head_from_hf",
    "head_to_hf",
    "HF_ACTIVATIONS",
    "ACTIVATION_TO_HF",
    "activation_from_hf",
    "check_expressible",
    "finish_config",
    "unsupported_fields",
    "refuse",
    "token_ids_from_hf",
    "token_ids_to_hf",
    "GENERATION_KEYS",
    "TIED",
    "ENCODER_DECODER_EMBEDDINGS",
    "shared_table",
    "read_pairs",
    "write_pairs",
    "take_shaped",
    "experts_from_hf",
    "experts_to_hf",
]

# Hugging Face activation name -> MlpConfig.activation, as the BART and T5 converters read it.
HF_ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
# The decoder converters (through activation_from_hf) also read gelu_fast.
_ACTIVATIONS = HF_ACTIVATIONS | {"gelu_fast": "gelu_tanh"}
# MlpConfig.activation -> the name GPT-2, OPT, BART and T5 write (Llama writes gelu_pytorch_tanh).
ACTIVATION_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}


# An encoder-decoder's token embedding and the names of its stacks' copies of it.
ENCODER_DECODER_EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
# Why a tied copy must equal its original (TensorReader.take_tied).
TIED = "transformers ties them, so archzoo keeps one table and would drop the other"


def refuse(model_type: str, key: str, value, why: str) -> ValueError:
    """A ValueError for a Hugging Face config value archzoo cannot represent."""
    return ValueError(f"model_type {model_type!r}: config.json has {key}={value!r}, which archzoo cannot convert ({why})")


# TokenIds field -> its config.json key.
_TOKEN_KEYS = {"bos": "bos_token_id", "eos": "eos_token_id", "pad": "pad_token_id", "decoder_start": "decoder_start_token_id"}
# The config.json keys that transformers also keeps in generation_config.json, which generate reads.
GENERATION_KEYS = (*_TOKEN_KEYS.values(), "forced_eos_token_id")


def _is_token_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def token_ids_from_hf(hf: dict, defaults: dict, model_type: str) -> TokenIds:
    """The special-token ids of a ``config.json``.

    Args:
      hf: the parsed ``config.json``.
      defaults: TokenIds field -> what the format's transformers config class has for a key
        ``hf`` lacks (None when not given).
      model_type: for the message.

    Raises:
      ValueError: naming the key whose value is not an integer, null or (eos) a list of integers.
    """
    ids = {}
    for field, key in _TOKEN_KEYS.items():
        value = hf.get(key, defaults.get(field))
        if field == "eos" and isinstance(value, list) and value and all(map(_is_token_id, value)):
            value = tuple(value)
        elif value is not None and not _is_token_id(value):
            raise refuse(model_type, key, value, "a token id is an integer or null" + (", or a list of them" if field == "eos" else ""))
        ids[field] = value
    return TokenIds(**ids)


def token_ids_to_hf(cfg: ModelConfig) -> dict:
    """The ``config.json`` keys of ``cfg.token_ids``; a model not read from Hugging Face has the
    ids archzoo's tokenizers reserve (:class:`archzoo.data.special.SpecialTokens`), its decoder
    starting from padding as in T5."""
    encoder_decoder = cfg.family == "encoder_decoder"
    reserved = SpecialTokens()
    ids = cfg.token_ids or TokenIds(reserved.bos, reserved.eos, reserved.pad, reserved.pad if encoder_decoder else None)
    out = {key: getattr(ids, field) for field, key in _TOKEN_KEYS.items()}
    out["eos_token_id"] = list(ids.eos) if isinstance(ids.eos, tuple) else ids.eos
    if ids.decoder_start is None and not encoder_decoder:
        del out["decoder_start_token_id"]
    return out


def activation_from_hf(model_type: str, key: str, name: str) -> str:
    """The archzoo activation (``MlpConfig.activation``) of a Hugging Face activation name."""
    if name not in _ACTIVATIONS:
        raise refuse(model_type, key, name, f"supported: {', '.join(sorted(_ACTIVATIONS))}")
    return _ACTIVATIONS[name]


class TensorReader:
    """Takes tensors out of a checkpoint by name and names the ones nothing took.

    Args:
      tensors: name -> array, as read from the safetensors files.
      model_type: for error messages.
      prefixes: base-model prefixes a checkpoint may use (``"transformer."``, ``""``); the first
        under which an ``anchor`` exists is used for every :meth:`take`.
      anchor: a tensor name every checkpoint of the format has (the token embedding), or several
        names of which every checkpoint has one.
    """

    def __init__(
        self, tensors: dict[str, np.ndarray], model_type: str, prefixes: tuple[str, ...], anchor: str | tuple[str, ...]
    ):
        self.tensors = tensors
        self.model_type = model_type
        self.taken: set[str] = set()
        anchors = (anchor,) if isinstance(anchor, str) else anchor
        found = [(p, a) for p in prefixes for a in anchors if p + a in tensors]
        if not found:
            raise ValueError(
                f"model_type {model_type!r}: the checkpoint has no token embedding "
                f"{' or '.join(repr(p + a) for p in prefixes for a in anchors)}; it has {sorted(tensors)[:8]}"
            )
        self.prefix, anchor = found[0]
        self.anchor = self.prefix + anchor

    def key(self, name: str, *, top: bool = False) -> str:
        """The checkpoint's name of ``name``: under the prefix, or ``name`` itself when ``top``."""
        return name if top else self.prefix + name

    def has(self, name: str, *, top: bool = False) -> bool:
        return self.key(name, top=top) in self.tensors

    def take(self, name: str, *, top: bool = False) -> np.ndarray:
        """The tensor ``prefix + name`` (``name`` itself when ``top``), marked as used."""
        key = self.key(name, top=top)
        if key not in self.tensors:
            raise ValueError(f"model_type {self.model_type!r}: the checkpoint lacks tensor {key!r}")
        self.taken.add(key)
        return self.tensors[key]

    def take_tied(self, keys: list[str], why: str) -> np.ndarray:
        """The first of ``keys`` (full names) the checkpoint has; the others it has are taken as
        copies of it.

        Raises:
          ValueError: naming both tensors when a copy holds other values (archzoo would drop
            it), with ``why`` they must be one; naming ``keys[0]`` when none is there.
        """
        present = [k for k in keys if k in self.tensors] or keys[:1]
        first = self.take(present[0], top=True)
        for key in present[1:]:
            if not np.array_equal(self.take(key, top=True), first):
                raise ValueError(f"model_type {self.model_type!r}: tensor {key!r} differs from {present[0]!r}; {why}")
        return first

    def finish(self, ignore: tuple[str, ...] = ()) -> None:
        """Raises ValueError when a tensor was not taken and matches none of the ``ignore``
        regular expressions (a checkpoint feature the converter would silently drop)."""
        left = [k for k in self.tensors if k not in self.taken and not any(re.search(p, k) for p in ignore)]
        if left:
            raise ValueError(
                f"model_type {self.model_type!r}: the checkpoint has tensors archzoo would not use: {sorted(left)[:8]}"
                + (f" and {len(left) - 8} more" if len(left) > 8 else "")
            )


def heads_from_linear(w_OD: np.ndarray, heads: int) -> np.ndarray:
    """A torch Linear weight ``[H*Dh, D]`` as an archzoo projection ``[D, H, Dh]``."""
    return rearrange(w_OD, "(H K) D -> D H K", H=heads)


def heads_to_linear(w_DHK: np.ndarray) -> np.ndarray:
    """An archzoo projection ``[D, H, Dh]`` as a torch Linear weight ``[H*Dh, D]``."""
    return rearrange(w_DHK, "D H K -> (H K) D")


def out_from_linear(w_DO: np.ndarray, heads: int) -> np.ndarray:
    """A torch output Linear weight ``[D, H*Dh]`` as an archzoo output projection ``[H, Dh, D]``."""
    return rearrange(w_DO, "D (H K) -> H K D", H=heads)


def out_to_linear(w_HKD: np.ndarray) -> np.ndarray:
    """An archzoo output projection ``[H, Dh, D]`` as a torch Linear weight ``[D, H*Dh]``."""
    return rearrange(w_HKD, "H K D -> D (H K)")


def qkv_from_linear(r: TensorReader, hf: str, az: str, heads: dict[str, int], bias: bool) -> dict[str, np.ndarray]:
    """Attention projections from separate torch Linear layers ``{hf}q_proj`` .. ``{hf}v_proj``.

    Args:
      r: the checkpoint.
      hf: Hugging Face name prefix (``"layers.0.self_attn."``).
      az: archzoo path prefix (``"stack/blocks/0/attn/"``).
      heads: projection name (``q``, ``k``, ``v``) -> its number of heads (H, or G for k and v).
      bias: whether each projection has a bias ``[heads * Dh]``.

    Returns:
      archzoo path -> array: ``{az}q [D, H, Dh]``, and ``{az}q_bias [H, Dh]`` when ``bias``.
    """
    out = {}
    for name, n in heads.items():
        out[az + name] = heads_from_linear(r.take(hf + f"{name}_proj.weight"), n)
        if bias:
            out[az + f"{name}_bias"] = r.take(hf + f"{name}_proj.bias").reshape(n, -1)
    return out


def qkv_to_linear(p: dict[str, np.ndarray], az: str, hf: str, bias: bool) -> dict[str, np.ndarray]:
    """Separate torch Linear layers ``{hf}q_proj`` .. ``{hf}v_proj`` (inverse of
    :func:`qkv_from_linear`)."""
    out = {}
    for name in ("q", "k", "v"):
        out[hf + f"{name}_proj.weight"] = heads_to_linear(p[az + name])
        if bias:
            out[hf + f"{name}_proj.bias"] = p[az + f"{name}_bias"].reshape(-1)
    return out


def fused_qkv_from_hf(r: TensorReader, hf: str, az: str, weight_axes: str, bias_axes: str, heads: int) -> dict[str, np.ndarray]:
    """Attention projections from one fused q/k/v layer ``{hf}.weight`` and ``{hf}.bias``.

    Args:
      r: the checkpoint.
      hf: Hugging Face name of the fused layer (``"h.0.attn.c_attn"``).
      az: archzoo path prefix (``"stack/blocks/0/attn/"``).
      weight_axes: the stored weight's axes in einops terms, ``S`` (q, k, v) inside the fused one:
        ``"D (S H K)"`` (GPT-2's Conv1D), ``"(H S K) D"`` (BLOOM's Linear, per head).
      bias_axes: the same for the bias: ``"(S H K)"``, ``"(H S K)"``.
      heads: H.

    Returns:
      archzoo path -> array: ``{az}q [D, H, Dh]`` .. ``{az}v``, ``{az}q_bias [H, Dh]`` .. ``{az}v_bias``.
    """
    q, k, v = rearrange(r.take(hf + ".weight"), f"{weight_axes} -> S D H K", S=3, H=heads)
    qb, kb, vb = rearrange(r.take(hf + ".bias"), f"{bias_axes} -> S H K", S=3, H=heads)
    return {az + "q": q, az + "k": k, az + "v": v, az + "q_bias": qb, az + "k_bias": kb, az + "v_bias": vb}


def fused_qkv_to_hf(p: dict[str, np.ndarray], az: str, hf: str, weight_axes: str, bias_axes: str) -> dict[str, np.ndarray]:
    """One fused q/k/v layer ``{hf}.weight``, ``{hf}.bias`` (inverse of :func:`fused_qkv_from_hf`)."""
    qkv = np.stack([p[az + "q"], p[az + "k"], p[az + "v"]])
    qkv_bias = np.stack([p[az + "q_bias"], p[az + "k_bias"], p[az + "v_bias"]])
    return {hf + ".weight": rearrange(qkv, f"S D H K -> {weight_axes}"), hf + ".bias": rearrange(qkv_bias, f"S H K -> {bias_axes}")}


def head_from_hf(r: TensorReader, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """``head/kernel [D, V]`` from the top-level ``lm_head.weight [V, D]`` when the head is
    untied; nothing when it is tied to the embedding (an ``lm_head.weight`` there must be a copy
    of the embedding)."""
    if cfg.embedding.tie:
        r.take_tied([r.anchor, "lm_head.weight"], TIED)
        return {}
    return {"head/kernel": r.take("lm_head.weight", top=True).T}


def head_to_hf(p: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """``lm_head.weight [V, D]`` when the head is untied (inverse of :func:`head_from_hf`)."""
    return {} if cfg.embedding.tie else {"lm_head.weight": p["head/kernel"].T}


def _moe_essence(cfg: ModelConfig) -> dict:
    """``cfg.moe`` as what it computes: experts, k and widths with fine-grained experts
    multiplied out, the placement as the MoE layers of each stack, and the fields the routing
    does not read (the grouped-matmul implementation, the capacity of dropless routing, ...)
    left out."""
    moe = cfg.moe
    out = to_dict(moe)
    # how the grouped matmul runs (and any of its settings), and the placement fields
    for key in ("grouped_matmul", "granularity", "every", "offset", "first_dense", "layers", "stacks"):
        out.pop(key, None)
    out |= {
        "num_experts": moe.experts,
        "top_k": moe.k,
        "d_ff": moe.expert_width(cfg.mlp.d_ff),
        "num_shared_experts": min(moe.num_shared_experts, 1),
        "shared_d_ff": moe.shared_width(cfg.mlp.d_ff),
        "placed": {s.name: [i for i in range(s.num_layers) if moe.is_moe(s.name, i)] for s in cfg.stacks},
    }
    if moe.router == "token_choice" and moe.dispatch == "dropless":
        for key in ("capacity_factor", "expert_capacity", "group", "priority"):
            del out[key]
    elif moe.expert_capacity is not None:
        del out["capacity_factor"]
    if moe.balance != "bias":
        del out["bias_rate"]
    if moe.router != "expert_choice":
        del out["allow_future_leak"]
    return out


def _essence(cfg: ModelConfig) -> dict:
    """The config's fields that change the computation, with unused and derived ones settled."""
    attention = dataclasses.replace(cfg.attention, head_dim=cfg.head_dim, num_kv_heads=cfg.attention.kv_heads, backend="xla")
    pos, default = cfg.position, PositionConfig()
    if pos.kind != "learned":
        pos = dataclasses.replace(pos, offset=default.offset)
    if pos.kind not in ("learned", "rope"):
        pos = dataclasses.replace(pos, max_len=default.max_len)
    if pos.kind != "rope":
        pos = dataclasses.replace(pos, rope_theta=default.rope_theta, rope_scaling=None)
    if pos.kind != "t5_bias":
        pos = dataclasses.replace(pos, num_buckets=default.num_buckets, max_distance=default.max_distance)
    norm = cfg.norm if cfg.norm.kind == "layernorm" else dataclasses.replace(cfg.norm, bias=NormConfig().bias)
    # how weights started changes nothing once they are trained; μP's multipliers change the forward
    init = cfg.init if cfg.init.kind == "mup" else InitConfig()
    settled = dataclasses.replace(
        cfg, name="", dtype="float32", attention=attention, position=pos, norm=norm, token_ids=None, init=init,
        remat="none", scan_layers=False,  # how the forward pass is run, not what it computes
    )
    out = to_dict(settled)
    if cfg.moe is not None:
        out["moe"] = _moe_essence(cfg)
        if all(len(layers) == s.num_layers for s, layers in zip(cfg.stacks, out["moe"]["placed"].values())):
            out["mlp"]["d_ff"] = None  # no dense MLP reads it
    return out


def _flatten(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
    return out


def check_expressible(cfg: ModelConfig, hf: dict, config_from_hf: Callable[[dict], ModelConfig], model_type: str) -> None:
    """Raises ValueError when writing ``cfg`` as ``hf`` would lose something: reading ``hf``
    back must give the same model.

    Args:
      cfg: the archzoo config being written.
      hf: the Hugging Face config written for it.
      config_from_hf: the converter's reader.
      model_type: for the message.
    """
    ours, theirs = _flatten(_essence(cfg)), _flatten(_essence(config_from_hf(hf)))
    diff = [f"{k}={ours[k]!r} (the format gives {theirs.get(k)!r})" for k in ours if ours[k] != theirs.get(k)]
    if diff:
        raise ValueError(f"model_type {model_type!r} cannot hold this config: " + "; ".join(diff))


def finish_config(cfg: ModelConfig, hf: dict, config_from_hf: Callable[[dict], ModelConfig], model_type: str) -> dict:
    """A decoder format's ``config.json``: ``hf`` with ``tie_word_embeddings``, ``dtype`` and the
    special-token ids added, once :func:`check_expressible` finds that it reads back as ``cfg``."""
    hf = hf | {"tie_word_embeddings": cfg.embedding.tie, "dtype": "float32"} | token_ids_to_hf(cfg)
    check_expressible(cfg, hf, config_from_hf, model_type)
    return hf


def unsupported_fields(cfg: ModelConfig, required: dict, format_name: str) -> list[str]:
    """One message per field of ``cfg`` whose value a format cannot express.

    Args:
      cfg: the archzoo config being written.
      required: dotted field (``"attention.bias"``) -> its one allowed value, or a tuple of them.
      format_name: for the messages (``"BART"``).

    Returns:
      ``"attention.bias=False (BART needs True)"`` for each field not allowed, in ``required``'s order.
    """
    wrong = []
    for field, allowed in required.items():
        value = cfg
        for part in field.split("."):
            value = getattr(value, part)
        allowed = allowed if isinstance(allowed, tuple) else (allowed,)
        if value not in allowed:
            wrong.append(f"{field}={value!r} ({format_name} needs {' or '.join(repr(a) for a in allowed)})")
    return wrong


def shared_table(r: TensorReader, why: str, *, head: bool) -> np.ndarray:
    """An encoder-decoder's one token embedding ``[V, D]``.

    Args:
      r: the checkpoint.
      why: the reason ``shared.weight`` and the stacks' ``embed_tokens`` must hold one table.
      head: the output head is tied to it, so a top-level ``lm_head.weight`` must hold it too.
    """
    names = [r.key(name) for name in ENCODER_DECODER_EMBEDDINGS]
    return r.take_tied(names + (["lm_head.weight"] if head else []), why)


# How a weight table's kind maps a Hugging Face array to archzoo's.
def _layout_from_hf(kind: str, w: np.ndarray, head_dim: int) -> np.ndarray:
    if kind == "linear":  # [out, in] -> [in, out]
        return w.T
    if kind == "heads_in":  # [H*Dh, D] -> [D, H, Dh]
        return w.T.reshape(w.shape[1], -1, head_dim)
    if kind == "heads_out":  # [D, H*Dh] -> [H, Dh, D]
        return w.T.reshape(-1, head_dim, w.shape[0])
    if kind == "heads_bias":  # [H*Dh] -> [H, Dh]
        return w.reshape(-1, head_dim)
    return w


def _layout_to_hf(kind: str, w: np.ndarray) -> np.ndarray:
    if kind == "linear":
        return w.T
    if kind == "heads_in":
        return heads_to_linear(w)
    if kind == "heads_out":
        return out_to_linear(w)
    if kind == "heads_bias":
        return w.reshape(-1)
    return w


def read_pairs(r: TensorReader, pairs: list[tuple[str, str, str]], head_dim: int) -> dict[str, np.ndarray]:
    """archzoo parameters from a weight table.

    Args:
      r: the checkpoint.
      pairs: (Hugging Face name under the reader's prefix, archzoo path, kind), kind one of
        ``copy``, ``linear`` (``[out, in]``), ``heads_in`` (``[H*Dh, D]``), ``heads_out``
        (``[D, H*Dh]``), ``heads_bias`` (``[H*Dh]``).
      head_dim: Dh.

    Returns:
      archzoo path -> array, in ``pairs``' order.
    """
    return {az: _layout_from_hf(kind, r.take(hf), head_dim) for hf, az, kind in pairs}


def write_pairs(params: dict[str, np.ndarray], pairs: list[tuple[str, str, str]], prefix: str = "") -> dict[str, np.ndarray]:
    """Hugging Face tensors ``prefix + name`` from a weight table (inverse of :func:`read_pairs`)."""
    return {prefix + hf: _layout_to_hf(kind, params[az]) for hf, az, kind in pairs}


def take_shaped(r: TensorReader, name: str, shape: tuple[int, ...], layout: str) -> np.ndarray:
    """The tensor ``name`` (under the reader's prefix), which must have ``shape``.

    Raises:
      ValueError: naming the tensor, its shape, the expected shape and ``layout`` (what the
        axes are: ``"[experts, d_model]"``).
    """
    w = r.take(name)
    if tuple(w.shape) != tuple(shape):
        raise ValueError(
            f"model_type {r.model_type!r}: tensor {r.key(name)!r} has shape {tuple(w.shape)}, expected {tuple(shape)} {layout}"
        )
    return w


def experts_from_hf(
    r: TensorReader,
    hf: str,
    az: str,
    names: dict[str, str],
    shape: tuple[int, int, int],
    *,
    expert: str = "{e}",
    fused: bool = True,
) -> dict[str, np.ndarray]:
    """The routed experts of one MoE layer, from per-expert torch Linear layers (what
    ``save_pretrained`` writes and Hub checkpoints hold) or from transformers 5's fused tensors
    (``gate_up_proj [E, 2F, D]``, gate rows first, and ``down_proj [E, D, F]``).

    Args:
      r: the checkpoint.
      hf: Hugging Face name of the experts module under the reader's prefix (``"layers.0.mlp.experts."``).
      az: archzoo path of the MoE layer (``"stack/blocks/0/mlp/"``).
      names: archzoo weight (``gate``, ``up``, ``down``) -> the per-expert layer's name
        (Mixtral's ``w1``, ``w3``, ``w2``).
      shape: (E, D, F).
      expert: how expert ``e`` is named under ``hf`` (``"{e}"``, Switch's ``"expert_{e}"``).
      fused: whether the format has the fused tensors (gated experts of transformers 5).

    Returns:
      ``{az}gate`` and ``{az}up`` ``[E, D, F]``, ``{az}down`` ``[E, F, D]`` (those in ``names``).

    Raises:
      ValueError: naming a missing expert tensor, or one of another shape (with the expected one).
    """
    E, D, F = shape
    if fused and r.has(hf + "gate_up_proj"):
        gate_up = take_shaped(r, hf + "gate_up_proj", (E, 2 * F, D), "[experts, 2 * expert width (gate, then up), d_model]")
        down = take_shaped(r, hf + "down_proj", (E, D, F), "[experts, d_model, expert width]")
        fused_out = {"gate": gate_up[:, :F], "up": gate_up[:, F:], "down": down}
        return {az + ours: fused_out[ours].transpose(0, 2, 1) for ours in names}
    out = {}
    for ours, theirs in names.items():
        want, layout = ((D, F), "[d_model, expert width]") if ours == "down" else ((F, D), "[expert width, d_model]")
        keys = [f"{hf}{expert.format(e=e)}.{theirs}.weight" for e in range(E)]
        out[az + ours] = np.stack([take_shaped(r, key, want, layout).T for key in keys])
    return out


def experts_to_hf(p: dict[str, np.ndarray], az: str, hf: str, names: dict[str, str], *, expert: str = "{e}") -> dict[str, np.ndarray]:
    """Per-expert torch Linear weights ``{hf}{expert}.{name}.weight`` (the layout
    ``from_pretrained`` reads; inverse of :func:`experts_from_hf`)."""
    return {
        f"{hf}{expert.format(e=e)}.{theirs}.weight": w.T for ours, theirs in names.items() for e, w in enumerate(p[az + ours])
    }
