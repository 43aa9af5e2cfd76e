"""The ``archzoo convert`` command: a Hugging Face folder in, an archzoo config, weights and a
Hugging Face folder out, all equal to what the library reads directly."""

import numpy as np
import pytest

import archzoo
from archzoo.checkpoint import restore_weights
from archzoo.cli import main
from archzoo.convert import get_params, load_hf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_convert_cli_round_trip(tmp_path, capsys):
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=128, n_positions=32, n_embd=32, n_layer=2, n_head=4))
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)

    args = ["convert", str(tmp_path / "hf"), "--config", str(tmp_path / "gpt2.yaml"), "--to-hf", str(tmp_path / "copy"), "--checkpoint", str(tmp_path / "ckpt")]
    assert main(args) == 0
    assert "gpt2: family decoder" in capsys.readouterr().out

    direct = load_hf(tmp_path / "hf")
    cfg = archzoo.load_model_config(tmp_path / "gpt2.yaml")
    assert cfg == direct.config
    restored = restore_weights(archzoo.build(cfg, seed=7), tmp_path / "ckpt")
    copy = load_hf(tmp_path / "copy")
    want = get_params(direct)
    for got in (get_params(restored), get_params(copy)):
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_convert_cli_names_a_missing_folder(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "no config.json" in err and "nowhere" in err


def test_an_unwritable_output_path_is_one_line_naming_it(tmp_path, capsys):
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=128, n_positions=32, n_embd=32, n_layer=2, n_head=4))
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    (tmp_path / "blocker").write_text("a file, so nothing can be written under it (even by root)")
    target = tmp_path / "blocker" / "gpt2.yaml"
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "hf"), "--config", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"archzoo convert: error: {target}: Not a directory"
