"""MoE models through the run pipeline: facts count active parameters and FLOPs, metrics.jsonl
holds each MoE layer's router statistics, and a resumed run (router jitter and the
auxiliary-loss-free bias, both state a resume must replay) ends bit for bit as an uninterrupted one."""

import json
import shutil

import numpy as np
import pytest

from archzoo.analysis.runs import write_record
from archzoo.models import count_params
from archzoo.train.config import load_run_configs
from archzoo.train.flops import forward_flops_per_token
from archzoo.train.loop import train
from tests.train.test_checkpoints import _saved_arrays
from tests.train.test_runs import config, metrics

MOE = "{num_experts: 4, top_k: 2, every: 2, offset: 1, jitter: 0.1, balance: bias, bias_rate: 0.01, z_loss_weight: 0.001}"


def moe_config(tmp_path, name="moe", family="decoder", moe=MOE, budget="{kind: steps, value: 6}"):
    path = config(tmp_path, name=name, family=family, budget=budget)
    text = path.read_text().replace("mlp: {d_ff: 64}", f"mlp: {{d_ff: 64}}, moe: {moe}")
    path.write_text(text)
    return path


def test_an_moe_run_records_active_parameters_and_per_layer_router_statistics(tmp_path):
    cfg = load_run_configs(moe_config(tmp_path))[0]
    train(cfg)
    facts = json.loads((cfg.run_dir / "run.json").read_text())["facts"]
    n = count_params(cfg.model)
    assert facts["params"] == n.total and facts["active_params"] == n.active < n.total
    # FLOPs per token count the 2 chosen experts of 4 and the router, not every expert
    dense = cfg.model.replace(moe=None)
    per_token = 3 * forward_flops_per_token(cfg.model, stream="decoder", context=32)
    expert = 2 * 32 * 64 * 2  # one expert's matmuls (ungated: up and down), 2 FLOPs per weight
    assert per_token == 3 * forward_flops_per_token(dense, stream="decoder", context=32) + 3 * (expert + 2 * 32 * 4)
    assert facts["flops_per_token"] == per_token

    lines = metrics(cfg.run_dir)
    for record in lines:
        # layer 1 of 2 is the only MoE layer (every: 2, offset: 1)
        assert not any(k.startswith("decoder/0/") for k in record)
        fraction = record["decoder/1/expert_fraction"]
        assert len(fraction) == 4 and abs(sum(fraction) - 1) < 1e-5
        assert record["decoder/1/dropped_fraction"] == 0.0  # dropless
        assert 0 < record["decoder/1/router_entropy"] <= np.log(4) + 1e-6
        # balance: bias trains no balancing loss; the z-loss is the only auxiliary loss
        assert "decoder/1/load_balance_loss" not in record
        assert abs(record["aux_loss"] - record["decoder/1/router_z_loss"]) < 1e-6
        assert abs(record["decoder/1/router_z_loss"] - 0.001 * record["decoder/1/router_z"]) < 1e-6


@pytest.mark.slow
def test_a_resumed_moe_run_with_jitter_and_balance_bias_ends_bitwise_equal(tmp_path):
    """Kill after the step-4 checkpoint: steps 5 and 6 replay the same router noise and bias."""
    cfg = load_run_configs(moe_config(tmp_path))[0]
    train(cfg)
    uninterrupted = metrics(cfg.run_dir)
    final = _saved_arrays(cfg.run_dir, 6)
    # the bias followed the rule b += rate * sign(1/E - f) over the 6 logged steps' expert loads
    loads = np.array([r["decoder/1/expert_fraction"] for r in uninterrupted])
    assert len(loads) == 6
    want = np.sum(0.01 * np.sign(0.25 - loads.astype(np.float32)), axis=0)
    (bias,) = [v for k, v in final.items() if k.startswith("['params']") and "balance_bias" in k]
    np.testing.assert_allclose(bias, want, atol=1e-6)
    shutil.rmtree(cfg.run_dir / "checkpoints" / "6")
    for record in (cfg.run_dir / "checkpoints").glob("6*"):
        record.unlink()
    facts = json.loads((cfg.run_dir / "run.json").read_text())["facts"]
    write_record(cfg.run_dir, facts, None)
    summary = train(cfg)
    assert summary["steps"] == 6
    assert metrics(cfg.run_dir) == uninterrupted
    again = _saved_arrays(cfg.run_dir, 6)
    assert again.keys() == final.keys()
    for k in final:
        np.testing.assert_array_equal(again[k], final[k], err_msg=k)


def test_an_moe_encoder_decoder_reports_both_stacks(tmp_path):
    moe = "{num_experts: 4, top_k: 1, normalize: false, dispatch: capacity, capacity_factor: 1.0, load_balance_weight: 0.01}"
    cfg = load_run_configs(moe_config(tmp_path, family="encoder_decoder", moe=moe, budget="{kind: steps, value: 2}"))[0]
    train(cfg)
    record = metrics(cfg.run_dir)[-1]
    for stack in ("encoder", "decoder"):
        for layer in (0, 1):
            assert 0 <= record[f"{stack}/{layer}/dropped_fraction"] < 1
            assert abs(record[f"{stack}/{layer}/load_balance_loss"] - 0.01 * record[f"{stack}/{layer}/load_balance"]) < 1e-6
    assert abs(record["aux_loss"] - sum(v for k, v in record.items() if k.endswith("/load_balance_loss"))) < 1e-5
