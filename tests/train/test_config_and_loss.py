"""Run configs compose (base + runs + overrides); the z-loss term matches its formula."""

import numpy as np
import pytest

import archzoo
from archzoo.config import ConfigError
from archzoo.features import pack_examples
from archzoo.train.config import load_run_configs
from archzoo.train.loss import loss_fn
from tests.features.test_packing import BASE, LENGTHS, START, examples


def test_base_file_runs_and_overrides_compose(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {d_model: 64, attention: {num_heads: 4}}\ntrain: {batch_size: 8, seq_len: 64}\nbudget: {kind: steps, value: 10}\n")
    (tmp_path / "exp.yaml").write_text(
        "base: base.yaml\ntrain: {batch_size: 4}\nruns:\n  - name: a\n    model: {num_layers: 3}\n  - name: b\n    model: {family: encoder_decoder}\n"
    )
    a, b = load_run_configs(tmp_path / "exp.yaml", ["budget.value=20"])
    assert (a.name, a.model.num_layers, a.model.d_model, a.train.batch_size, a.train.seq_len) == ("a", 3, 64, 4, 64)
    assert (b.model.family, b.model.num_layers, b.model.attention.num_heads) == ("encoder_decoder", 2, 4)
    assert a.budget.value == b.budget.value == 20


def test_errors_in_a_base_file_name_that_file(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  d_model: 64\n  num_head: 4\n")
    (tmp_path / "run.yaml").write_text("base: base.yaml\nname: x\n")
    with pytest.raises(ConfigError) as e:
        load_run_configs(tmp_path / "run.yaml")
    assert f"{tmp_path / 'base.yaml'}, line 3" in str(e.value) and "did you mean model.attention.num_heads" in str(e.value)
    with pytest.raises(ConfigError, match="run names must differ"):
        (tmp_path / "dup.yaml").write_text("runs:\n  - {name: a}\n  - {name: a}\n")
        load_run_configs(tmp_path / "dup.yaml")


def test_z_loss_adds_the_mean_squared_log_partition():
    model = archzoo.build(**BASE, seed=0)
    (batch, *_) = pack_examples(examples(0, 6), "decoder", LENGTHS, batch_size=2, start_id=START)
    plain, aux = loss_fn(model, batch)
    with_z, aux_z = loss_fn(model, batch, z_loss=1e-2)
    logits = np.asarray(model(batch["decoder_tokens"], archzoo.facts(segment_ids=batch["decoder_segment_ids"], positions=batch["decoder_positions"], is_input=batch["decoder_is_input"])), np.float64)
    log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    w = batch["decoder_weights"]
    expected = 1e-2 * float((log_z**2 * w).sum() / w.sum())
    np.testing.assert_allclose(float(with_z) - float(plain), expected, rtol=1e-4)
    np.testing.assert_allclose(float(aux_z["loss_nats"]), float(aux["loss_nats"]), rtol=1e-7)
    # the loss itself by hand
    target = np.take_along_axis(logits, batch["decoder_targets"][..., None], -1)[..., 0]
    np.testing.assert_allclose(float(plain), float(((log_z - target) * w).sum() / w.sum()), rtol=1e-5)


def test_train_seed_is_one_jax_reads_as_itself(tmp_path):
    path = tmp_path / "run.yaml"
    for seed in (2**32, -1):
        path.write_text(f"name: r\ntrain:\n  batch_size: 4\n  seed: {seed}\n")
        with pytest.raises(ConfigError) as e:
            load_run_configs(path)
        assert str(e.value) == f"{path}, line 4: train.seed: must be in [0, 2**32) (JAX reads seeds modulo 2**32), got {seed}"
    path.write_text("name: r\ntrain: {seed: 4294967295}\n")
    assert load_run_configs(path)[0].train.seed == 2**32 - 1


def test_load_run_configs_names_a_wrong_argument(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: r\n")
    with pytest.raises(TypeError, match=r"^overrides: expected a list of 'key.sub=value' strings, got the string 'train.seed=1'"):
        load_run_configs(path, "train.seed=1")
    with pytest.raises(TypeError, match=r"^path: expected a YAML file path, got int 5$"):
        load_run_configs(5)
