"""Published models: every ``configs/models/*.yaml`` counts exactly its published parameters.

Two independent checks: the count of the released checkpoint (model card, paper), and the same
architecture built with Hugging Face transformers on torch's meta device from hyperparameters
written here by hand (not read from archzoo's YAML), so a wrong YAML fails either way.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from archzoo.cli import main
from archzoo.models import count_params, load_model_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "models"

# Parameters of the released checkpoints (Hugging Face model cards / safetensors metadata);
# the papers round them.
PUBLISHED = {
    # Radford et al. 2019 (Table 2 says 117M); Hugging Face "gpt2".
    "gpt2-small": 124_439_808,
    # Radford et al. 2019 (Table 2 says 345M); Hugging Face "gpt2-medium".
    "gpt2-medium": 354_823_168,
    # Raffel et al. 2020 (~60M); Hugging Face "t5-small".
    "t5-small": 60_506_624,
    # T5 v1.1 release (Raffel et al. 2020 + gated GELU, untied head); "google/t5-v1_1-base".
    "t5-v1_1-base": 247_577_856,
    # Lewis et al. 2020 (~140M); "facebook/bart-base", parameters only (not final_logits_bias).
    "bart-base": 139_420_416,
    # Zhang et al. 2022, Table 1 (125M); "facebook/opt-125m".
    "opt-125m": 125_239_296,
    # BigScience 2022 (559M); "bigscience/bloom-560m".
    "bloom-560m": 559_214_592,
    # Touvron et al. 2023 (7B); "meta-llama/Llama-2-7b-hf".
    "llama2-7b": 6_738_415_616,
    # Llama Team 2024 (8B); "meta-llama/Meta-Llama-3-8B".
    "llama3-8b": 8_030_261_248,
    # Jiang et al. 2023 (7B); "mistralai/Mistral-7B-v0.1".
    "mistral-7b": 7_241_732_096,
}

# PaLM 8B, Chowdhery et al. 2022, Table 1: 8.63B (two decimals; no checkpoint was released).
PALM_8B_BILLIONS = 8.63

# Token table, untied head and learned position tables (the "embedding" parameters), by hand.
EMBEDDING = {
    "gpt2-small": 50257 * 768 + 1024 * 768,
    "gpt2-medium": 50257 * 1024 + 1024 * 1024,
    "t5-small": 32128 * 512,
    "t5-v1_1-base": 2 * 32128 * 768,
    "bart-base": 50265 * 768 + 2 * (2 + 1024) * 768,  # encoder and decoder own a table each
    "opt-125m": 50272 * 768 + (2 + 2048) * 768,
    "bloom-560m": 250880 * 1024,
    "llama2-7b": 2 * 32000 * 4096,
    "llama3-8b": 2 * 128256 * 4096,
    "mistral-7b": 2 * 32000 * 4096,
    "upalm-8b": 256000 * 4096,
}


def path(name: str) -> Path:
    return CONFIGS / f"{name}.yaml"


@functools.cache
def counted(name: str):
    return count_params(path(name))


def palm_8b_by_hand() -> int:
    """PaLM 8B from its architecture: D 4096, 32 layers, 16 query heads of 256, one kv head,
    SwiGLU F 16384, V 256000, tied embedding, one bias-free LayerNorm per parallel block."""
    D, L, H, G, Dh, F, V = 4096, 32, 16, 1, 256, 16384, 256000
    attention = D * H * Dh + 2 * D * G * Dh + H * Dh * D
    mlp = 3 * D * F
    layer = attention + mlp + D
    return V * D + L * layer + D


def test_every_config_has_a_published_count():
    """Or, for a config the literature gives no exact count of, a count by hand."""
    from tests.models.test_moe_configs import BY_HAND
    from tests.models.test_published_moe import PUBLISHED as MOE_PUBLISHED

    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted([*PUBLISHED, "upalm-8b", *MOE_PUBLISHED, *BY_HAND])


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_count_equals_published(name):
    assert counted(name).total == PUBLISHED[name]


def test_upalm_8b_matches_palm_8b():
    n = counted("upalm-8b").total
    assert n == palm_8b_by_hand() == 8_632_012_800
    assert round(n / 1e9, 2) == PALM_8B_BILLIONS


def _hf_models():
    import transformers as tf

    return {
        "gpt2-small": lambda: tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)),
        "gpt2-medium": lambda: tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=1024, n_layer=24, n_head=16)),
        "t5-small": lambda: tf.T5ForConditionalGeneration(
            tf.T5Config(
                vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8,
                feed_forward_proj="relu", tie_word_embeddings=True,
            )
        ),
        "t5-v1_1-base": lambda: tf.T5ForConditionalGeneration(
            tf.T5Config(
                vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12, num_heads=12,
                feed_forward_proj="gated-gelu", tie_word_embeddings=False,
            )
        ),
        "bart-base": lambda: tf.BartForConditionalGeneration(
            tf.BartConfig(
                vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024,
            )
        ),
        "opt-125m": lambda: tf.OPTForCausalLM(
            tf.OPTConfig(
                vocab_size=50272, hidden_size=768, word_embed_proj_dim=768, num_hidden_layers=12, num_attention_heads=12,
                ffn_dim=3072, max_position_embeddings=2048,
            )
        ),
        "bloom-560m": lambda: tf.BloomForCausalLM(tf.BloomConfig(vocab_size=250880, hidden_size=1024, n_layer=24, n_head=16)),
        "llama2-7b": lambda: tf.LlamaForCausalLM(
            tf.LlamaConfig(
                vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, max_position_embeddings=4096,
            )
        ),
        "llama3-8b": lambda: tf.LlamaForCausalLM(
            tf.LlamaConfig(
                vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, max_position_embeddings=8192,
            )
        ),
        "mistral-7b": lambda: tf.MistralForCausalLM(
            tf.MistralConfig(
                vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, max_position_embeddings=32768, sliding_window=4096,
            )
        ),
    }


def hf_count(name: str) -> int:
    """Parameters of the transformers model, built on the meta device (no memory)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    with torch.device("meta"):
        model = _hf_models()[name]()
    n = sum(p.numel() for p in model.parameters())  # tied weights once
    if name == "t5-v1_1-base" and model.lm_head.weight is model.shared.weight:
        # transformers 5 always ties T5's head to the embedding (huggingface/transformers#42815)
        # and reads tie_word_embeddings=False as "do not rescale"; the v1.1 checkpoint stores
        # its own lm_head [V, D], counted here.
        n += model.lm_head.weight.numel()
    return n


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_count_equals_transformers_on_meta_device(name):
    n = hf_count(name)
    assert n == counted(name).total
    assert n == PUBLISHED[name]


@pytest.mark.parametrize("name", sorted(EMBEDDING))
def test_embedding_and_non_embedding_split(name):
    n = counted(name)
    assert n.embedding == EMBEDDING[name]
    assert n.embedding + n.non_embedding == n.total


@pytest.mark.parametrize("name", ["upalm-8b", "gpt2-small"])
def test_prefix_mask_changes_no_parameter(name):
    cfg = load_model_config(path(name))
    twin = load_model_config(cfg, ["mask=" + ("causal" if cfg.mask == "prefix" else "prefix")])
    assert {cfg.mask, twin.mask} == {"prefix", "causal"}
    assert count_params(twin) == counted(name)


def test_upalm_is_a_prefix_decoder():
    cfg = load_model_config(path("upalm-8b"))
    assert (cfg.family, cfg.mask, cfg.parallel_block) == ("decoder", "prefix", True)


def test_cli_params_prints_each_total(capsys):
    names = ["gpt2-small", "t5-small", "opt-125m"]
    assert main(["params", *(str(path(n)) for n in names)]) == 0
    header, *rows = capsys.readouterr().out.strip().splitlines()
    assert header.split()[:3] == ["config", "family", "total"]
    assert len(rows) == len(names)
    for name, row in zip(names, rows):
        stem, family, total, embedding, non_embedding, active = row.split()
        cfg = load_model_config(path(name))
        assert (stem, family) == (name, cfg.family)
        assert total == f"{counted(name).total:,}" == f"{PUBLISHED[name]:,}"
        assert (embedding, non_embedding) == (f"{counted(name).embedding:,}", f"{counted(name).non_embedding:,}")
        assert active == total  # dense: every parameter is active
