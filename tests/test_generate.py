"""Generation with a KV cache against full forward passes, sampling filters against brute force."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import archzoo
from archzoo.generation import filter_logits, generate
from archzoo.masks import facts
from archzoo.models import build

N = 6
PROMPTS = [[5, 17, 42, 7, 99, 13], [3], [200, 1, 2, 250]]
ENCODER_INPUTS = [[9, 8, 7, 6, 5], [4, 3], [100, 101, 102]]
REFERENCE_LEN = 16

DECODERS = {
    "learned": dict(position={"kind": "learned", "max_len": len(PROMPTS[0]) + N}),
    "rope_gqa_window": dict(
        position={"kind": "rope"},
        attention={"num_heads": 4, "num_kv_heads": 2, "sliding_window": 3},
        norm={"kind": "rmsnorm"},
        mlp={"d_ff": 64, "activation": "silu", "gated": True, "bias": False},
        embedding={"tie": False},
    ),
    "alibi": dict(position={"kind": "alibi"}, norm={"embedding_norm": True}),
    "t5_bias": dict(position={"kind": "t5_bias"}, norm={"kind": "rmsnorm"}),
    "prefix": dict(mask="prefix", position={"kind": "rope"}),
    "prefix_t5_bias": dict(mask="prefix", position={"kind": "t5_bias"}, norm={"kind": "rmsnorm"}),
    # dropless token-choice routing reads one token at a time: one decode step routes as the full pass
    "moe_top2": dict(position={"kind": "rope"}, moe={"num_experts": 4, "top_k": 2, "num_shared_experts": 1}),
    "prefix_moe_ragged": dict(mask="prefix", position={"kind": "rope"}, moe={"num_experts": 4, "top_k": 1, "grouped_matmul": "ragged"}),
}
ENCODER_DECODERS = {
    "learned": dict(position={"kind": "learned", "max_len": 12}, embedding={"tie": False}),
    "t5_bias": dict(position={"kind": "t5_bias"}, norm={"kind": "rmsnorm"}, embedding={"tied_head_rescale": True}),
    "switch_dropless": dict(
        position={"kind": "t5_bias"}, norm={"kind": "rmsnorm"}, moe={"num_experts": 4, "top_k": 1, "normalize": False, "every": 2, "offset": 1}
    ),
}


def _sharpen(model, factor: float = 8.0):
    """Scales weight matrices up from the 0.02 init so attention is far from uniform."""
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        if var[...].ndim >= 2 and "relative_bias" not in {str(p) for p in path}:
            var[...] = var[...] * factor
    return model


@functools.cache
def _model(family: str, name: str):
    spec = (DECODERS if family == "decoder" else ENCODER_DECODERS)[name]
    kwargs = dict(
        family=family, vocab_size=256, d_model=32, num_layers=2, attention={"num_heads": 4}, mlp={"d_ff": 64}, embedding={"tie": False}
    )
    kwargs.update(spec)
    return _sharpen(build(seed=1, **kwargs))


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, *args):
    return nnx.merge(graphdef, state)(*args)


def _right_padded(rows, length):
    """Tokens ``[B, length]`` with each row from column 0 and segment ids (0 after the row)."""
    tokens = np.zeros((len(rows), length), np.int32)
    segment_ids = np.zeros((len(rows), length), np.int32)
    for b, row in enumerate(rows):
        tokens[b, : len(row)] = row
        segment_ids[b, : len(row)] = 1
    return jnp.asarray(tokens), segment_ids


def _decoder_reference(model, prompts, new_tokens, *, bidirectional=False):
    """Logits ``[B, N, V]`` of a full forward pass (no cache) over each prompt + new tokens,
    rows unpadded on the left, at the positions that chose the new tokens."""
    new_tokens = np.asarray(new_tokens)
    rows = [list(p) + new_tokens[b].tolist() for b, p in enumerate(prompts)]
    tokens, segment_ids = _right_padded(rows, REFERENCE_LEN)
    is_input = np.zeros_like(segment_ids, bool)
    for b, p in enumerate(prompts):
        is_input[b, : len(p)] = bidirectional
    logits = np.asarray(_forward(*nnx.split(model), tokens, facts(segment_ids, is_input=is_input)))
    n = new_tokens.shape[1]
    return np.stack([logits[b, len(p) - 1 : len(p) - 1 + n] for b, p in enumerate(prompts)])


@pytest.mark.parametrize("name", list(DECODERS))
def test_decoder_cache_matches_full_forward_on_ragged_batch(name):
    model = _model("decoder", name)
    prefix = model.config.mask == "prefix"
    out = generate(model, PROMPTS, max_new_tokens=N, return_logits=True)
    assert out.tokens.shape == (len(PROMPTS), N)
    np.testing.assert_array_equal(out.lengths, [N] * len(PROMPTS))
    ref = _decoder_reference(model, PROMPTS, out.tokens, bidirectional=prefix)
    np.testing.assert_allclose(out.logits, ref, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out.tokens, ref.argmax(-1))
    assert len(set(np.asarray(out.tokens).ravel().tolist())) > 3, "greedy path is degenerate"
    if prefix:
        causal_ref = _decoder_reference(model, PROMPTS, out.tokens, bidirectional=False)
        assert np.abs(causal_ref - ref).max() > 1e-3, "the prompt's is_input must change the logits"


def test_greedy_equals_loop_of_full_forwards():
    model = _model("decoder", "learned")
    prompts = np.array([[5, 17, 42, 7, 99, 13], [60, 61, 62, 63, 64, 65], [200, 1, 2, 250, 9, 9]], np.int32)
    out = generate(model, prompts, max_new_tokens=N, return_logits=True)
    seqs = [list(p) for p in prompts]
    for _ in range(N):
        tokens, segment_ids = _right_padded(seqs, REFERENCE_LEN)
        logits = np.asarray(_forward(*nnx.split(model), tokens, facts(segment_ids)))
        for b, seq in enumerate(seqs):
            seq.append(int(logits[b, len(seq) - 1].argmax()))
    np.testing.assert_array_equal(out.tokens, [seq[-N:] for seq in seqs])


@pytest.mark.parametrize(("name", "with_prompts", "start"), [("learned", True, 1), ("t5_bias", False, 0), ("switch_dropless", True, 0)])
def test_encoder_decoder_cache_matches_full_forward(name, with_prompts, start):
    model = _model("encoder_decoder", name)
    prompts = [[11, 12], [], [7]] if with_prompts else [[], [], []]
    out = generate(
        model,
        prompts if with_prompts else None,
        encoder_inputs=ENCODER_INPUTS,
        decoder_start_id=start,
        max_new_tokens=N,
        return_logits=True,
    )
    sources, source_segments = _right_padded(ENCODER_INPUTS, 8)
    rows = [[start] + p + np.asarray(out.tokens[b]).tolist() for b, p in enumerate(prompts)]
    targets, target_segments = _right_padded(rows, REFERENCE_LEN)
    logits = np.asarray(_forward(*nnx.split(model), sources, targets, facts(source_segments), facts(target_segments)))
    ref = np.stack([logits[b, len(p) : len(p) + N] for b, p in enumerate(prompts)])
    np.testing.assert_allclose(out.logits, ref, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out.tokens, ref.argmax(-1))
    assert len(set(np.asarray(out.tokens).ravel().tolist())) > 3, "greedy path is degenerate"


def test_eos_stops_rows_and_pads():
    model = _model("decoder", "learned")
    greedy = np.asarray(generate(model, PROMPTS, max_new_tokens=N, return_logits=True).tokens)
    eos = int(greedy[0, 2])
    out = generate(model, PROMPTS, max_new_tokens=N, eos_id=eos, pad_id=255, return_logits=True)
    for b in range(len(PROMPTS)):
        hits = np.flatnonzero(greedy[b] == eos)
        length = int(hits[0]) + 1 if hits.size else N
        assert int(out.lengths[b]) == length
        np.testing.assert_array_equal(out.tokens[b, :length], greedy[b, :length])
        np.testing.assert_array_equal(out.tokens[b, length:], 255)


def test_sampling_with_top_k_one_is_greedy():
    model = _model("decoder", "learned")
    greedy = generate(model, PROMPTS, max_new_tokens=N, return_logits=True)
    sampled = generate(model, PROMPTS, max_new_tokens=N, temperature=0.8, top_k=1, seed=5, return_logits=True)
    np.testing.assert_array_equal(sampled.tokens, greedy.tokens)


def test_seed_reproduces_sample_and_other_seeds_differ():
    model = _model("decoder", "learned")
    temperature, top_k = 2.0, 64
    first_logits = generate(model, PROMPTS, max_new_tokens=N, return_logits=True).logits[:, 0]
    assert float(jax.nn.softmax(first_logits / temperature, axis=-1).max()) < 0.5, "the test needs a flat-ish distribution"

    def sample(seed):
        out = generate(model, PROMPTS, max_new_tokens=N, temperature=temperature, top_k=top_k, seed=seed, return_logits=True)
        return np.asarray(out.tokens)

    first = sample(3)
    np.testing.assert_array_equal(sample(3), first)
    for seed in (4, 5):
        assert (sample(seed) != first).sum() >= 3


def _nucleus_brute_force(logits, top_p):
    """Kept token ids: walk tokens by descending probability until their sum reaches top_p."""
    probs = np.exp(logits - logits.max())
    probs = probs / probs.sum()
    kept, mass = [], 0.0
    for token in sorted(range(len(probs)), key=lambda t: (-probs[t], t)):
        if mass >= top_p:
            break
        kept.append(token)
        mass += probs[token]
    return set(kept)


def test_top_p_keeps_the_nucleus():
    logits = np.log(np.array([0.05, 0.4, 0.1, 0.25, 0.2], np.float64)).astype(np.float32)
    expected = {0.3: {1}, 0.5: {1, 3}, 0.7: {1, 3, 4}, 0.9: {1, 3, 4, 2}, 0.97: {0, 1, 2, 3, 4}, 1.0: {0, 1, 2, 3, 4}}
    for p, kept in expected.items():
        assert _nucleus_brute_force(logits.astype(np.float64), p) == kept
        out = np.asarray(filter_logits(jnp.asarray(logits)[None], top_p=p))[0]
        assert set(np.flatnonzero(np.isfinite(out))) == kept, p
        np.testing.assert_array_equal(out[sorted(kept)], logits[sorted(kept)])
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(4, 50)).astype(np.float32) * 2
    for p in (0.1, 0.35, 0.62, 0.9):
        out = np.asarray(filter_logits(jnp.asarray(batch), top_p=jnp.float32(p)))
        for row, filtered in zip(batch, out):
            assert set(np.flatnonzero(np.isfinite(filtered))) == _nucleus_brute_force(row.astype(np.float64), p)


def test_top_k_then_top_p_renormalises_over_the_top_k():
    rng = np.random.default_rng(1)
    batch = rng.normal(size=(3, 40)).astype(np.float32)
    for k in (1, 3, 10, 40):
        out = np.asarray(filter_logits(jnp.asarray(batch), top_k=k))
        for row, filtered in zip(batch, out):
            assert set(np.flatnonzero(np.isfinite(filtered))) == set(np.argsort(-row, kind="stable")[:k].tolist())
    for k, p in ((5, 0.5), (10, 0.8), (3, 0.99)):
        out = np.asarray(filter_logits(jnp.asarray(batch), top_k=k, top_p=p))
        for row, filtered in zip(batch, out):
            top = np.argsort(-row, kind="stable")[:k]
            inside = _nucleus_brute_force(row[top].astype(np.float64), p)
            assert set(np.flatnonzero(np.isfinite(filtered))) == {int(top[i]) for i in inside}


def test_samples_lie_in_the_filtered_set():
    model = _model("decoder", "learned")
    temperature = 1.5
    out = generate(model, PROMPTS, max_new_tokens=N, temperature=temperature, top_k=5, seed=2, return_logits=True)
    for b in range(len(PROMPTS)):
        for j in range(N):
            top5 = np.argsort(-np.asarray(out.logits[b, j]), kind="stable")[:5]
            assert int(out.tokens[b, j]) in top5
    out = generate(model, PROMPTS, max_new_tokens=N, temperature=temperature, top_k=20, top_p=0.5, seed=2, return_logits=True)
    for b in range(len(PROMPTS)):
        for j in range(N):
            logits = np.asarray(out.logits[b, j], np.float64)
            top20 = np.argsort(-logits, kind="stable")[:20]
            nucleus = {int(top20[i]) for i in _nucleus_brute_force(logits[top20] / temperature, 0.5)}
            assert len(nucleus) < 20
            assert int(out.tokens[b, j]) in nucleus


def test_sample_frequencies_follow_tempered_softmax():
    model = _model("decoder", "learned")
    temperature, rows = 0.1, 2000
    out = generate(model, [PROMPTS[0]] * rows, max_new_tokens=1, temperature=temperature, top_k=3, seed=0, return_logits=True)
    logits = np.asarray(out.logits[0, 0], np.float64)
    top = np.argsort(-logits, kind="stable")[:3]
    expected = np.exp((logits[top] - logits[top].max()) / temperature)
    expected /= expected.sum()
    untempered = np.exp(logits[top] - logits[top].max())
    untempered /= untempered.sum()
    assert np.abs(expected - untempered).max() > 0.1, "the test needs temperature to matter"
    counts = np.array([(np.asarray(out.tokens[:, 0]) == t).sum() for t in top]) / rows
    np.testing.assert_allclose(counts, expected, atol=0.04)


def test_learned_positions_bound_prompt_plus_new_tokens():
    # PROMPTS[0] + N fills the decoder's table exactly; the ragged-batch test generates it.
    decoder = _model("decoder", "learned")
    assert len(PROMPTS[0]) + N == decoder.config.position.max_len
    with pytest.raises(ValueError, match=r"prompt \(6 tokens\) plus max_new_tokens=7 .*position\.max_len=12"):
        generate(decoder, PROMPTS, max_new_tokens=N + 1)
    encoder_decoder = _model("encoder_decoder", "learned")
    with pytest.raises(ValueError, match=r"encoder input of 13 tokens.*max_len=12"):
        generate(encoder_decoder, encoder_inputs=[[1] * 13], max_new_tokens=1)
    with pytest.raises(ValueError, match=r"decoder start token and prompt \(11 tokens\) plus max_new_tokens=2"):
        generate(encoder_decoder, [[1] * 10], encoder_inputs=[[1]], max_new_tokens=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(prompts=[[1, 2], [3, 256]]), r"prompts\[1\]\[1\] is token id 256, outside the vocabulary \[0, 256\)"),
        (dict(prompts=[[-1]]), r"prompts\[0\]\[0\] is token id -1"),
        (dict(prompts=np.array([[1, 2], [300, 4]])), r"prompts\[1\]\[0\] is token id 300"),
        (dict(prompts=[]), r"prompts is empty"),
        (dict(prompts=[[1], []]), r"prompts\[1\] is empty"),
        (dict(prompts=[1, 2, 3]), r"prompts\[0\] is a single id"),
        (dict(prompts=None), r"needs prompts"),
        (dict(max_new_tokens=0), r"max_new_tokens must be an int >= 1"),
        (dict(temperature=-0.1), r"temperature must be a finite number >= 0"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(top_k=0), r"top_k must be an int >= 1"),
        (dict(eos_id=256), r"eos_id=256 must be a token id in \[0, 256\)"),
        (dict(encoder_inputs=[[1]]), r"encoder_inputs is for an encoder-decoder"),
    ],
)
def test_bad_inputs_raise_at_the_edge(kwargs, message):
    args = dict(prompts=[[1, 2]], max_new_tokens=2, temperature=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        generate(_model("decoder", "learned"), args.pop("prompts"), **args)


def test_bad_encoder_decoder_inputs_raise():
    model = _model("encoder_decoder", "learned")
    with pytest.raises(ValueError, match=r"needs encoder_inputs"):
        generate(model, [[1]], max_new_tokens=2)
    with pytest.raises(ValueError, match=r"encoder_inputs\[0\]\[1\] is token id 999"):
        generate(model, encoder_inputs=[[1, 999]], max_new_tokens=2)
    with pytest.raises(ValueError, match=r"encoder_inputs\[1\] is empty"):
        generate(model, encoder_inputs=[[1], []], max_new_tokens=2)
    with pytest.raises(ValueError, match=r"prefix=True is for a decoder"):
        generate(model, encoder_inputs=[[1]], max_new_tokens=2, prefix=True)
    with pytest.raises(ValueError, match=r"2 prompts but 1 encoder_inputs"):
        generate(model, [[1], [2]], encoder_inputs=[[1]], max_new_tokens=2)
    with pytest.raises(ValueError, match=r"cannot generate with a model of type Encoder"):
        generate(build(family="encoder", d_model=32, attention={"num_heads": 4}, mlp={"d_ff": 64}), [[1]], max_new_tokens=2)


def test_decode_steps_take_facts_built_by_archzoo_facts():
    """Facts from archzoo.facts() promise row order (ordered=True); the cache's slots do not, and
    writing the one into the other keeps the cache's promise. Stepping token by token then gives
    the full forward pass's logits."""
    model = archzoo.build(vocab_size=64, d_model=32, num_layers=2, attention={"num_heads": 4}, mlp={"d_ff": 64}, seed=0)
    tokens = np.array([[5, 9, 2, 7, 11]])
    full = np.asarray(model(tokens))
    cache = model.generation_cache(1, 8)
    for t in range(5):
        f = archzoo.facts(segment_ids=np.ones((1, 1), np.int32), positions=np.array([[t]]))
        assert f.ordered
        out = model.decode_step(tokens[:, t : t + 1], f, cache)
        cache = out.cache
        np.testing.assert_allclose(np.asarray(out.logits)[0, 0], full[0, t], rtol=1e-5, atol=1e-5)
