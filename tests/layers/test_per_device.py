"""Kernels the partitioner cannot split (splash's Pallas call, the fused CPU kernel's FFI call)
run under a mesh on each device's own rows and heads (``archzoo.sharding.per_device_attention``):
on 8 simulated devices their outputs and gradients equal one device's, with no gather of the
queries, keys or values where rows and heads split alike."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jax.sharding import AbstractMesh

from archzoo.layers import cpu_fused
from archzoo.sharding import Layout, MeshConfig, attention_specs
from tests.test_sharding import abstract_layout

ROOT = Path(__file__).resolve().parents[2]

MESHES = {"data2_fsdp2_tensor2": {"data": 2, "fsdp": 2, "tensor": 2}, "data8": {"data": 8}, "data2_tensor4": {"data": 2, "tensor": 4}}


def on_meshes(backend: str, **spec) -> dict:
    spec = {"backend": backend, "rows": 8, "length": 256, "heads": 4, "kv_heads": 2, "head_dim": 16, "meshes": MESHES, **spec}
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "multidevice.py"), "kernel", json.dumps(spec)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def assert_split_on_own_rows_and_heads(result: dict, heads_split_on_tensor4: bool) -> None:
    """Each mesh within 1e-5 of each output's largest value (the devices run smaller batches,
    so float32 sums may be ordered otherwise); no all-gather where rows and heads split alike;
    on tensor=4, heads split only if the key/value heads split alike or are one."""
    for name in MESHES:
        assert result[name]["max_rel_diff"] <= 1e-5, (name, result[name])
    split = result["data2_fsdp2_tensor2"]
    assert split["all_gathers"] == 0 and result["data8"]["all_gathers"] == 0, result
    assert split["out_spec"] == split["dq_spec"] == [["data", "fsdp"], None, "tensor", None]
    assert result["data8"]["out_spec"] == ["data", None, None, None]
    assert result["data2_tensor4"]["out_spec"] == ["data", None, "tensor" if heads_split_on_tensor4 else None, None]


def test_splash_under_a_mesh_runs_on_each_devices_own_rows_and_heads():
    """In Pallas interpret mode; 2 key/value heads over tensor=4: query heads whole, rows split."""
    assert_split_on_own_rows_and_heads(on_meshes("splash"), heads_split_on_tensor4=False)


@pytest.mark.skipif(not cpu_fused.available(), reason="the fused kernel needs a C++ compiler")
def test_the_fused_cpu_kernel_under_a_mesh_runs_on_each_devices_own_rows_and_heads():
    """With one key/value head (every device keeps it: its gradient sums over the head split)
    and a logit bias shared by the rows (its gradient sums over the row split)."""
    assert_split_on_own_rows_and_heads(on_meshes("cpu", kv_heads=1, bias=True), heads_split_on_tensor4=True)


@pytest.mark.skipif(not cpu_fused.available(), reason="the fused kernel needs a C++ compiler")
def test_rows_the_batch_axes_do_not_divide_still_give_one_devices_values():
    """2 rows on data=2 x fsdp=2: split over data only, each pair of fsdp devices repeats its
    row (shard_map's transpose divides their shared output's cotangent and sums the gradients
    back), with one key/value head and a bias shared by the rows."""
    result = on_meshes("cpu", rows=2, kv_heads=1, bias=True, meshes={"data2_fsdp2_tensor2": MESHES["data2_fsdp2_tensor2"]})
    assert result["data2_fsdp2_tensor2"]["max_rel_diff"] <= 1e-5, result
    assert result["data2_fsdp2_tensor2"]["out_spec"] == ["data", None, "tensor", None], result


@pytest.mark.parametrize(
    "sizes, H, G, want_q, want_kv",
    [
        ({"data": 2, "tensor": 2}, 4, 2, ("data", None, "tensor", None), ("data", None, "tensor", None)),
        ({"data": 2, "tensor": 4}, 4, 1, ("data", None, "tensor", None), ("data", None, None, None)),  # one kv head: every device keeps it
        ({"data": 2, "tensor": 4}, 4, 2, ("data", None, None, None), ("data", None, None, None)),  # kv heads not split alike
        ({"fsdp": 4, "tensor": 2}, 6, 3, ("fsdp", None, None, None), ("fsdp", None, None, None)),  # tensor divides no head count
    ],
)
def test_the_specs_split_query_heads_only_with_their_key_value_heads(sizes, H, G, want_q, want_kv):
    q_spec, kv_spec = attention_specs(abstract_layout(**sizes), (8, 256, H, 16), (8, 256, G, 16))
    assert tuple(q_spec) == want_q and tuple(kv_spec) == want_kv


def test_the_specs_never_split_positions_or_head_width():
    rules = {**MeshConfig().rule_table(), "length": ("fsdp",), "head_dim": ("expert",)}
    layout = Layout(AbstractMesh((2, 2, 1, 2), ("data", "fsdp", "tensor", "expert")), rules)
    q_spec, kv_spec = attention_specs(layout, (8, 256, 4, 16), (8, 256, 4, 16))
    assert q_spec[1] is None and q_spec[3] is None and kv_spec[1] is None and kv_spec[3] is None
