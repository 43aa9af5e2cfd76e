"""The MoE configs archzoo ships beside the published ones: each count against a count by hand
from its architecture (and, for the Switch-style T5, against transformers on the meta device),
and the active count as the total less the experts a token skips."""

from __future__ import annotations

import pytest

from archzoo.models import count_params
from tests.models.test_published import path


def glam_style_by_hand() -> tuple[int, int]:
    """24 layers, D 2048, 16 heads of 128, GELU F 8192 (up, down), V 256000 tied; layers 1, 3, ...
    hold 64 experts and a router [D, 64]; two bias-free LayerNorms per block and a final one."""
    D, L, H, Dh, F, V, E, k = 2048, 24, 16, 128, 8192, 256000, 64, 2
    attention, expert, norms = 4 * D * H * Dh, 2 * D * F, 2 * D
    dense = attention + expert + norms
    moe = attention + E * expert + D * E + norms
    total = (L // 2) * (dense + moe) + V * D + D
    return total, total - (L // 2) * (E - k) * expert


def upalm_8b_moe8_by_hand() -> tuple[int, int]:
    """PaLM 8B (parallel blocks, one bias-free LayerNorm each, multi-query attention) with every
    SwiGLU MLP (3 * D * F) made 8 experts and a router [D, 8]."""
    D, L, H, G, Dh, F, V, E, k = 4096, 32, 16, 1, 256, 16384, 256000, 8, 2
    attention = D * H * Dh + 2 * D * G * Dh + H * Dh * D
    expert = 3 * D * F
    layer = attention + E * expert + D * E + D
    total = V * D + L * layer + D
    return total, total - L * (E - k) * expert


# configs without a published exact count: name -> (total, active) by hand or by transformers
BY_HAND = {"glam-style": glam_style_by_hand, "upalm-8b-moe8": upalm_8b_moe8_by_hand, "t5-small-switch8": None}


@pytest.mark.parametrize("name", ["glam-style", "upalm-8b-moe8"])
def test_count_and_active_count_equal_the_count_by_hand(name):
    n = count_params(path(name))
    assert (n.total, n.active) == BY_HAND[name]()
    assert f"{n.total:,} total, {n.active:,} active" in path(name).read_text()  # the header says it


def test_switch_style_t5_small_equals_transformers_switch_on_the_meta_device():
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers")
    config = tf.SwitchTransformersConfig(
        vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8,
        num_experts=8, num_sparse_encoder_layers=3, num_sparse_decoder_layers=3, tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = tf.SwitchTransformersForConditionalGeneration(config)
    n = count_params(path("t5-small-switch8"))
    assert n.total == sum(p.numel() for p in model.parameters())
    # the dense t5-small plus 7 more experts and a router in each of the 6 MoE layers
    dense = count_params(path("t5-small")).total
    expert = 2 * 512 * 2048
    assert n.total == dense + 6 * (7 * expert + 512 * 8)
    assert n.active == dense + 6 * 512 * 8
    assert f"{n.total:,} total, {n.active:,} active" in path("t5-small-switch8").read_text().replace("\n# ", " ")
