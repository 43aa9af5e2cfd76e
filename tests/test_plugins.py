"""A researcher's own mask, objective and layers, named by import path, serve every family as the
built-ins do: each plug-in here mirrors a built-in and must give its numbers, a user objective
reaches every family through the same feature converters, a run directory records the plug-ins
and notices a changed one, and every way a plug-in can be wrong gets one clear line."""

import json
import sys
import textwrap
from collections import Counter
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import archzoo
from archzoo import masks
from archzoo.config import ConfigError, load_yaml, from_dict, to_dict
from archzoo.data import SpecialTokens
from archzoo.features.pipeline import auto_chunk_len, chunk_documents, validation_batches
from archzoo.models import ModelConfig
from archzoo.objectives import ObjectiveConfig, build_objective

ROOT = Path(__file__).resolve().parents[1]
SPECIAL = SpecialTokens()
TINY = dict(vocab_size=64, d_model=32, num_layers=2, attention={"num_heads": 4}, mlp={"d_ff": 64}, position={"kind": "none"})

# The test plug-ins: each mirrors a built-in (so its numbers can be checked) or breaks one rule.
PLUGINS = '''
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from archzoo import masks
from archzoo.layers.params import dense_init, ones, param
from archzoo.layers.positions import alibi_bias, alibi_slopes
from archzoo.objectives import Example


def local(q, k, radius: int = 1):
    return jnp.abs(q.positions - k.positions) <= radius


def later_only(q, k):
    return k.positions > q.positions


def not_bool(q, k):
    return q.positions - k.positions


def wrong_shape(q, k):
    return jnp.ones((3, 3), bool)


def raises(q, k):
    raise RuntimeError("no facts for me")


def segment_two_sees_ahead(q, k):
    return (k.positions <= q.positions) | (q.segment_ids == 2)


def one_arg(q):
    return q.positions >= 0


class MyRmsNorm(nnx.Module):
    def __init__(self, cfg, d_model, *, rngs):
        self.eps = cfg.eps
        self.scale = param(rngs, ones, (d_model,), ("embed",), width_role="input")

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + self.eps) * self.scale[...]
        return y.astype(x.dtype)


class MyAlibi(nnx.Module):
    def __init__(self, cfg, num_heads, *, bidirectional, rngs, scale: float = 1.0):
        self.slopes = tuple(float(s) for s in alibi_slopes(num_heads))
        self.scale = scale

    def __call__(self, q_positions, k_positions):
        return self.scale * alibi_bias(jnp.asarray(self.slopes), q_positions, k_positions)


class MyRouter(nnx.Module):
    def __init__(self, cfg, d_model, *, rngs, init_std=None):
        self.w = param(rngs, dense_init(d_model, init_std), (d_model, cfg.experts), ("embed", None), width_role="hidden")

    def __call__(self, x):
        return x @ self.w[...]


class NoAxes(nnx.Module):
    def __init__(self, cfg, d_model, *, rngs, init_std=None, out_std=None):
        self.w = nnx.Param(jnp.zeros((d_model, d_model)))

    def __call__(self, x):
        return x @ self.w[...]


class WrongWidth(nnx.Module):
    def __init__(self, cfg, d_model, *, rngs, init_std=None, out_std=None):
        self.w = param(rngs, dense_init(d_model), (d_model, cfg.d_ff), ("embed", "mlp"), width_role="hidden")

    def __call__(self, x):
        return x @ self.w[...]


class Float32Out(nnx.Module):
    def __init__(self, cfg, d_model, *, rngs, init_std=None, out_std=None):
        self.w = param(rngs, dense_init(d_model, init_std * 0.5), (d_model, d_model), ("embed", "mlp"), width_role="hidden")

    def __call__(self, x):
        return x.astype(jnp.float32) @ self.w[...]


class FewArgs(nnx.Module):
    def __init__(self, cfg, *, rngs):
        pass


@dataclass(frozen=True)
class TailConfig:
    growth: ClassVar = (1, 1.0)
    keep: int = 4


def tail_lm(tokens, rng, cfg: TailConfig, special, *, ends_document=True):
    text = np.asarray(tokens, np.int32)
    cut = max(1, len(text) - cfg.keep)
    targets = np.append(text[cut:], np.int32(special.eos)) if ends_document else text[cut:]
    return Example(inputs=text[:cut], targets=targets)


def not_an_example(tokens, rng, cfg: TailConfig, special, *, ends_document=True):
    return tokens


@dataclass(frozen=True)
class RateConfig:
    rate: float


def needs_rate(tokens, rng, cfg: RateConfig, special, *, ends_document=True):
    return Example(inputs=[], targets=tokens)


@dataclass
class LooseConfig:
    keep: int = 1


def loose(tokens, rng, cfg: LooseConfig, special, *, ends_document=True):
    return Example(inputs=[], targets=tokens)


@dataclass(frozen=True)
class MaskedConfig:
    every: int = 3


def every_third(tokens, rng, cfg: MaskedConfig, special, *, ends_document=True):
    text = np.asarray(tokens, np.int32)
    at = np.arange(0, len(text), cfg.every)
    corrupted = text.copy()
    corrupted[at] = special.mask
    return Example(inputs=corrupted, targets=text[at], target_positions=at)


def named(q, k, name: str = "a", fn: int = 1):
    return (k.positions <= q.positions) & (fn > 0)


def unannotated(tokens, rng, cfg, special, *, ends_document=True):
    return None
'''


@pytest.fixture(scope="module", autouse=True)
def plugins_on_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "az_test_plugins.py").write_text(PLUGINS)
    sys.path.insert(0, str(folder))
    sys.path.insert(0, str(ROOT / "examples" / "plugins"))
    yield folder
    sys.path.remove(str(folder))
    sys.path.remove(str(ROOT / "examples" / "plugins"))


def tokens_and_facts():
    """Two packed rows with padding, a prefix in the first."""
    seg = np.array([[1, 1, 1, 1, 1, 2, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1, 2, 2, 0]])
    is_input = np.zeros_like(seg, bool)
    is_input[0, :2] = True
    tokens = (np.arange(20).reshape(2, 10) * 7) % 50 + 10
    return tokens, archzoo.facts(segment_ids=seg, is_input=is_input)


def logits(model, tokens, facts, **kw):
    return np.asarray(model(tokens, facts, **kw))


# -- masks ---------------------------------------------------------------------------------------


def test_the_predicate_docstring_example_and_a_brute_force_loop():
    f = masks.facts(segment_ids=np.ones((1, 6), np.int32))
    chunked = masks.predicate(lambda q, k, size: q.positions // size == k.positions // size, size=2)
    expected = np.array(
        [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 1, 1]]
    )
    np.testing.assert_array_equal(np.asarray((chunked(f) & masks.causal(f)).dense())[0, 0], expected)
    _, g = tokens_and_facts()
    mask = ~chunked(g) | masks.same_segment(g)
    seg, pos = np.asarray(g.segment_ids), np.asarray(g.positions)
    brute = [[[not (pos[b, q] // 2 == pos[b, k] // 2) or seg[b, q] == seg[b, k] for k in range(10)] for q in range(10)] for b in range(2)]
    np.testing.assert_array_equal(np.asarray(mask.allowed()), np.array(brute))


def test_masks_of_one_predicate_compare_equal_and_jit_does_not_recompile():
    _, f = tokens_and_facts()

    def chunk(q, k, size):
        return q.positions // size == k.positions // size

    dense = jax.jit(lambda m: m.dense())
    a = masks.predicate(chunk, size=3)(f) & masks.causal(f)
    b = masks.predicate(chunk, size=3)(f) & masks.causal(f)
    assert a.expr == b.expr and hash(a.expr) == hash(b.expr)
    dense(a), dense(b)
    assert dense._cache_size() == 1
    assert masks.predicate(chunk, size=3)(f).expr != masks.predicate(chunk, size=4)(f).expr
    # tiles: never empty where a cell is allowed, never full where one is masked
    tiles, allowed = np.asarray(a.tiles(4, 4)), np.asarray(a.allowed())
    exact = np.asarray(a.tiles(4, 4, exact=True))
    assert not np.any((tiles == masks.TILE_EMPTY) & (exact != masks.TILE_EMPTY)) and allowed.any()
    assert not np.any((tiles == masks.TILE_FULL) & (exact != masks.TILE_FULL))


def test_a_decoder_with_a_mask_plugin_equals_the_same_mask_passed_by_hand_and_decodes_with_its_cache():
    tokens, f = tokens_and_facts()
    cfg = archzoo.load_model_config(TINY, mask={"path": "zoo_plugins.masks:chunked_causal", "size": 3})
    model, base = archzoo.build(cfg, seed=1), archzoo.build(ModelConfig(**{**TINY, "attention": cfg.attention, "mlp": cfg.mlp, "position": cfg.position}), seed=1)
    by_hand = masks.predicate(lambda q, k: q.positions // 3 == k.positions // 3)(f) & masks.causal(f) & masks.same_segment(f)
    np.testing.assert_allclose(logits(model, tokens, f), logits(base, tokens, f, mask=by_hand), rtol=1e-6, atol=1e-6)
    assert not np.allclose(logits(model, tokens, f), logits(base, tokens, f), atol=1e-3)  # not the causal mask
    # generation: the cached decode step reads the same mask over the cache's slots
    new = [int(t) for t in archzoo.generate(model, [[11, 12, 13, 14]], max_new_tokens=5).tokens[0]]
    row = [11, 12, 13, 14] + new
    full = logits(model, np.array([row]), archzoo.facts(segment_ids=np.ones((1, len(row)), np.int32)))[0]
    assert new == [int(np.argmax(full[i])) for i in range(3, len(row) - 1)]


def test_an_encoder_mask_plugin_serves_the_encoder_and_the_encoder_decoder():
    tokens, f = tokens_and_facts()
    by_hand = masks.predicate(lambda q, k: abs(q.positions - k.positions) <= 2)(f) & masks.same_segment(f)
    cfg = archzoo.load_model_config(TINY, family="encoder", encoder_mask={"path": "az_test_plugins:local", "radius": 2})
    model = archzoo.build(cfg, seed=0)
    plain = archzoo.build(cfg.replace(encoder_mask="full"), seed=0)
    np.testing.assert_allclose(logits(model, tokens, f), logits(plain, tokens, f, mask=by_hand), rtol=1e-6, atol=1e-6)
    ed = archzoo.load_model_config(TINY, family="encoder_decoder", encoder_mask="az_test_plugins:local")
    assert ed.encoder_mask.kwargs == {"radius": 1} and archzoo.build(ed) is not None  # the default, written out


# -- layers: each plug-in mirrors a built-in ---------------------------------------------------


def copy_params(src, dst, rename=lambda path: path):
    state = {rename(path): v for path, v in nnx.to_flat_state(nnx.state(src, nnx.Param))}
    target = nnx.state(dst, nnx.Param)
    flat = dict(nnx.to_flat_state(target))
    assert set(flat) == set(state), sorted(set(flat) ^ set(state))[:4]
    for path, variable in flat.items():
        variable.set_value(state[path].get_value())
    nnx.update(dst, target)


@pytest.mark.parametrize(
    "builtin, plugin",
    [
        ({"mlp": {"d_ff": 64, "gated": True, "activation": "relu", "bias": False}}, {"mlp": {"kind": "zoo_plugins.layers:ReGLU", "d_ff": 64}}),
        ({"norm": {"kind": "rmsnorm"}}, {"norm": {"kind": "az_test_plugins:MyRmsNorm"}}),
        ({"position": {"kind": "alibi"}}, {"position": {"kind": {"path": "az_test_plugins:MyAlibi", "scale": 1.0}}}),
    ],
    ids=["reglu-mlp", "rmsnorm", "alibi"],
)
def test_a_layer_plugin_gives_the_numbers_of_the_builtin_it_mirrors(builtin, plugin):
    tokens, f = tokens_and_facts()
    a = archzoo.build(archzoo.load_model_config(TINY, **builtin), seed=0)
    b = archzoo.build(archzoo.load_model_config(TINY, **plugin), seed=3)
    copy_params(a, b)
    np.testing.assert_allclose(logits(b, tokens, f), logits(a, tokens, f), rtol=1e-6, atol=1e-6)


def test_a_router_plugin_gives_the_linear_routers_numbers():
    tokens, f = tokens_and_facts()
    moe = {"num_experts": 4, "top_k": 2}
    a = archzoo.build(archzoo.load_model_config(TINY, moe=moe), seed=0)
    b = archzoo.build(archzoo.load_model_config(TINY, moe={**moe, "router_logits": "az_test_plugins:MyRouter"}), seed=3)
    copy_params(a, b, rename=lambda path: path + ("w",) if path[-1] == "router" else path)
    out_a, out_b = a.forward(tokens, f), b.forward(tokens, f)
    np.testing.assert_allclose(np.asarray(out_b.logits), np.asarray(out_a.logits), rtol=1e-6, atol=1e-6)
    loads = [k for k in out_a.stats if k.endswith("expert_fraction")]
    assert loads and all(np.allclose(out_a.stats[k], out_b.stats[k]) for k in loads)


def test_flops_count_a_plugin_mlp_by_its_matrices():
    from archzoo.train.flops import forward_flops_per_token

    reglu = archzoo.load_model_config(TINY, mlp={"kind": "zoo_plugins.layers:ReGLU", "d_ff": 64})
    gated = archzoo.load_model_config(TINY, mlp={"d_ff": 64, "gated": True, "activation": "relu", "bias": False})
    assert forward_flops_per_token(reglu, stream="decoder", context=16) == forward_flops_per_token(gated, stream="decoder", context=16)


# -- objectives ----------------------------------------------------------------------------------


def weighted_targets(batches, family):
    """Every packed example's weighted target tokens, as a multiset of sequences."""
    found = Counter()
    for batch in batches:
        seg, w, t = batch["decoder_segment_ids"], batch["decoder_weights"], batch["decoder_targets"]
        for row in range(seg.shape[0]):
            for s in np.unique(seg[row]):
                if s:
                    here = (seg[row] == s) & (w[row] > 0)
                    found[tuple(t[row][here].tolist())] += 1
    return found


def test_a_plugin_objective_gives_every_family_the_same_targets():
    docs, start = [], SPECIAL.count
    for n in (9, 20, 33, 7, 41):
        docs.append(np.arange(start, start + n, dtype=np.int32))
        start += n
    cfg = from_dict(ObjectiveConfig, {"name": {"path": "az_test_plugins:tail_lm", "keep": 3}})
    assert cfg.selected.keep == 3 and cfg.label == "az_test_plugins:tail_lm"
    fn = build_objective(cfg, SPECIAL)
    chunks = chunk_documents(docs, auto_chunk_len(cfg.name, 24))
    expected = Counter(tuple(fn(c, None, ends_document=e).targets.tolist()) for c, e in zip(chunks.tokens, chunks.ends_document))
    lengths = {"decoder": {"decoder": 24}, "encoder_decoder": {"encoder": 24, "decoder": 24}}
    for family in ("decoder", "encoder_decoder"):
        assert weighted_targets(validation_batches(chunks, fn, family, lengths[family], 2, SPECIAL.pad, 0, None), family) == expected


def test_objective_settings_are_checked_like_builtin_ones(tmp_path):
    path = tmp_path / "o.yaml"
    path.write_text("name:\n  path: az_test_plugins:tail_lm\n  keeep: 3\n")
    with pytest.raises(ConfigError, match=r"o.yaml, line 3: unknown key 'name.keeep'.*did you mean 'name.keep'"):
        from_dict(ObjectiveConfig, load_yaml(path))
    with pytest.raises(ConfigError, match="name.keep: expected an integer"):
        from_dict(ObjectiveConfig, {"name": {"path": "az_test_plugins:tail_lm", "keep": "many"}})
    with pytest.raises(ConfigError, match="annotate its cfg parameter with its own config dataclass"):
        from_dict(ObjectiveConfig, {"name": "az_test_plugins:unannotated"})
    with pytest.raises(ConfigError, match=r"wrong signature \(q\): an objective is fn\(tokens, rng, cfg, special, \*, ends_document\) -> Example; it lacks tokens, rng"):
        from_dict(ObjectiveConfig, {"name": "az_test_plugins:one_arg"})
    back = to_dict(from_dict(ObjectiveConfig, {"name": {"path": "az_test_plugins:tail_lm", "keep": 3}}))["name"]
    assert back == {"path": "az_test_plugins:tail_lm", "keep": 3}


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"mask": "az_test_plugin:local"}, r"mask: no module named 'az_test_plugin' \(from 'az_test_plugin:local'\); put the folder"),
        ({"mask": "az_test_plugins:locl"}, r"mask: az_test_plugins \(.*az_test_plugins.py\) has no attribute 'locl'; did you mean 'local'\?"),
        ({"mask": "az_test_plugins.local"}, r"mask: 'az_test_plugins.local' is not one of 'causal', 'prefix'.*or a mask of your own as 'package.module:attribute'"),
        ({"mask": "az_test_plugins:one_arg"}, r"mask: az_test_plugins:one_arg has the wrong signature \(q\)"),
        ({"mask": "az_test_plugins:later_only"}, r"mask: az_test_plugins:later_only lets the query at position 0 see the later key at position 1 \(in an example of 40 tokens with a prefix of 0, on a probe row\)"),
        ({"mask": "az_test_plugins:not_bool"}, r"mask: az_test_plugins:not_bool fails on probe rows of 40 tokens.*must return a bool array.*int32"),
        ({"mask": "az_test_plugins:wrong_shape"}, r"mask: .*wrong_shape fails on probe rows.*returned shape \(3, 3\).*\(3, 40, 40\)"),
        ({"mask": "az_test_plugins:raises"}, r"mask: az_test_plugins:raises fails on probe rows of 40 tokens: RuntimeError: no facts for me"),
        ({"family": "decoder", "encoder_mask": "az_test_plugins:local"}, r"encoder_mask: a decoder has no encoder"),
        ({"mlp": {"kind": "az_test_plugins:local"}}, r"mlp.kind: az_test_plugins:local is a function, not a class"),
        ({"mlp": {"kind": {"scale": 2.0}}}, r"mlp.kind: expected an MLP plug-in: a path 'package.module:attribute', or a mapping with its path and options"),
        ({"mask": "az_test_plugins:segment_two_sees_ahead"}, r"lets the query at position 0 see the later key at position 1 \(in an example of 9 tokens with a prefix of 0"),
        ({"mlp": {"kind": "az_test_plugins:Float32Out"}, "dtype": "bfloat16"}, r"mlp.kind: az_test_plugins:Float32Out returns dtype float32 for inputs of bfloat16"),
        ({"mlp": {"kind": "az_test_plugins:FewArgs"}}, r"mlp.kind: .*FewArgs.__init__ has the wrong signature.*it lacks d_model, init_std, out_std"),
        ({"mlp": {"kind": "az_test_plugins:NoAxes"}}, r"mlp.kind: az_test_plugins:NoAxes: parameter w \(32, 32\) has no logical axis names"),
        ({"mlp": {"kind": "az_test_plugins:WrongWidth"}}, r"mlp.kind: az_test_plugins:WrongWidth returns shape \(2, 3, 256\).*its protocol returns \(2, 3, 32\)"),
        ({"position": {"kind": {"path": "az_test_plugins:MyAlibi", "scael": 2.0}}}, r"unknown option 'position.kind.scael' of az_test_plugins:MyAlibi; did you mean position.kind.scale\?"),
        ({"position": {"kind": {"path": "az_test_plugins:MyAlibi", "scale": "big"}}}, r"position.kind.scale: expected a number, got 'big'"),
        ({"mlp": {"kind": "zoo_plugins.layers:ReGLU"}, "moe": {"num_experts": 4}}, r"mlp.kind: zoo_plugins.layers:ReGLU is a dense MLP; an MoE model's experts"),
    ],
)
def test_a_wrong_plugin_gets_one_line_naming_the_key(fields, message):
    with pytest.raises(ConfigError, match=message) as e:
        archzoo.load_model_config({**TINY, **fields})
    assert "\n" not in str(e.value)


def test_a_plugin_error_in_a_yaml_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("d_model: 32\nmask:\n  path: az_test_plugins:local\n  radius: 2\n")
    with pytest.raises(ConfigError, match=r"m.yaml, line 2: mask: az_test_plugins:local\(radius=2\) lets the query"):
        archzoo.load_model_config(path)
    path.write_text("d_model: 32\nmask:\n  path: az_test_plugins:local\n  raduis: 2\n")
    with pytest.raises(ConfigError, match=r"m.yaml, line 4: unknown option 'mask.raduis'.*did you mean mask.radius\?"):
        archzoo.load_model_config(path)


# -- runs ----------------------------------------------------------------------------------------


def run_config(tmp_path, plugin_file) -> Path:
    from tests.train.test_runs import corpus

    (tmp_path / "mine").mkdir(exist_ok=True)
    (tmp_path / "mine" / "my_masks.py").write_text(plugin_file)
    path = tmp_path / "exp" / "run.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        textwrap.dedent(f"""
        name: r
        out_dir: {tmp_path / 'runs'}
        plugin_paths: [../mine]
        model: {{vocab_size: 400, d_model: 32, num_layers: 1, attention: {{num_heads: 2}}, mlp: {{d_ff: 64}}, position: {{max_len: 32}},
                mask: {{path: "my_masks:chunked_causal", size: 4}}}}
        data: {{source: {corpus(tmp_path)}, text_documents: blank_lines, validation_fraction: 0.1, tokenizer: {{vocab_size: 400, cache_dir: {tmp_path / 'tok'}}}}}
        objective: {{name: causal_lm}}
        budget: {{kind: steps, value: 2}}
        train: {{batch_size: 2, seq_len: 32, eval_every: 2, eval_examples: 4, checkpoint_every: 1, progress: false}}
        """)
    )
    return path


MINE = """
from archzoo import masks

def chunk(q, k, size):
    return q.positions // size == k.positions // size

def chunked_causal(q, k=None, size=4):
    return masks.predicate(chunk, size=size)(q, k) & masks.causal(q, k)
"""


def test_a_run_records_its_plugins_and_refuses_to_resume_when_one_changed(tmp_path, capsys):
    import yaml

    from archzoo.cli import main

    path = run_config(tmp_path, MINE)
    assert main(["run", str(path), "--no-progress"]) == 0
    run_dir = tmp_path / "runs" / "r"
    record = yaml.safe_load((run_dir / "config.yaml").read_text())
    mine = tmp_path / "mine" / "my_masks.py"
    import hashlib

    assert record["plugins"]["model.mask"] == {
        "path": "my_masks:chunked_causal", "file": str(mine), "sha256": hashlib.sha256(mine.read_bytes()).hexdigest()
    }
    assert record["plugin_paths"] == [str(tmp_path / "mine")]
    assert json.loads((run_dir / "run.json").read_text())["facts"]["mask"] == {"path": "my_masks:chunked_causal", "size": 4}
    capsys.readouterr()
    mine.write_text(MINE + "\n# changed\n")
    assert main(["run", str(path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "a plug-in changed since this run was trained (model.mask: my_masks:chunked_causal" in err and "--allow-plugin-change" in err
    assert main(["run", str(path), "--no-progress", "--allow-plugin-change"]) == 0
    now = yaml.safe_load((run_dir / "config.yaml").read_text())["plugins"]["model.mask"]["sha256"]
    assert now == hashlib.sha256(mine.read_bytes()).hexdigest() != record["plugins"]["model.mask"]["sha256"]
    assert [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_plugin_paths_must_be_folders(tmp_path):
    from archzoo.train.config import load_run_configs

    path = tmp_path / "r.yaml"
    path.write_text("plugin_paths: [nowhere]\n")
    with pytest.raises(ConfigError, match=r"r.yaml, line 1: plugin_paths: 'nowhere' is not a folder"):
        load_run_configs(path)


def test_a_plugin_given_in_python_is_the_plugin_and_a_wrong_choice_is_refused():
    from archzoo.layers.config import MlpConfig

    cfg = ModelConfig(d_model=32, mlp=MlpConfig(kind="zoo_plugins.layers:ReGLU", d_ff=64), mask="zoo_plugins.masks:chunked_causal")
    assert str(cfg.mlp.kind) == "zoo_plugins.layers:ReGLU" and cfg.mask.kwargs == {"size": 4}  # the default, written out
    assert type(archzoo.build(cfg).stack.blocks[0].mlp).__name__ == "ReGLU"
    with pytest.raises(ConfigError, match="mask: az_test_plugins:later_only lets the query"):
        cfg.replace(mask="az_test_plugins:later_only")
    with pytest.raises(ConfigError, match=r"mask: 'prefx' is not one of 'causal', 'prefix' \(did you mean 'prefix'\?\)"):
        ModelConfig(mask="prefx")
    # options named like masks.predicate's own parameters are the plug-in's
    named = archzoo.load_model_config(TINY, mask={"path": "az_test_plugins:named", "name": "b", "fn": 2})
    assert named.mask.kwargs == {"name": "b", "fn": 2} and archzoo.build(named) is not None
    assert archzoo.load_model_config(TINY, mask="zoo_plugins.masks:chunked_causal") == archzoo.load_model_config(
        TINY, mask={"path": "zoo_plugins.masks:chunked_causal", "size": 4}
    )


def test_the_size_ladder_counts_a_plugin_mlp_as_it_is_built():
    from archzoo.models.ladder import LadderConfig, size_model

    cfg = size_model(archzoo.load_model_config(vocab_size=512, mlp={"kind": "zoo_plugins.layers:ReGLU"}), LadderConfig(non_embedding=200_000))
    assert abs(archzoo.count_params(cfg).non_embedding - 200_000) <= 0.02 * 200_000


def test_objective_mistakes_are_named_when_the_config_loads():
    with pytest.raises(ConfigError, match=r"name: az_test_plugins:needs_rate needs the setting\(s\) rate \(no default in RateConfig\)"):
        from_dict(ObjectiveConfig, {"name": "az_test_plugins:needs_rate"})
    with pytest.raises(ConfigError, match="must be frozen"):
        from_dict(ObjectiveConfig, {"name": "az_test_plugins:loose"})
    with pytest.raises(ConfigError, match=r"not_an_example fails on a probe chunk of 24 tokens: TypeError: .*returned an object of type ndarray"):
        from_dict(ObjectiveConfig, {"name": "az_test_plugins:not_an_example"})


def test_an_objective_with_targets_at_input_positions_trains_the_encoder_family_only():
    from archzoo.train.config import RunConfig

    model = {**TINY, "family": "encoder", "position": {"kind": "learned", "max_len": 64}}
    cfg = from_dict(RunConfig, {"model": model, "objective": {"name": "az_test_plugins:every_third"}, "train": {"seq_len": 32}})
    assert cfg.objective.name.targets_at_positions
    with pytest.raises(ConfigError, match="gives targets at input positions .* not model.family='decoder'"):
        from_dict(RunConfig, {"model": TINY, "objective": {"name": "az_test_plugins:every_third"}})


def test_a_run_directory_written_before_the_plugin_fields_resumes():
    from archzoo.train.rundir import _result_changes

    new = {"model": {"mask": "causal", "encoder_mask": "full", "mlp": {"kind": "standard", "d_ff": 64}, "scan_layers": False}}
    old = {"model": {"mask": "causal", "mlp": {"d_ff": 64}}}
    assert _result_changes(old, new) == []
    assert _result_changes(old, {"model": {**new["model"], "encoder_mask": "pkg:local"}}) == ["model.encoder_mask"]


def test_plugin_paths_of_a_base_file_are_relative_to_it(tmp_path):
    from archzoo.train.config import load_run_configs

    (tmp_path / "common" / "mine").mkdir(parents=True)
    (tmp_path / "common" / "mine" / "base_only_masks.py").write_text(MINE)
    (tmp_path / "common" / "base.yaml").write_text("plugin_paths: [mine]\nmodel: {mask: 'base_only_masks:chunked_causal'}\n")
    (tmp_path / "deep" / "a").mkdir(parents=True)
    (tmp_path / "deep" / "a" / "child.yaml").write_text("base: ../../common/base.yaml\nname: child\n")
    (cfg,) = load_run_configs(tmp_path / "deep" / "a" / "child.yaml")
    assert cfg.plugin_paths == (str(tmp_path / "common" / "mine"),) and cfg.model.mask.path == "base_only_masks:chunked_causal"
