"""Sharding over a named mesh: training steps on 8 simulated CPU devices give the losses of one
device, parameters are split as the rules say, and a mesh that does not fit is refused by name.

The multi-device runs are subprocesses (``tests/multidevice.py``): the device count is fixed
when jax starts.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from flax import nnx
from jax.sharding import AbstractMesh

from archzoo.config import ConfigError
from archzoo.models import build
from archzoo.sharding import DEFAULT_RULES, Layout, MeshConfig, check_divisible
from archzoo.train.config import load_run_configs

ROOT = Path(__file__).resolve().parents[1]
TINY = {"vocab_size": 256, "d_model": 32, "num_layers": 1, "attention": {"num_heads": 4}, "mlp": {"d_ff": 64}}
MESHES = {"data8": {"data": 8}, "fsdp4_tensor2": {"fsdp": 4, "tensor": 2}, "data2_expert4": {"data": 2, "expert": 4}}
# The rules stated again by hand: which mesh axes split a parameter dimension of each logical name.
PARAM_AXES = {"embed": ("fsdp",), "mlp": ("tensor",), "heads": ("tensor",), "kv_heads": ("tensor",), "vocab": ("tensor",), "expert": ("expert",)}

# Every family and an MoE model. The MoE model takes all three meshes; the dense families the data
# and fsdp x tensor ones (on a dense model an expert axis only splits rows, as data does).
MODELS = {
    "prefix_decoder": ({**TINY, "family": "decoder", "mask": "prefix"}, ("data8", "fsdp4_tensor2")),
    # scanned stacks: the layers axis is replicated by the default rules, the rest split as unrolled
    "encoder_decoder": ({**TINY, "family": "encoder_decoder", "num_encoder_layers": 1, "scan_layers": True}, ("data8", "fsdp4_tensor2")),
    "encoder": ({**TINY, "family": "encoder"}, ("data8", "fsdp4_tensor2")),
    "moe_decoder": ({**TINY, "family": "decoder", "moe": {"num_experts": 4, "top_k": 2}}, tuple(MESHES)),
}


def run_steps(model: dict, meshes: tuple[str, ...], steps: int = 2) -> dict:
    spec = {"model": model, "meshes": {m: MESHES[m] for m in meshes}, "steps": steps}
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "multidevice.py"), "steps", json.dumps(spec)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def logical_names(model: dict) -> dict[str, tuple]:
    """Each parameter's logical axis names, read from the model built abstractly (no devices)."""
    m = nnx.eval_shape(lambda: build(model, seed=0))
    names = {}
    for path, v in nnx.to_flat_state(nnx.state(m, nnx.Param)):
        names["/".join(str(p) for p in path)] = tuple(v.get_metadata().get("out_sharding") or (None,) * v.ndim)
    return names


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_steps_on_each_mesh_give_the_losses_of_one_device_with_parameters_split_by_the_rules(name):
    model, meshes = MODELS[name]
    result = run_steps(model, meshes)
    reference, _ = result.pop("one")
    names = logical_names(model)
    for mesh, (losses, shards) in result.items():
        # float32 sums in another order on a split batch or width: equal within rounding
        assert losses == pytest.approx(reference, rel=1e-5, abs=1e-6), mesh
        assert shards.pop("__optimizer_moments_sharded_like_params__"), f"{mesh}: Adam's moments are not split like their parameters"
        assert set(shards) == set(names)
        for param, s in shards.items():
            expected = [
                n // math.prod(MESHES[mesh].get(a, 1) for a in PARAM_AXES.get(axis, ()))
                for n, axis in zip(s["shape"], names[param])
            ]
            assert s["shard"] == expected, f"{mesh}: {param} {names[param]} shard {s['shard']}"


# -- bad input ----------------------------------------------------------------------------------


def test_a_mesh_whose_product_is_not_the_device_count_is_refused_naming_both():
    with pytest.raises(ConfigError, match=r"mesh: data=2 x fsdp=1 x tensor=2 x expert=1 is 4 devices but 8 are visible"):
        MeshConfig(data=2, tensor=2).resolved_sizes(8)
    with pytest.raises(ConfigError, match=r"the other axes' product 3 does not divide 8"):
        MeshConfig(data=-1, tensor=3).resolved_sizes(8)
    assert MeshConfig(fsdp=-1, tensor=2).resolved_sizes(8) == {"data": 1, "fsdp": 4, "tensor": 2, "expert": 1}
    with pytest.raises(ConfigError, match=r"mesh.fsdp: only one mesh axis may be -1; data and fsdp both are"):
        MeshConfig(data=-1, fsdp=-1)
    with pytest.raises(ConfigError, match=r"mesh.tensor: must be a positive integer or -1"):
        MeshConfig(tensor=0)


def test_rules_naming_an_unknown_logical_axis_or_mesh_axis_are_refused_with_file_line_and_a_suggestion(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: r\nmesh:\n  data: 1\n  rules:\n    embd: fsdp\n")
    with pytest.raises(ConfigError, match=r"run.yaml, line 5: mesh.rules.embd: unknown logical axis name; did you mean 'embed'\?"):
        load_run_configs(path)
    path.write_text("name: r\nmesh:\n  rules:\n    vocab: tensr\n")
    with pytest.raises(ConfigError, match=r"line 4: mesh.rules.vocab: 'tensr' is not a mesh axis \(data, fsdp, tensor, expert\); did you mean 'tensor'\?"):
        load_run_configs(path)
    path.write_text("name: r\nmesh:\n  tensr: 2\n")
    with pytest.raises(ConfigError, match=r"line 3: unknown key 'mesh.tensr' in MeshConfig; did you mean 'mesh.tensor'\?"):
        load_run_configs(path)
    assert set(MeshConfig(rules={"vocab": None}).rule_table()) == set(DEFAULT_RULES)
    assert MeshConfig(rules={"vocab": None, "batch": ["data"]}).rule_table()["batch"] == ("data",)


def abstract_layout(**sizes) -> Layout:
    axes = ("data", "fsdp", "tensor", "expert")
    return Layout(AbstractMesh(tuple(sizes.get(a, 1) for a in axes), axes), MeshConfig().rule_table())


def test_a_parameter_the_mesh_does_not_divide_is_named_with_its_shape_and_axis():
    state = nnx.state(nnx.eval_shape(lambda: build({**TINY, "family": "decoder", "mlp": {"d_ff": 66}}, seed=0)))
    with pytest.raises(ConfigError, match=r"parameter stack/blocks/0/mlp/down of shape \(66, 32\): dimension 0 \(mlp\) has 66, not divisible by mesh tensor=4"):
        check_divisible(state, abstract_layout(tensor=4))
    check_divisible(state, abstract_layout(tensor=2))  # 66 = 2 x 33


def test_an_expert_count_the_expert_axis_does_not_divide_is_refused_naming_moe_num_experts():
    state = nnx.state(nnx.eval_shape(lambda: build({**TINY, "family": "decoder", "moe": {"num_experts": 6, "top_k": 2}}, seed=0)))
    with pytest.raises(ConfigError, match=r"dimension 0 \(expert\) has 6, not divisible by mesh expert=4 \(moe.num_experts must be a multiple of mesh.expert\)"):
        check_divisible(state, abstract_layout(expert=4))


def test_a_batch_the_mesh_or_the_processes_do_not_split_is_refused_naming_train_batch_size():
    layout = abstract_layout(data=2, fsdp=2, tensor=2)
    with pytest.raises(ConfigError, match=r"train.batch_size=6 rows cannot be split evenly over the mesh's batch axes \(data=2 x fsdp=2 = 4 ways\); make it a multiple of 4"):
        layout.check_rows(6, "train.batch_size")
    with pytest.raises(ConfigError, match=r"\(data=2 x fsdp=2 = 4 ways\) and 3 processes; make it a multiple of 12"):
        layout.check_rows(8, "train.batch_size", processes=3)
    layout.check_rows(8, "train.batch_size", processes=2)


def test_activation_specs_skip_mesh_axes_taken_or_not_dividing():
    layout = abstract_layout(data=2, fsdp=2, tensor=2)
    # batch takes data and fsdp; heads take tensor; a one-row activation is not split
    assert tuple(layout.spec(("batch", "length", "heads", "head_dim"))) == (("data", "fsdp"), None, "tensor", None)
    assert tuple(layout.spec(("batch", "length", "act_embed"), (1, 16, 32))) == (None, None, None)
    assert tuple(layout.spec(("batch", "length", "act_embed"), (2, 16, 32))) == ("data", None, None)
    # a parameter's embed takes fsdp: an activation naming embed after batch does not take it again
    assert tuple(layout.spec(("batch", "embed"))) == (("data", "fsdp"), None)


# -- checkpoints across meshes ----------------------------------------------------------------


@pytest.mark.slow
def test_a_checkpoint_restores_onto_another_mesh_with_equal_values(tmp_path):
    one, fsdp8, data2_fsdp4 = "one", {"fsdp": 8}, {"data": 2, "fsdp": 4}
    hops = [[fsdp8, one], [one, fsdp8], [fsdp8, data2_fsdp4]]
    spec = {"dir": str(tmp_path), "model": {**TINY, "family": "decoder"}, "hops": hops}
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "multidevice.py"), "checkpoints", json.dumps(spec)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.splitlines()[-1])
    for i, (source, target) in enumerate(hops):
        hop = result[str(i)]
        assert hop["equal"] and hop["placed"], f"{source} -> {target}: {hop}"
        assert hop["devices"] == ([1] if target == one else [8])
