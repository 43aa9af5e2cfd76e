"""Experiment axes: the product of axes, zip groups, named values and exclusions give the runs the
experiment file declares, named from their values; bad axes name the file and the line."""

import pytest

from archzoo.config import ConfigError
from archzoo.train.config import load_run_configs

SHARED = """\
out_dir: runs/axes
model: {vocab_size: 512, d_model: 32, num_layers: 1, attention: {num_heads: 2}, mlp: {d_ff: 64}}
"""


def write(tmp_path, text: str):
    path = tmp_path / "experiment.yaml"
    path.write_text(SHARED + text)
    return path


def test_product_zip_named_values_and_exclusions(tmp_path):
    path = write(tmp_path, """\
axes:
  - model.family: [decoder, encoder_decoder]
  - zip:
      model.d_model: [32, 64]
      model.num_layers: [1, 2]
  - objective: {lm: {name: causal_lm}, spans: {name: span_corruption}}
exclude:
  - {model.family: decoder, objective: spans}
""")
    got = {c.name: (c.model.family, c.model.d_model, c.model.num_layers, c.objective.name) for c in load_run_configs(path)}
    # 2 families x 2 sizes x 2 objectives, less the 2 decoder runs on span corruption
    want = {
        f"{family}-d_model{d}-num_layers{n}-{obj}": (family, d, n, {"lm": "causal_lm", "spans": "span_corruption"}[obj])
        for family in ("decoder", "encoder_decoder")
        for d, n in ((32, 1), (64, 2))
        for obj in ("lm", "spans")
        if not (family == "decoder" and obj == "spans")
    }
    assert got == want


def test_every_run_shares_the_rest_and_a_float_axis_names_its_key(tmp_path):
    path = write(tmp_path, "optimizer: {weight_decay: 0.05}\naxes:\n  - optimizer.lr: [1.0e-3, 3.0e-3]\n")
    runs = load_run_configs(path, ["train.batch_size=3"])
    assert [r.name for r in runs] == ["lr0.001", "lr0.003"]
    assert [r.optimizer.lr for r in runs] == [1e-3, 3e-3]
    assert {(r.optimizer.weight_decay, r.train.batch_size, r.model.d_model) for r in runs} == {(0.05, 3, 32)}


@pytest.mark.parametrize(
    "axes, line, message",
    [
        ("  - model.num_head: [2, 4]", 4, "axis over unknown key 'model.num_head'; did you mean model.attention.num_heads?"),
        ("  - optimizer.lr: []", 4, "axis 'optimizer.lr' is empty"),
        ("  - zip:\n      model.d_model: [32, 64]\n      model.num_layers: [1]", 4, "must have as many values each"),
        ("  - optimizer.lr: [1.0e-3]\nexclude:\n  - {train.seed: 1}", 6, "'train.seed' is not an axis"),
        ("  - optimizer.lr: [1.0e-3]\nexclude:\n  - {optimizer.lr: 1.0e-3}", 5, "exclude leaves no run"),
        ("  - model.family: [decoder, decoder]", 4, "its values' names repeat"),
    ],
)
def test_bad_axes_name_the_file_and_line(tmp_path, axes, line, message):
    path = write(tmp_path, f"axes:\n{axes}\n")
    with pytest.raises(ConfigError) as e:
        load_run_configs(path)
    assert str(e.value).startswith(f"{path}, line {line}: ") and message in str(e.value)


def test_a_run_an_axis_makes_invalid_is_named(tmp_path):
    path = write(tmp_path, "axes:\n  - model.attention.num_heads: [2, 3]\n")
    with pytest.raises(ConfigError, match=r"run num_heads3: .*not divisible by attention.num_heads=3"):
        load_run_configs(path)


def test_runs_and_axes_together_are_refused(tmp_path):
    path = write(tmp_path, "runs: [{name: a}]\naxes:\n  - optimizer.lr: [1.0e-3]\n")
    with pytest.raises(ConfigError, match="runs or declares axes, not both"):
        load_run_configs(path)
