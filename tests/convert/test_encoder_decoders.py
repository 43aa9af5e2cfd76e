"""Encoder-decoder converters (T5 v1.0, T5 v1.1, BART) against the transformers models.

Each case builds a small random transformers model (norm weights, biases and BART's
final_logits_bias randomised so that a swapped or dropped tensor shows), saves it, loads it into
archzoo and compares logits on a right-padded batch at the decoder's non-padding positions.
"""

import dataclasses
import json

import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from archzoo import masks  # noqa: E402
from archzoo.config import ConfigError  # noqa: E402
from archzoo.convert import bart as bart_convert, t5 as t5_convert  # noqa: E402
from archzoo.convert import get_params, load_hf, save_hf, set_params  # noqa: E402
from archzoo.models import EncoderDecoder, ModelConfig  # noqa: E402

V, D, H = 256, 64, 4
TOL = 1e-4
ENC_LENGTHS, DEC_LENGTHS = (12, 7), (6, 10)


def t5_v10(**overrides):
    """T5 v1.0: ReLU MLP, head tied to the embedding with d_model^-0.5 rescaling; few buckets
    so that short rows reach the logarithmic ones. ``overrides`` are more T5Config fields."""
    cfg = transformers.T5Config(
        vocab_size=V, d_model=D, d_kv=D // H, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=H,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,
        feed_forward_proj="relu", dropout_rate=0.0, **overrides,
    )
    model = transformers.T5ForConditionalGeneration(cfg)
    assert model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr() and model.config.scale_decoder_outputs
    return model


def t5_v11():
    """T5 v1.1: gated GELU (tanh), its own lm_head, no rescaling, d_kv * H != d_model."""
    cfg = transformers.T5Config(
        vocab_size=V, d_model=D, d_kv=8, d_ff=96, num_layers=2, num_decoder_layers=2, num_heads=H,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
    )
    model = transformers.T5ForConditionalGeneration(cfg)
    # This transformers release ties lm_head to the embedding even when asked not to (it only
    # drops the rescaling); give the head its own weights so the model really is untied.
    model.lm_head.weight = torch.nn.Parameter(torch.randn(V, D) * D**-0.5)
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr() and not model.config.scale_decoder_outputs
    return model


def bart(**overrides):
    """BART with scaled embeddings, 2+2 layers. ``overrides`` are more BartConfig fields."""
    cfg = transformers.BartConfig(
        vocab_size=V, d_model=D, max_position_embeddings=32, encoder_layers=2, decoder_layers=2,
        encoder_ffn_dim=128, decoder_ffn_dim=128, encoder_attention_heads=H, decoder_attention_heads=H,
        scale_embedding=True, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, **overrides,
    )
    model = transformers.BartForConditionalGeneration(cfg)
    with torch.no_grad():
        model.final_logits_bias.normal_(0.0, 1.0)
    return model


CASES = {"t5_v1.0": t5_v10, "t5_v1.1": t5_v11, "bart": bart}


def randomise_vectors(model):
    """Norm weights around 1 and biases around 0, drawn at random (transformers inits them to
    constants, under which a swapped pair of norms or biases would go unnoticed)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                if "norm" in name and name.endswith("weight"):
                    p.uniform_(0.5, 1.5)
                else:
                    p.normal_(0.0, 0.1)


def batch(seed=0):
    """Right-padded encoder and decoder token ids and 0/1 masks, ``[2, 12]`` and ``[2, 10]``."""
    rng = np.random.default_rng(seed)
    out = []
    for lengths in (ENC_LENGTHS, DEC_LENGTHS):
        L = max(lengths)
        mask = (np.arange(L)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
        ids = rng.integers(3, V, size=(2, L)) * mask
        out += [ids, mask]
    return out


def torch_logits(model, enc, enc_mask, dec, dec_mask):
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(enc),
            attention_mask=torch.tensor(enc_mask),
            decoder_input_ids=torch.tensor(dec),
            decoder_attention_mask=torch.tensor(dec_mask),
        )
    return out.logits.numpy()


@nnx.jit
def _forward(model, enc, dec, enc_facts, dec_facts):
    return model(enc, dec, enc_facts, dec_facts)


def archzoo_logits(model, enc, enc_mask, dec, dec_mask):
    """archzoo logits ``[B, L, V]`` for the batch; padding is segment id 0 in the facts."""
    enc_facts, dec_facts = masks.facts(segment_ids=enc_mask), masks.facts(segment_ids=dec_mask)
    return np.asarray(_forward(model, enc.astype(np.int32), dec.astype(np.int32), enc_facts, dec_facts))


def max_error(a, b, dec_mask):
    """Largest |a - b| over non-padding decoder positions; a, b ``[B, L, V]``."""
    return float(np.abs(a - b)[dec_mask.astype(bool)].max())


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    """(name, transformers model, its folder, its logits on :func:`batch`)."""
    torch.manual_seed(0)
    model = CASES[request.param]().eval()
    randomise_vectors(model)
    folder = tmp_path_factory.mktemp(request.param.replace(".", "_")) / "hf"
    model.save_pretrained(folder, safe_serialization=True)
    return request.param, model, folder, torch_logits(model, *batch())


def test_loaded_model_matches_transformers_logits(case):
    name, _, folder, expected = case
    model = load_hf(folder)
    assert model.config.name == name.split("_")[0]
    data = batch()
    got = archzoo_logits(model, *data)
    assert got.shape == expected.shape
    assert max_error(got, expected, data[3]) <= TOL


def test_padding_does_not_change_the_logits_of_real_tokens(case):
    """The torch reference itself: the second row's logits alone equal its padded-batch logits,
    so comparing at non-padding positions compares real outputs."""
    _, model, _, expected = case
    enc, enc_mask, dec, dec_mask = batch()
    n_enc, n_dec = ENC_LENGTHS[1], DEC_LENGTHS[1]
    alone = torch_logits(model, enc[1:, :n_enc], enc_mask[1:, :n_enc], dec[1:, :n_dec], dec_mask[1:, :n_dec])
    np.testing.assert_allclose(alone[0], expected[1, :n_dec], atol=TOL, rtol=0)


def test_save_hf_round_trip(case, tmp_path):
    name, _, folder, expected = case
    model = load_hf(folder)
    out = save_hf(model, tmp_path / "saved")
    again = load_hf(out)
    assert again.config == model.config
    before, after = get_params(model), get_params(again)
    assert sorted(before) == sorted(after)
    for path in before:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)

    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    data = batch(seed=1)
    reference = torch_logits(hf, *data)
    assert max_error(archzoo_logits(again, *data), reference, data[3]) <= TOL
    assert max_error(torch_logits(case[1], *data), reference, data[3]) <= TOL


@pytest.mark.parametrize("name, hub_keys", [("t5_v1.0", {}), ("t5_v1.1", {"tie_word_embeddings": False})])
def test_t5_reads_hub_style_tie_flag(name, hub_keys, tmp_path):
    """Hub T5 configs carry no ``scale_decoder_outputs``: v1.0 omits the tie flag (tied and
    rescaled), v1.1 sets ``tie_word_embeddings: false`` (untied, not rescaled)."""
    torch.manual_seed(0)
    model = CASES[name]().eval()
    randomise_vectors(model)
    model.save_pretrained(tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("scale_decoder_outputs", None)
    config.pop("tie_word_embeddings", None)
    config.update(hub_keys)
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = load_hf(tmp_path)
    assert loaded.config.embedding.tie == (name == "t5_v1.0")
    data = batch(seed=2)
    assert max_error(archzoo_logits(loaded, *data), torch_logits(model, *data), data[3]) <= TOL


def test_t5_tied_config_with_a_different_head_is_refused(tmp_path):
    """A checkpoint whose lm_head differs from the embedding, under a config that ties them,
    cannot be represented and must not load silently."""
    torch.manual_seed(0)
    t5_v11().save_pretrained(tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["scale_decoder_outputs"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="lm_head"):
        load_hf(tmp_path)


@pytest.mark.parametrize("module", [t5_convert, bart_convert], ids=["t5", "bart"])
def test_config_the_format_cannot_express_is_refused(module):
    """A causal GPT-2-like config names the fields that stop it being written as T5 or BART."""
    with pytest.raises(ConfigError, match="family='decoder'") as err:
        module.config_to_hf(ModelConfig())
    assert "position.kind='learned'" in str(err.value) or "norm.placement='pre'" in str(err.value)


def test_t5_tied_head_without_rescale_is_written_as_an_untied_copy(tmp_path):
    """T5 ties its head exactly when it rescales; an archzoo T5 that ties without rescaling is
    written with lm_head = the embedding, and transformers computes the same logits."""
    torch.manual_seed(0)
    t5_v10().save_pretrained(tmp_path / "hf", safe_serialization=True)
    loaded = load_hf(tmp_path / "hf")
    cfg = loaded.config.replace(embedding=dataclasses.replace(loaded.config.embedding, tied_head_rescale=False))
    model = nnx.eval_shape(lambda: EncoderDecoder(cfg, rngs=nnx.Rngs(params=0)))
    set_params(model, get_params(loaded))
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(save_hf(model, tmp_path / "saved")).eval()
    assert not hf.config.scale_decoder_outputs
    data = batch(seed=3)
    assert max_error(archzoo_logits(model, *data), torch_logits(hf, *data), data[3]) <= TOL


def untied_bart(one_table: bool):
    """BART with tie_word_embeddings=false: transformers then gives the encoder, the decoder and
    ``model.shared`` their own tables and the head its own weights. With ``one_table`` the three
    tables are set to one (as in checkpoints written before transformers 5 untied them)."""
    torch.manual_seed(0)
    model = bart(tie_word_embeddings=False).eval()
    randomise_vectors(model)
    tables = [model.model.shared, model.model.encoder.embed_tokens, model.model.decoder.embed_tokens]
    assert len({t.weight.data_ptr() for t in tables + [model.lm_head]}) == 4
    if one_table:
        with torch.no_grad():
            for t in tables[1:]:
                t.weight.copy_(tables[0].weight)
    return model


def test_untied_bart_with_a_table_per_stack_is_refused_by_name(tmp_path):
    """archzoo's encoder-decoder has one embedding; separate encoder and decoder tables would
    silently lose one of them."""
    untied_bart(one_table=False).save_pretrained(tmp_path, safe_serialization=True)
    with pytest.raises(ValueError, match=r"'model\.encoder\.embed_tokens\.weight' differs.*tie_word_embeddings=false"):
        load_hf(tmp_path)


def test_untied_bart_with_one_table_converts_both_ways(tmp_path):
    """The untied head is read, and the write-back gives transformers every table it reads."""
    hf = untied_bart(one_table=True)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    data = batch(seed=4)
    expected = torch_logits(hf, *data)
    model = load_hf(tmp_path / "hf")
    assert not model.config.embedding.tie
    assert max_error(archzoo_logits(model, *data), expected, data[3]) <= TOL
    again = transformers.AutoModelForSeq2SeqLM.from_pretrained(save_hf(model, tmp_path / "saved")).eval()
    assert not again.config.tie_word_embeddings
    assert max_error(torch_logits(again, *data), expected, data[3]) <= TOL
