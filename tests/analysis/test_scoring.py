"""Scoring continuations: packed and batched scores against one request at a time, and against
plain forward passes of each family (log-likelihood, prefix, encoder-decoder, pseudo-LL)."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from archzoo.analysis.scoring import SCORING, score
from archzoo.masks import facts
from archzoo.models import build

START, MASK = 0, 3
REQUESTS = [
    ([11, 12, 13, 14], [20, 21]),
    ([30], [31, 32, 33, 34, 35]),
    ([], [40, 41]),  # no context: the start token alone conditions the continuation
    ([50, 51, 52, 53, 54, 55, 56], [57]),
    ([60, 61], [62, 63, 64]),
]
FAMILIES = {
    "causal": dict(family="decoder"),
    "prefix": dict(family="decoder", mask="prefix"),
    "encoder_decoder": dict(family="encoder_decoder", position={"kind": "t5_bias"}, norm={"kind": "rmsnorm"}),
    "encoder": dict(family="encoder"),
    "moe_causal": dict(family="decoder", moe={"num_experts": 4, "top_k": 2}),
}


@functools.cache
def _model(name: str):
    kwargs = dict(vocab_size=128, d_model=32, num_layers=2, attention={"num_heads": 4}, mlp={"d_ff": 64}, position={"kind": "rope"})
    kwargs.update(FAMILIES[name])
    model = build(seed=3, **kwargs)
    # weights scaled up from the 0.02 init so every token matters to the scores
    for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        if var[...].ndim >= 2:
            var[...] = var[...] * 6.0
    return model


def _requests(name):
    # an encoder-decoder needs an encoder input; the empty-context case is a decoder's
    return [r for r in REQUESTS if r[0] or name != "encoder_decoder"]


def _log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    return logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)


PAD_TO = 24  # reference rows are right-padded (segment 0) to one length: one compile per model


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, *args):
    return nnx.merge(graphdef, state)(*args)


def _padded(row):
    tokens = np.zeros((1, PAD_TO), np.int32)
    tokens[0, : len(row)] = row
    segments = np.zeros((1, PAD_TO), np.int32)
    segments[0, : len(row)] = 1
    return tokens, segments


def _reference(model, context, continuation):
    """Per-token log-probabilities and greedy flags of the continuation from one plain,
    unpacked forward pass, the request alone in its row (the encoder: one pass per masked token)."""
    cfg = model.config
    ctx, cont = list(context), list(continuation)
    graphdef, state = nnx.split(model)
    if cfg.family == "decoder":
        row = [START] + ctx + cont[:-1]
        tokens, segments = _padded(row)
        is_input = np.zeros((1, PAD_TO), bool)
        is_input[0, : len(ctx) + 1] = cfg.mask == "prefix" and bool(ctx)
        logp = _log_softmax(_forward(graphdef, state, tokens, facts(segments, is_input=is_input))[0])
        picked = logp[len(ctx) : len(row)]
    elif cfg.family == "encoder_decoder":
        (enc, enc_seg), (dec, dec_seg) = _padded(ctx), _padded([START] + cont[:-1])
        logp = _log_softmax(_forward(graphdef, state, enc, dec, facts(enc_seg), facts(dec_seg))[0])
        picked = logp[: len(cont)]
    else:
        rows = []
        for j in range(len(cont)):
            row = ctx + cont
            row[len(ctx) + j] = MASK
            tokens, segments = _padded(row)
            rows.append(_log_softmax(_forward(graphdef, state, tokens, facts(segments))[0])[len(ctx) + j])
        picked = np.stack(rows)
    token_logp = picked[np.arange(len(cont)), cont]
    greedy = bool(np.all(picked.argmax(-1) == np.asarray(cont)))
    return token_logp, greedy


@pytest.mark.parametrize("name", list(FAMILIES))
def test_packed_batched_scores_equal_plain_forward_passes_one_by_one(name):
    """Several requests share each row (segments), two rows each batch."""
    model = _model(name)
    requests = _requests(name)
    # several requests to a row, two rows to a batch, against each request alone in a plain forward pass
    packed = score(model, requests, start_id=START, mask_id=MASK, batch_size=2, row_len=16)
    for (ctx, cont), p in zip(requests, packed):
        ref, greedy = _reference(model, ctx, cont)
        # float32 logits of the same rows laid out differently: agreement to float32 precision
        # relative to the log-probabilities' size (a few nats)
        np.testing.assert_allclose(p.token_logprobs, ref, rtol=1e-5, atol=1e-5)
        assert p.logprob_nats == pytest.approx(ref.sum(), rel=1e-5, abs=1e-5)
        assert p.tokens == len(cont) and p.greedy == greedy and p.truncated == 0
    assert len({round(s.logprob_per_token, 3) for s in packed}) == len(packed), "scores must differ between requests"


def test_prefix_decoder_reads_its_context_bidirectionally():
    causal, prefix = _model("causal"), _model("prefix")
    # the same weights under the two masks: only the context's is_input differs
    nnx.update(prefix, nnx.state(causal, nnx.Param))
    ctx, cont = REQUESTS[0]
    [c] = score(causal, [(ctx, cont)], start_id=START)
    [p] = score(prefix, [(ctx, cont)], start_id=START)
    assert abs(c.logprob_nats - p.logprob_nats) > 1e-3
    np.testing.assert_allclose(p.token_logprobs, _reference(prefix, ctx, cont)[0], rtol=1e-5, atol=1e-5)


def test_a_long_context_loses_tokens_from_its_left():
    model = _model("causal")
    ctx, cont = list(range(10, 30)), [40, 41, 42]
    [s] = score(model, [(ctx, cont)], start_id=START, row_len=8)
    assert s.truncated == 15  # 8 = 5 context tokens + 3 continuation tokens (the start token in place of the last)
    np.testing.assert_allclose(s.token_logprobs, _reference(model, ctx[15:], cont)[0], rtol=1e-5, atol=1e-5)


def test_greedy_flag_follows_the_argmax():
    model = _model("causal")
    ctx = [11, 12, 13]
    row = [START] + ctx
    tokens, segments = _padded(row)
    logp = _log_softmax(_forward(*nnx.split(model), tokens, facts(segments))[0])[: len(row)]
    best = int(logp[-1].argmax())
    [top, other] = score(model, [(ctx, [best]), (ctx, [(best + 1) % 128])], start_id=START)
    assert top.greedy and not other.greedy
    assert top.logprob_nats == pytest.approx(logp[-1, best], abs=1e-5)


def test_bad_requests_are_refused_by_index():
    model = _model("causal")
    with pytest.raises(ValueError, match="request 1 has an empty continuation"):
        score(model, [([1], [2]), ([1], [])], start_id=START)
    with pytest.raises(ValueError, match=r"request 0: continuation\[1\] is token id 500, outside \[0, 128\)"):
        score(model, [([1], [2, 500])], start_id=START)
    with pytest.raises(ValueError, match="continuation of 9 tokens does not fit a row of 8"):
        score(model, [([1], list(range(9)))], start_id=START, row_len=8)
    with pytest.raises(ValueError, match="needs mask_id"):
        score(_model("encoder"), [([1], [2])], start_id=START)


def test_every_family_says_how_it_is_scored():
    assert SCORING == {"decoder": "log-likelihood", "encoder_decoder": "log-likelihood", "encoder": "pseudo-log-likelihood"}
