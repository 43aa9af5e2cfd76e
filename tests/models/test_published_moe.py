"""Published Mixture-of-Experts models: each MoE ``configs/models/*.yaml`` counts exactly its
released checkpoint's parameters, total and active.

Three independent checks: the published counts; the same architecture built with transformers
on torch's meta device (no memory) from the published config.json written here by hand (not
read from archzoo's YAML), its active count taken from the shapes of its expert modules; and the
YAML equals what archzoo's converter reads from that config.json, so the YAML is the published
model and not only one of the same size.

"Active" is the published definition: the total less, in every MoE layer, the weights of the
E - k routed experts a token does not use (the embeddings, the router and shared experts stay).
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import pytest

from archzoo.convert import HF_CONVERTERS
from archzoo.models import count_params, load_model_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "models"

# name -> (total, active) of the released checkpoints (model cards / safetensors metadata);
# Switch publishes no active count.
PUBLISHED = {
    # Fedus et al. 2022; Hugging Face "google/switch-base-8".
    "switch-base-8": (619_339_008, None),
    # Jiang et al. 2024 (46.7B total, 12.9B active); "mistralai/Mixtral-8x7B-v0.1".
    "mixtral-8x7b": (46_702_792_704, 12_879_925_248),
    # Muennighoff et al. 2024 (6.9B total, 1.3B active); "allenai/OLMoE-1B-7B-0924".
    "olmoe-1b-7b": (6_919_161_856, 1_282_017_280),
    # Qwen Team 2024 (14.3B total, 2.7B active); "Qwen/Qwen1.5-MoE-A2.7B".
    "qwen1.5-moe-a2.7b": (14_315_784_192, 2_689_173_504),
}

# The published config.json of each (the keys that shape the model, the special-token ids and
# the router loss coefficients), written by hand.
HF_CONFIGS = {
    "mixtral-8x7b": dict(
        model_type="mixtral", vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2, hidden_act="silu",
        max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None,
        tie_word_embeddings=False, router_aux_loss_coef=0.02, bos_token_id=1, eos_token_id=2,
    ),
    "olmoe-1b-7b": dict(
        model_type="olmoe", vocab_size=50304, hidden_size=2048, intermediate_size=1024, num_hidden_layers=16,
        num_attention_heads=16, num_key_value_heads=16, num_experts=64, num_experts_per_tok=8, norm_topk_prob=False,
        clip_qkv=None, attention_bias=False, hidden_act="silu", max_position_embeddings=4096, rms_norm_eps=1e-5,
        rope_theta=10000.0, rope_scaling=None, tie_word_embeddings=False, router_aux_loss_coef=0.01, pad_token_id=1,
        eos_token_id=50279,
    ),
    "qwen1.5-moe-a2.7b": dict(
        model_type="qwen2_moe", vocab_size=151936, hidden_size=2048, intermediate_size=5632, moe_intermediate_size=1408,
        shared_expert_intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
        num_experts=60, num_experts_per_tok=4, decoder_sparse_step=1, norm_topk_prob=False, hidden_act="silu",
        max_position_embeddings=8192, rms_norm_eps=1e-6, rope_theta=1e6, use_sliding_window=False,
        sliding_window=32768, max_window_layers=21, tie_word_embeddings=False, router_aux_loss_coef=0.001,
        bos_token_id=151643, eos_token_id=151643,
    ),
    "switch-base-8": dict(
        model_type="switch_transformers", vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12,
        num_decoder_layers=12, num_heads=12, num_experts=8, num_sparse_encoder_layers=6, num_sparse_decoder_layers=6,
        encoder_sparse_step=2, decoder_sparse_step=2, expert_capacity=64, router_bias=False, router_jitter_noise=0.01,
        router_dtype="float32", router_z_loss_coef=0.001, router_aux_loss_coef=0.001, relative_attention_num_buckets=32,
        relative_attention_max_distance=128, dense_act_fn="relu", layer_norm_epsilon=1e-6, dropout_rate=0.1,
        is_encoder_decoder=True, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ),
}

_HF_CLASSES = {
    "mixtral": ("MixtralConfig", "MixtralForCausalLM"),
    "olmoe": ("OlmoeConfig", "OlmoeForCausalLM"),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM"),
    "switch_transformers": ("SwitchTransformersConfig", "SwitchTransformersForConditionalGeneration"),
}


def path(name: str) -> Path:
    return CONFIGS / f"{name}.yaml"


@functools.cache
def counted(name: str):
    return count_params(path(name))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_count_equals_published(name):
    total, active = PUBLISHED[name]
    n = counted(name)
    assert n.total == total
    if active is not None:
        assert n.active == active
    assert n.embedding + n.non_embedding == n.total


@functools.cache
def hf_count(name: str) -> tuple[int, int]:
    """(total, active) of the transformers model of the published config, on the meta device.
    Active: the total less (E - k) experts' weights in every MoE layer, an expert's size read
    from the fused expert tensors (``gate_up_proj [E, 2F, D]``, ``down_proj [E, D, F]``) or
    Switch's first expert module."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = HF_CONFIGS[name]
    config_cls, model_cls = _HF_CLASSES[hf["model_type"]]
    config = getattr(transformers, config_cls).from_dict(hf)
    with torch.device("meta"):
        model = getattr(transformers, model_cls)(config)
    total = sum(p.numel() for p in model.parameters())  # tied weights once
    k = getattr(config, "num_experts_per_tok", 1)
    inactive = 0
    for module in model.modules():
        if hasattr(module, "gate_up_proj"):
            E, per_expert = module.gate_up_proj.shape[0], module.gate_up_proj[0].numel() + module.down_proj[0].numel()
        elif type(module).__name__ == "SwitchTransformersExperts":
            E, per_expert = len(module), sum(p.numel() for p in module["expert_0"].parameters())
        else:
            continue
        inactive += (E - k) * per_expert
    return total, total - inactive


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_count_equals_transformers_on_meta_device(name):
    total, active = hf_count(name)
    assert (total, active) == (counted(name).total, counted(name).active)
    assert total == PUBLISHED[name][0]
    assert PUBLISHED[name][1] in (None, active)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_yaml_is_what_the_converter_reads_from_the_published_config(name):
    hf = HF_CONFIGS[name]
    module = importlib.import_module(HF_CONVERTERS[hf["model_type"]])
    assert module.config_from_hf(hf).replace(token_ids=None) == load_model_config(path(name))


def test_active_counts_routed_experts_top_k_times():
    """Mixtral by hand: 32 layers of attention, 8 experts of 3 * 4096 * 14336, a router and two
    norms, the embedding and the untied head; a token passes through 2 experts per layer."""
    D, F, L, V, E, k = 4096, 14336, 32, 32000, 8, 2
    attention = 2 * D * D + 2 * D * 1024
    expert = 3 * D * F
    layer = attention + E * expert + D * E + 2 * D
    total = L * layer + 2 * V * D + D
    assert (counted("mixtral-8x7b").total, counted("mixtral-8x7b").active) == (total, total - L * (E - k) * expert)
