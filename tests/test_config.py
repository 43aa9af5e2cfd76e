"""The config loader refuses bad files and values with the dotted key, the file and the line."""

import jax.numpy as jnp
import numpy as np
import pytest

import archzoo
from archzoo.config import ConfigError, load_yaml, parse_override
from archzoo.layers.positions import relative_position_bucket
from archzoo.train.config import load_run_configs


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, key, line",
    [
        ("optimizer:\n  lr: 0.001\n  z_loss: .nan\n", "optimizer.z_loss", 3),
        ("optimizer:\n  clip_norm: .inf\n", "optimizer.clip_norm", 2),
        ("budget:\n  kind: steps\n  value: .inf\n", "budget.value", 3),
        ("budget: {kind: flops, value: .nan}\n", "budget.value", 1),
        ("model:\n  norm:\n    eps: -.inf\n", "model.norm.eps", 3),
        ("model:\n  position: {kind: rope, rope_theta: .inf}\n", "model.position.rope_theta", 2),
    ],
)
def test_nan_and_infinity_are_refused_anywhere(tmp_path, text, key, line):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_run_configs(path)
    assert str(e.value).startswith(f"{path}, line {line}: {key}: expected a finite number, got ")


def test_nan_in_an_override_names_the_key():
    with pytest.raises(ConfigError, match=r"^norm\.eps: expected a finite number, got nan$"):
        archzoo.load_model_config(overrides=["norm.eps=.nan"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: a\nname: b\n", "line 2: duplicate key name, first given at line 1"),
        ("model:\n  d_model: 64\n  norm:\n    eps: 1e-5\n    bias: false\n    eps: 1e-6\n", "line 6: duplicate key model.norm.eps, first given at line 4"),
        ("runs:\n  - name: a\n    model: {d_model: 32, d_model: 64}\n", "line 3: duplicate key runs[0].model.d_model, first given at line 3"),
    ],
)
def test_duplicate_keys_name_both_lines(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_yaml(path)
    assert str(e.value) == f"{path}, {message}"


def test_a_list_as_a_key_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "name: a\n? [d_model, num_layers]\n: 64\n")
    with pytest.raises(ConfigError) as e:
        load_yaml(path)
    assert str(e.value).startswith(f"{path}: not valid YAML: a key must be a name, got ['d_model', 'num_layers']")
    assert "line 2, column 3" in str(e.value)


def test_duplicate_keys_in_an_override_value():
    with pytest.raises(ConfigError, match=r"override 'attention=\{num_heads: 2, num_heads: 4\}': duplicate key num_heads"):
        parse_override("attention={num_heads: 2, num_heads: 4}")


def test_an_override_that_is_not_yaml_names_the_override():
    with pytest.raises(ConfigError, match=r"^override 'attention=\{num_heads: 2': not valid YAML"):
        parse_override("attention={num_heads: 2")


def test_a_file_that_is_not_utf8_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_bytes("name: caf\u00e9\nd_model: 64\n".encode() + "note: na\u00efve\n".encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        archzoo.load_model_config(path)
    offset = path.read_bytes().index(b"\xef")
    assert str(e.value) == f"{path}, line 3: not UTF-8 text (byte 0xef at offset {offset})"


def test_a_key_one_level_down_is_suggested_before_a_close_match(tmp_path):
    path = write(tmp_path, "d_model: 64\nnum_heads: 4\n", name="model.yaml")
    with pytest.raises(ConfigError) as e:
        archzoo.load_model_config(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}, line 2: unknown key 'num_heads'") and msg.endswith("did you mean attention.num_heads?")
    path = write(tmp_path, "model:\n  num_heads: 4\n")
    with pytest.raises(ConfigError, match=r"line 2: unknown key 'model\.num_heads'.*did you mean model\.attention\.num_heads\?$"):
        load_run_configs(path)
    # a slip at this level still gets its close match
    with pytest.raises(ConfigError, match=r"did you mean 'num_layers'\?$"):
        archzoo.load_model_config(num_layer=2)


@pytest.mark.parametrize(
    "text, key, line, valid",
    [
        ("model:\n  position: {kind: learned, offset: -2}\n", "model.position.offset", 2, "must be >= 0"),
        ("model:\n  norm:\n    kind: rmsnorm\n    eps: -1e-6\n", "model.norm.eps", 4, "must be >= 0"),
        ("model:\n  position:\n    kind: rope\n    rope_theta: 0\n", "model.position.rope_theta", 4, "must be > 0"),
        ("model:\n  position:\n    rope_theta: -10000.0\n", "model.position.rope_theta", 3, "must be > 0"),
        ("optimizer:\n  eps: 0\n", "optimizer.eps", 2, "must be > 0"),
        ("optimizer:\n  eps: -1e-8\n", "optimizer.eps", 2, "must be > 0"),
    ],
)
def test_out_of_range_values_name_key_file_and_line(tmp_path, text, key, line, valid):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_run_configs(path)
    assert str(e.value).startswith(f"{path}, line {line}: {key}: {valid}, got ")


@pytest.mark.parametrize(
    "family, position, key, line, valid",
    [
        ("decoder", "{kind: t5_bias, num_buckets: 0}", "num_buckets", 3, "at least 2"),
        ("encoder_decoder", "{kind: t5_bias, num_buckets: 3}", "num_buckets", 3, "at least 4"),
        ("decoder", "{kind: t5_bias, num_buckets: 32, max_distance: 16}", "max_distance", 3, "more than 16"),
        ("encoder_decoder", "{kind: t5_bias, num_buckets: 32, max_distance: 0}", "max_distance", 3, "more than 16"),
        ("encoder", "{kind: t5_bias, num_buckets: 32, max_distance: 8}", "max_distance", 3, "more than 8"),
        # a prefix decoder's stack reads buckets both ways, so it needs the encoder's minimum
        ("decoder, mask: prefix", "{kind: t5_bias, num_buckets: 3}", "num_buckets", 4, "at least 4"),
    ],
)
def test_t5_buckets_are_checked_for_the_family(tmp_path, family, position, key, line, valid):
    objective = "mlm" if family == "encoder" else "span_corruption" if family == "encoder_decoder" else "causal_lm"
    family = family.replace(", ", "\n  ")
    path = write(tmp_path, f"model:\n  family: {family}\n  position: {position}\nobjective: {{name: {objective}}}\n")
    with pytest.raises(ConfigError) as e:
        load_run_configs(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}, line {line}: model.position.{key}: ") and valid in msg


def test_the_smallest_accepted_t5_tables_give_buckets_in_range():
    # each stack's buckets stay inside the table and grow with distance on each side
    cases = (("decoder", "causal", 2, 2), ("decoder", "prefix", 4, 2), ("encoder", "causal", 4, 2), ("encoder_decoder", "causal", 4, 3))
    for family, mask, buckets, distance in cases:
        position = {"kind": "t5_bias", "num_buckets": buckets, "max_distance": distance}
        cfg = archzoo.load_model_config(family=family, mask=mask, d_model=32, position=position)
        stacks = {"decoder": [mask == "prefix"], "encoder": [True], "encoder_decoder": [True, False]}[family]
        relative = np.arange(-40, 41)
        for bidirectional in stacks:
            got = np.asarray(relative_position_bucket(jnp.asarray(relative), bidirectional=bidirectional, num_buckets=cfg.position.num_buckets, max_distance=cfg.position.max_distance))
            assert got.min() >= 0 and got.max() < buckets, (family, bidirectional, got)
            past, future = got[relative <= 0][::-1], got[relative >= 0]
            assert (np.diff(past) >= 0).all() and (bidirectional or (future == 0).all())
            assert not bidirectional or (np.diff(future[1:]) >= 0).all()


def test_a_post_init_error_names_the_whole_dotted_key_and_its_line(tmp_path):
    path = write(tmp_path, "name: r\nmodel:\n  d_model: 64\n  attention:\n    num_heads: 8\n    num_kv_heads: 3\n")
    with pytest.raises(ConfigError) as e:
        load_run_configs(path)
    assert str(e.value).startswith(f"{path}, line 6: model.attention.num_kv_heads: 3 kv heads do not divide")
    # a check on a nested field made by the parent section points at the nested line
    path = write(tmp_path, "model:\n  d_model: 60\n  position:\n    kind: rope\n  attention:\n    num_heads: 4\n    head_dim: 15\n")
    with pytest.raises(ConfigError) as e:
        load_run_configs(path)
    assert str(e.value).startswith(f"{path}, line 7: model.attention.head_dim: RoPE needs an even head width")


@pytest.mark.parametrize(
    "scaling, key, valid",
    [
        ("{factor: 0}", "factor", "must be > 0"),
        ("{low_freq_factor: 0}", "low_freq_factor", "must be > 0"),
        ("{low_freq_factor: 4.0, high_freq_factor: 4.0}", "high_freq_factor", "must be more than rope_scaling.low_freq_factor=4.0"),
        ("{original_max_position: 0}", "original_max_position", "must be >= 1"),
    ],
)
def test_rope_scaling_that_the_llama3_formula_cannot_use(tmp_path, scaling, key, valid):
    path = write(tmp_path, f"model:\n  position:\n    kind: rope\n    rope_scaling: {scaling}\n")
    with pytest.raises(ConfigError) as e:
        load_run_configs(path)
    assert str(e.value).startswith(f"{path}, line 4: model.position.rope_scaling.{key}: {valid}")


def test_an_integer_too_large_for_a_float_is_refused_by_key(tmp_path):
    path = write(tmp_path, "budget:\n  kind: flops\n  value: 1" + "0" * 400 + "\n")
    with pytest.raises(ConfigError) as e:
        load_run_configs(path)
    assert str(e.value).startswith(f"{path}, line 3: budget.value: expected a finite number, got 1000")
