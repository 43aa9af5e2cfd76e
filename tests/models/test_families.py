"""Invariants every family must keep: causality, packing equivalence, prefix = causal on an
empty prefix, and mask equivalence. Each compares two computations that must agree exactly (or
to float tolerance), on tiny random models."""

import functools

import jax
import numpy as np
import pytest
from flax import nnx

import archzoo
from archzoo import masks
from tests.layers.test_positions import t5_bucket

V = 256
BASE = dict(vocab_size=V, d_model=32, num_layers=2, attention={"num_heads": 4}, mlp={"d_ff": 64})

DECODERS = {
    "gpt2": dict(BASE),
    "llama": dict(
        BASE,
        attention={"num_heads": 4, "num_kv_heads": 2},
        mlp={"d_ff": 64, "activation": "silu", "gated": True, "bias": False},
        norm={"kind": "rmsnorm"},
        position={"kind": "rope"},
        embedding={"tie": False},
    ),
    "bloom": dict(BASE, position={"kind": "alibi"}, norm={"embedding_norm": True}),
    "t5_bias": dict(BASE, position={"kind": "t5_bias"}, attention={"num_heads": 4, "scale": False}),
    "post_norm": dict(BASE, norm={"placement": "post", "final_norm": False}, position={"kind": "learned", "offset": 2}),
    "parallel_mqa": dict(BASE, parallel_block=True, attention={"num_heads": 4, "num_kv_heads": 1}, position={"kind": "rope"}),
    "mistral_window": dict(BASE, attention={"num_heads": 4, "num_kv_heads": 2, "sliding_window": 3}, position={"kind": "rope"}),
    # MoE versions: token-choice dropless routing reads one token at a time, so every invariant holds
    "mixtral_moe": dict(
        BASE,
        mlp={"d_ff": 64, "activation": "silu", "gated": True, "bias": False},
        norm={"kind": "rmsnorm"},
        position={"kind": "rope"},
        moe={"num_experts": 4, "top_k": 2, "grouped_matmul": "padded"},
    ),
    "shared_experts_moe": dict(
        BASE, moe={"num_experts": 4, "top_k": 1, "normalize": False, "num_shared_experts": 1, "shared_gate": True, "every": 2, "offset": 1, "grouped_matmul": "ragged"}
    ),
}
ENCODER_DECODERS = {
    "bart": dict(BASE, family="encoder_decoder", norm={"placement": "post", "final_norm": False, "embedding_norm": True}, position={"kind": "learned", "offset": 2}, embedding={"final_logits_bias": True}),
    "t5": dict(BASE, family="encoder_decoder", position={"kind": "t5_bias"}, norm={"kind": "rmsnorm", "bias": False}, attention={"num_heads": 4, "scale": False}, embedding={"tied_head_rescale": True}),
    "switch_dropless": dict(
        BASE,
        family="encoder_decoder",
        position={"kind": "t5_bias"},
        norm={"kind": "rmsnorm", "bias": False},
        attention={"num_heads": 4, "scale": False},
        moe={"num_experts": 4, "top_k": 1, "normalize": False, "every": 2, "offset": 1},
    ),
}


def tokens(rng, *shape):
    return rng.integers(0, V, size=shape, dtype=np.int32)


@pytest.fixture(scope="module", params=sorted(DECODERS))
def decoder_pair(request):
    """The causal decoder and its prefix twin, built from the same seed (same weights)."""
    cfg = DECODERS[request.param]
    return archzoo.build(**cfg, seed=1), archzoo.build(**cfg, mask="prefix", seed=1)


def test_causal_decoder_is_causal(decoder_pair):
    model, _ = decoder_pair
    rng = np.random.default_rng(0)
    x = tokens(rng, 2, 10)
    base = np.asarray(model(x))
    for t in (3, 7, 9):
        y = x.copy()
        y[:, t] = (y[:, t] + 1) % V
        changed = np.asarray(model(y))
        np.testing.assert_allclose(changed[:, :t], base[:, :t], atol=1e-6, rtol=0)
        assert np.abs(changed[:, t] - base[:, t]).max() > 1e-4  # the changed token does reach its own output


def test_prefix_decoder_never_lets_targets_reach_the_prefix(decoder_pair):
    _, model = decoder_pair
    rng = np.random.default_rng(1)
    x = tokens(rng, 2, 10)
    is_input = np.zeros((2, 10), bool)
    is_input[0, :4] = True
    is_input[1, :6] = True
    f = archzoo.facts(is_input=is_input)
    base = np.asarray(model(x, f))
    for t in (6, 8):
        y = x.copy()
        y[:, t] = (y[:, t] + 1) % V
        changed = np.asarray(model(y, f))
        # no prefix output and no earlier target output may change
        np.testing.assert_allclose(changed[:, :t], base[:, :t], atol=1e-6, rtol=0)


def test_prefix_is_bidirectional_over_the_prefix(decoder_pair):
    """A row that is all prefix equals the same weights under the full mask (mask equivalence)."""
    _, model = decoder_pair
    x = tokens(np.random.default_rng(2), 2, 9)
    f = archzoo.facts(is_input=np.ones((2, 9), bool))
    full = masks.full(f) & masks.same_segment(f)
    if model.config.attention.sliding_window:
        full = full & masks.sliding_window(model.config.attention.sliding_window, f)
    np.testing.assert_allclose(np.asarray(model(x, f)), np.asarray(model(x, f, mask=full)), atol=1e-6, rtol=0)


def test_prefix_decoder_with_empty_prefix_equals_causal_exactly(decoder_pair):
    causal, prefix = decoder_pair
    x = tokens(np.random.default_rng(3), 3, 11)
    seg = np.array([[1] * 11, [1] * 5 + [2] * 6, [1] * 8 + [0] * 3])
    f = archzoo.facts(segment_ids=seg)
    want = causal(x, f)
    if prefix.config.position.kind == "t5_bias":
        # A prefix stack reads T5 buckets both ways (its mask sees later keys in the prefix), so
        # its causal twin is the same stack under the causal mask.
        want = prefix(x, f, mask=masks.causal(f) & masks.same_segment(f))
    np.testing.assert_array_equal(np.asarray(want), np.asarray(prefix(x, f)))


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_one_layer_prefix_decoder_gives_the_causal_targets_and_two_layers_do_not(name):
    """A target query sees the same keys under both masks; only the prefix tokens' own outputs
    differ, and those reach a target from the second layer on. So a one-layer prefix decoder
    predicts every target exactly as its causal twin (its loss is the same)."""
    x = tokens(np.random.default_rng(4), 2, 10)
    is_input = np.arange(10)[None] < np.array([[4], [6]])
    f = archzoo.facts(is_input=is_input)
    targets = ~is_input
    for layers, equal in ((1, True), (2, False)):
        cfg = dict(DECODERS[name], num_layers=layers)
        causal, prefix = archzoo.build(**cfg, seed=5), archzoo.build(**cfg, mask="prefix", seed=5)
        a, b = np.asarray(causal(x, f))[targets], np.asarray(prefix(x, f))[targets]
        if equal:
            np.testing.assert_allclose(b, a, atol=1e-6, rtol=0)
        else:
            assert np.abs(b - a).max() > 1e-4
        assert np.abs(np.asarray(causal(x, f))[is_input] - np.asarray(prefix(x, f))[is_input]).max() > 1e-4


@functools.partial(jax.jit, static_argnums=0)
def _jitted(graphdef, state, *args):
    return nnx.merge(graphdef, state)(*args)


def _packed_equals_alone(model, lengths, is_input_len=None):
    """Packs examples of ``lengths`` into one padded row and compares with each run alone."""
    graphdef, state = nnx.split(model)
    model = functools.partial(_jitted, graphdef, state)  # compiled: an eager MoE forward pass takes seconds
    rng = np.random.default_rng(sum(lengths))
    examples = [tokens(rng, 1, n) for n in lengths]
    pad = 3
    row = np.concatenate(examples + [np.zeros((1, pad), np.int32)], axis=1)
    seg = np.concatenate([np.full((1, n), i + 1) for i, n in enumerate(lengths)] + [np.zeros((1, pad), int)], axis=1)
    inp = None
    if is_input_len is not None:
        inp = np.concatenate([np.arange(n)[None] < k for n, k in zip(lengths, is_input_len)] + [np.zeros((1, pad), bool)], axis=1)
    packed = np.asarray(model(row, archzoo.facts(segment_ids=seg, is_input=inp)))
    start = 0
    for i, ex in enumerate(examples):
        n = ex.shape[1]
        alone_inp = None if inp is None else inp[:, start : start + n]
        alone = np.asarray(model(ex, archzoo.facts(shape=ex.shape, is_input=alone_inp)))
        np.testing.assert_allclose(packed[:, start : start + n], alone, atol=2e-5, rtol=0)
        start += n


def test_packing_decoder(decoder_pair):
    causal, prefix = decoder_pair
    _packed_equals_alone(causal, [4, 7, 2])
    _packed_equals_alone(prefix, [4, 7, 2], is_input_len=[2, 3, 1])


def test_packing_encoder():
    model = archzoo.build(**BASE, family="encoder", seed=2)
    _packed_equals_alone(model, [5, 3, 6])


@pytest.mark.parametrize("name", sorted(ENCODER_DECODERS))
def test_packing_and_causality_encoder_decoder(name):
    built = archzoo.build(**ENCODER_DECODERS[name], seed=3)
    graphdef, state = nnx.split(built)

    def model(*args):  # compiled: an eager MoE forward pass takes seconds
        return _jitted(graphdef, state, *args)

    rng = np.random.default_rng(4)
    enc_lens, dec_lens = [5, 3], [4, 6]
    enc = [tokens(rng, 1, n) for n in enc_lens]
    dec = [tokens(rng, 1, n) for n in dec_lens]

    def pack(parts, pad):
        row = np.concatenate(parts + [np.zeros((1, pad), np.int32)], axis=1)
        seg = np.concatenate([np.full((1, p.shape[1]), i + 1) for i, p in enumerate(parts)] + [np.zeros((1, pad), int)], axis=1)
        return row, archzoo.facts(segment_ids=seg)

    enc_row, enc_f = pack(enc, 2)
    dec_row, dec_f = pack(dec, 1)
    packed = np.asarray(model(enc_row, dec_row, enc_f, dec_f))
    start = 0
    for e, d in zip(enc, dec):
        alone = np.asarray(model(e, d))
        np.testing.assert_allclose(packed[:, start : start + d.shape[1]], alone, atol=2e-5, rtol=0)
        start += d.shape[1]

    # decoder causality: a later decoder token changes no earlier output
    e, d = enc[1], dec[1]
    base = np.asarray(model(e, d))
    d2 = d.copy()
    d2[:, 4] = (d2[:, 4] + 1) % V
    np.testing.assert_allclose(np.asarray(model(e, d2))[:, :4], base[:, :4], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["gpt2", "llama", "bloom", "t5_bias"])
def test_attention_backends_agree_in_a_whole_model(name):
    cfg = DECODERS[name]
    xla = archzoo.build(**cfg, seed=5)
    jax_path = archzoo.build(**cfg, seed=5, overrides=["attention.backend=jax"])
    x = tokens(np.random.default_rng(5), 2, 12)
    f = archzoo.facts(segment_ids=np.array([[1] * 7 + [2] * 5, [1] * 9 + [0] * 3]))
    np.testing.assert_allclose(np.asarray(xla(x, f)), np.asarray(jax_path(x, f)), atol=2e-5, rtol=0)


def test_bfloat16_compute_tracks_float32():
    """bf16 compute with fp32 parameters stays close to the fp32 model (same weights)."""
    f32 = archzoo.build(**DECODERS["llama"], seed=6)
    bf16 = archzoo.build(**DECODERS["llama"], seed=6, dtype="bfloat16")
    x = tokens(np.random.default_rng(6), 2, 8)
    a, b = np.asarray(f32(x)), np.asarray(bf16(x))
    assert b.dtype == np.float32
    assert np.abs(a - b).max() < 0.1 * np.abs(a).max() + 0.05


# -- T5 relative buckets in a decoder stack, against a forward pass written out in numpy -----------

T5_ONE_LAYER = dict(
    vocab_size=V,
    d_model=32,
    num_layers=1,
    attention={"num_heads": 4, "scale": False},
    mlp={"d_ff": 64, "activation": "relu", "bias": False},
    norm={"kind": "rmsnorm", "bias": False},
    position={"kind": "t5_bias", "num_buckets": 8, "max_distance": 16},
)


def t5_decoder_reference(model, tokens_BL, seg_BL, pos_BL, inp_BL, *, prefix: bool, bidirectional: bool):
    """Logits of a one-layer pre-RMSNorm decoder with T5 relative bias, loop over (q, k) pairs:
    each allowed key gets ``q . k + table[bucket(k_pos - q_pos), head]``."""
    w = {".".join(str(p) for p in path): np.asarray(v[...], np.float64) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    block, eps = "stack.blocks.0.", model.config.norm.eps
    num_buckets, max_distance = model.config.position.num_buckets, model.config.position.max_distance

    def rms(x, scale):
        return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * scale

    x = w["embed.table"][tokens_BL]
    h = rms(x, w[block + "attn_norm.scale"])
    q, k, v = (np.einsum("bld,dhe->blhe", h, w[block + f"attn.{n}"]) for n in "qkv")
    B, L = tokens_BL.shape
    H = q.shape[2]
    out = np.zeros_like(q)
    for b in range(B):
        for i in range(L):
            keys = [
                j
                for j in range(L)
                if seg_BL[b, j] == seg_BL[b, i]
                and (pos_BL[b, j] <= pos_BL[b, i] or (prefix and inp_BL[b, i] and inp_BL[b, j]))
            ]
            for hd in range(H):
                bias = [w["stack.relative_bias.table"][t5_bucket(int(pos_BL[b, j] - pos_BL[b, i]), bidirectional, num_buckets, max_distance), hd] for j in keys]
                logits = np.array([q[b, i, hd] @ k[b, j, hd] for j in keys]) + np.array(bias)
                p = np.exp(logits - logits.max())
                out[b, i, hd] = (p / p.sum()) @ v[b, keys, hd]
    x = x + np.einsum("blhe,hed->bld", out, w[block + "attn.o"])
    h = rms(x, w[block + "mlp_norm.scale"])
    x = x + np.maximum(h @ w[block + "mlp.up"], 0) @ w[block + "mlp.down"]
    return rms(x, w["stack.final_norm.scale"]) @ w["embed.table"].T


def _t5_batch():
    rng = np.random.default_rng(7)
    x = tokens(rng, 2, 10)
    seg = np.array([[1] * 6 + [2] * 3 + [0], [1] * 10])
    inp = np.array([[1, 1, 1, 1, 0, 0, 1, 0, 0, 0], [1] * 5 + [0] * 5], bool)
    return x, archzoo.facts(segment_ids=seg, is_input=inp)


def test_t5_prefix_decoder_reads_future_keys_of_the_prefix_in_their_own_buckets():
    """Inside the prefix a query sees later keys; as in Mesh TensorFlow's prefix LM
    (``input_full_attention``), the whole stack reads buckets both ways, so the key 3 ahead
    is not the query's own bucket 0."""
    model = archzoo.build(**T5_ONE_LAYER, mask="prefix", seed=8)
    x, f = _t5_batch()
    facts = [np.asarray(a) for a in (f.segment_ids, f.positions, f.is_input)]
    want = t5_decoder_reference(model, x, *facts, prefix=True, bidirectional=True)
    real = facts[0] != 0
    np.testing.assert_allclose(np.asarray(model(x, f))[real], want[real], atol=2e-5, rtol=1e-4)


def test_t5_causal_decoder_reads_buckets_one_way():
    model = archzoo.build(**T5_ONE_LAYER, seed=8)
    x, f = _t5_batch()
    facts = [np.asarray(a) for a in (f.segment_ids, f.positions, f.is_input)]
    want = t5_decoder_reference(model, x, *facts, prefix=False, bidirectional=False)
    real = facts[0] != 0
    np.testing.assert_allclose(np.asarray(model(x, f))[real], want[real], atol=2e-5, rtol=1e-4)
