"""User mistakes get one clear error naming the key (and the file and line), never a traceback
from inside JAX."""

import numpy as np
import pytest

import archzoo
from archzoo import ConfigError
from archzoo.cli import main


def write(tmp_path, text, name="model.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_unknown_key_names_file_line_and_suggests(tmp_path):
    path = write(tmp_path, "family: decoder\nd_model: 64\nnum_layer: 2\n")
    with pytest.raises(ConfigError) as e:
        archzoo.load_model_config(path)
    msg = str(e.value)
    assert f"{path}, line 3" in msg and "'num_layer'" in msg and "did you mean 'num_layers'" in msg


def test_unknown_nested_key_names_its_dotted_path_and_line(tmp_path):
    path = write(tmp_path, "d_model: 64\nattention:\n  num_heads: 4\n  num_kv_head: 2\n")
    with pytest.raises(ConfigError) as e:
        archzoo.load_model_config(path)
    msg = str(e.value)
    assert f"{path}, line 4" in msg and "'attention.num_kv_head'" in msg and "num_kv_heads" in msg


def test_wrong_type_names_the_key(tmp_path):
    path = write(tmp_path, "d_model: sixty-four\n")
    with pytest.raises(ConfigError) as e:
        archzoo.load_model_config(path)
    assert f"{path}, line 1" in str(e.value) and "d_model: expected an integer" in str(e.value)
    with pytest.raises(ConfigError, match=r"mlp\.activation: 'swish' is not one of"):
        archzoo.load_model_config(mlp={"activation": "swish"})
    with pytest.raises(ConfigError, match=r"attention\.bias: expected true or false"):
        archzoo.load_model_config(attention={"bias": "yes"})


def test_d_model_not_divisible_by_heads(tmp_path):
    path = write(tmp_path, "d_model: 100\nattention: {num_heads: 3}\n")
    with pytest.raises(ConfigError) as e:
        archzoo.load_model_config(path)
    assert f"{path}, line 1" in str(e.value) and "d_model=100 is not divisible by attention.num_heads=3" in str(e.value)


def test_kv_heads_must_divide_heads(tmp_path):
    path = write(tmp_path, "d_model: 64\nattention:\n  num_heads: 8\n  num_kv_heads: 3\n")
    with pytest.raises(ConfigError) as e:
        archzoo.load_model_config(path)
    msg = str(e.value)
    assert f"{path}, line 4" in msg and "attention.num_kv_heads" in msg and "valid: [1, 2, 4, 8]" in msg


def test_override_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"unknown key 'num_layer'.*did you mean 'num_layers'"):
        archzoo.load_model_config(overrides=["num_layer=3"])
    assert archzoo.load_model_config(overrides=["attention.num_heads=8", "d_model=64"]).attention.num_heads == 8


def test_token_id_out_of_vocab_names_the_argument():
    model = archzoo.build(vocab_size=100, d_model=32, attention={"num_heads": 4})
    bad = np.array([[1, 2, 100]])
    with pytest.raises(ValueError, match=r"tokens: token id 100 at \(0, 2\) is outside the vocabulary \[0, 100\)"):
        model(bad)
    with pytest.raises(ValueError, match=r"tokens: token id -1"):
        model(np.array([[1, -1]]))
    encdec = archzoo.build(vocab_size=100, d_model=32, attention={"num_heads": 4}, family="encoder_decoder")
    with pytest.raises(ValueError, match="encoder tokens: token id 120"):
        encdec(np.array([[120]]), np.array([[1]]))


def test_facts_of_another_shape_than_tokens():
    model = archzoo.build(d_model=32, attention={"num_heads": 4})
    with pytest.raises(ValueError, match=r"facts: facts have shape \(2, 5\) but the tokens have shape \(2, 4\)"):
        model(np.zeros((2, 4), np.int32), archzoo.facts(shape=(2, 5)))
    with pytest.raises(ValueError, match="positions has shape"):
        archzoo.facts(segment_ids=np.ones((2, 4)), positions=np.zeros((2, 5)))


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    path = write(tmp_path, "d_model: 64\nnum_head: 4\n")
    assert main(["params", str(path)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "Traceback" not in err
    assert main(["params", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"seed": "x"}, TypeError, "seed: expected an integer in [0, 2**32), got 'x'"),
        ({"seed": 1.5}, TypeError, "seed: expected an integer in [0, 2**32), got 1.5"),
        ({"seed": True}, TypeError, "seed: expected an integer in [0, 2**32), got True"),
        ({"seed": 2**64}, ValueError, f"seed: must be in [0, 2**32) (JAX reads seeds modulo 2**32), got {2**64}"),
        ({"seed": 2**32}, ValueError, f"seed: must be in [0, 2**32) (JAX reads seeds modulo 2**32), got {2**32}"),
        ({"seed": -1}, ValueError, "seed: must be in [0, 2**32) (JAX reads seeds modulo 2**32), got -1"),
        ({"config": 5}, TypeError, "config: expected a ModelConfig, a YAML file path, a mapping or None, got int 5"),
        ({"overrides": "d_model=64"}, TypeError, "overrides: expected a list of 'key.sub=value' strings, got the string 'd_model=64' (write ['d_model=64'])"),
        ({"overrides": ["d_model=64", 3]}, TypeError, "overrides[1]: expected a 'key.sub=value' string, got 3"),
        ({"overrides": 7}, TypeError, "overrides: expected a list of 'key.sub=value' strings, got 7"),
    ],
)
def test_build_arguments_are_checked_by_name(kwargs, error, message):
    with pytest.raises(error) as e:
        archzoo.build(**kwargs)
    assert str(e.value) == message


def test_seeds_past_2_to_the_32_would_repeat_smaller_ones():
    # why build refuses them: JAX reads a seed modulo 2**32, so 2**32 and -1 are 0 and 2**32 - 1 again
    import jax

    same = lambda a, b: np.array_equal(jax.random.key_data(jax.random.key(a)), jax.random.key_data(jax.random.key(b)))
    assert same(2**32, 0) and same(-1, 2**32 - 1) and not same(0, 2**32 - 1)
    a, b = archzoo.build(seed=np.int64(2**32 - 1), d_model=32), archzoo.build(seed=2**32 - 1, d_model=32)
    np.testing.assert_array_equal(a.embed.table[...], b.embed.table[...])


def test_load_model_config_and_count_params_name_their_argument():
    with pytest.raises(TypeError, match=r"^source: expected a ModelConfig, a YAML file path, a mapping or None, got list \[1\]$"):
        archzoo.load_model_config([1])
    with pytest.raises(TypeError, match=r"^config: expected a ModelConfig, a YAML file path, a mapping or None, got int 5$"):
        archzoo.count_params(5)
    with pytest.raises(TypeError, match=r"^overrides: expected a list of 'key.sub=value' strings, got the string 'num_layers=3'"):
        archzoo.load_model_config(overrides="num_layers=3")
