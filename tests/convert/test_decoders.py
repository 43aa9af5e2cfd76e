"""Decoder converters against Hugging Face transformers: a random tiny transformers model and its
converted archzoo twin give the same logits on a right-padded batch, and archzoo -> save_hf ->
load_hf (and -> transformers) loses nothing."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import transformers
from flax import nnx

import archzoo
from archzoo.convert import get_params, load_hf, save_hf
from archzoo.convert import llama as llama_convert
from archzoo.models import build

V, L = 256, 12
TOL = 1e-4
SMALL = dict(vocab_size=V, bos_token_id=0, eos_token_id=0, pad_token_id=0)
LLAMA = dict(
    SMALL,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
)
OPT = dict(
    SMALL, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128, max_position_embeddings=32, word_embed_proj_dim=64
)
LLAMA3_ROPE = dict(
    rope_type="llama3", rope_theta=10000.0, factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64
)

# case -> (model_type, config class, config kwargs). Sizes are chosen so each mapping matters:
# BLOOM's 6 heads take ALiBi's non-power-of-two slopes; llama3's head_dim 32 puts RoPE frequencies
# in all three bands of Llama-3 scaling (original context 64); Mistral's window 4 < L.
CASES = {
    "gpt2": ("gpt2", "GPT2Config", dict(SMALL, n_embd=64, n_layer=2, n_head=4, n_positions=32)),
    "opt": ("opt", "OPTConfig", OPT),
    "opt_post_norm": ("opt", "OPTConfig", dict(OPT, do_layer_norm_before=False)),
    "bloom": ("bloom", "BloomConfig", dict(SMALL, hidden_size=48, n_layer=2, n_head=6)),
    "llama_gqa": ("llama", "LlamaConfig", dict(LLAMA, rope_parameters={"rope_type": "default", "rope_theta": 1000.0})),
    "llama3_bias_tied": (
        "llama",
        "LlamaConfig",
        dict(LLAMA, head_dim=32, attention_bias=True, tie_word_embeddings=True, rope_parameters=dict(LLAMA3_ROPE)),
    ),
    "mistral_window": ("mistral", "MistralConfig", dict(LLAMA, sliding_window=4)),
}


def randomize_(model, seed: int) -> None:
    """Gives every weight a non-trivial random value (norm scales near 1, biases near 0) so
    that a wrong mapping of any tensor changes the logits."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif p.ndim == 1:
                p.copy_(0.3 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))


def batch():
    """Two rows of L tokens; the second is right-padded after 8 tokens."""
    tokens = np.random.default_rng(0).integers(1, V, size=(2, L), dtype=np.int32)
    mask = np.ones((2, L), np.int32)
    mask[1, 8:] = 0
    return tokens, mask


def hf_logits(model, tokens, mask) -> np.ndarray:
    with torch.no_grad():
        ids, attention_mask = torch.tensor(tokens, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
        out = model(input_ids=ids, attention_mask=attention_mask)
    return out.logits.float().numpy()


def archzoo_logits(model, tokens, mask) -> np.ndarray:
    forward = nnx.jit(lambda m, t, f: m(t, f))
    return np.asarray(forward(model, tokens, archzoo.facts(segment_ids=mask)))


def max_error(a, b, mask) -> float:
    return float(np.abs(a - b)[mask.astype(bool)].max())


@pytest.fixture(scope="module", params=sorted(CASES))
def converted(request, tmp_path_factory):
    """A random transformers model saved with save_pretrained, and its archzoo conversion."""
    model_type, cls_name, kwargs = CASES[request.param]
    hf_config = getattr(transformers, cls_name)(**kwargs)
    torch.manual_seed(0)
    hf_model = transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation="eager")
    hf_model = hf_model.float().eval()
    randomize_(hf_model, seed=1)
    folder = tmp_path_factory.mktemp(request.param)
    hf_model.save_pretrained(folder, safe_serialization=True)
    tokens, mask = batch()
    model = load_hf(folder)
    return SimpleNamespace(
        case=request.param,
        model_type=model_type,
        model=model,
        tokens=tokens,
        mask=mask,
        hf=hf_logits(hf_model, tokens, mask),
        ours=archzoo_logits(model, tokens, mask),
    )


def test_logits_match_transformers(converted):
    c = converted
    assert c.model.config.name == c.model_type
    assert np.std(c.hf[c.mask.astype(bool)]) > 0.1, "the reference logits are too flat to tell mappings apart"
    assert max_error(c.ours, c.hf, c.mask) <= TOL


def test_save_hf_round_trip(converted, tmp_path):
    c = converted
    folder = save_hf(c.model, tmp_path / "out")
    again = load_hf(folder)
    assert again.config == c.model.config
    before, after = get_params(c.model), get_params(again)
    assert sorted(before) == sorted(after)
    for path in before:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    assert json.loads((folder / "config.json").read_text())["model_type"] == c.model_type
    # the same folder read into scanned stacks holds the same weights, and writes the same folder
    scanned = load_hf(folder, scan_layers=True)
    assert scanned.config.scan_layers and scanned.stack.blocks is None
    again_scanned, read = get_params(load_hf(save_hf(scanned, tmp_path / "scanned"))), get_params(scanned)
    for path in before:
        np.testing.assert_array_equal(read[path], before[path], err_msg=path)
        np.testing.assert_array_equal(again_scanned[path], before[path], err_msg=path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    reloaded = reloaded.float().eval()
    assert max_error(hf_logits(reloaded, c.tokens, c.mask), c.hf, c.mask) <= TOL


def test_unsupported_model_type_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gptj", "n_embd": 64}))
    with pytest.raises(ValueError, match="'gptj'"):
        load_hf(tmp_path)


@pytest.mark.parametrize(
    "model_type, cls_name, kwargs, key",
    [
        ("opt", "OPTConfig", dict(OPT, word_embed_proj_dim=32), "word_embed_proj_dim"),
        ("llama", "LlamaConfig", dict(LLAMA, mlp_bias=True), "mlp_bias"),
        (
            "bloom",
            "BloomConfig",
            dict(SMALL, hidden_size=48, n_layer=2, n_head=6, apply_residual_connection_post_layernorm=True),
            "apply_residual_connection_post_layernorm",
        ),
        (
            "gpt2",
            "GPT2Config",
            dict(SMALL, n_embd=64, n_layer=2, n_head=4, scale_attn_by_inverse_layer_idx=True),
            "scale_attn_by_inverse_layer_idx",
        ),
    ],
)
def test_unconvertible_hf_config_is_refused(tmp_path, model_type, cls_name, kwargs, key):
    (tmp_path / "config.json").write_text(getattr(transformers, cls_name)(**kwargs).to_json_string())
    with pytest.raises(ValueError, match=rf"'{model_type}'.*{key}"):
        load_hf(tmp_path)


@pytest.mark.parametrize(
    "model_type, changes, field",
    [
        ("gpt2", dict(norm={"kind": "rmsnorm"}), "norm.kind"),
        ("opt", dict(position={"kind": "rope"}), "position.kind"),
        ("bloom", dict(position={"kind": "alibi"}, norm={"embedding_norm": True}, mlp={"d_ff": 100}), "mlp.d_ff"),
        (
            "llama",
            dict(name="llama", position={"kind": "rope"}, attention={"num_heads": 4, "sliding_window": 4}),
            "attention.sliding_window",
        ),
    ],
)
def test_save_hf_refuses_what_the_format_cannot_hold(tmp_path, model_type, changes, field):
    with pytest.raises(ValueError, match=rf"'{model_type}'.*{field}"):
        save_hf(nnx.eval_shape(lambda: build(d_model=32, **changes)), tmp_path, model_type=model_type)


def test_llama_reads_legacy_rope_fields():
    base = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 128}
    legacy = dict(base, rope_theta=500000.0, rope_scaling={k: v for k, v in LLAMA3_ROPE.items() if k != "rope_theta"})
    current = dict(base, rope_parameters=dict(LLAMA3_ROPE, rope_theta=500000.0))
    pos = llama_convert.config_from_hf(legacy).position
    assert pos == llama_convert.config_from_hf(current).position
    assert (pos.rope_theta, pos.rope_scaling.factor, pos.rope_scaling.original_max_position) == (500000.0, 4.0, 64)
