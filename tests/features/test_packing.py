"""Packing keeps examples apart and the same targets reach every family."""

from collections import Counter, namedtuple

import jax
import numpy as np
import pytest
from flax import nnx

import archzoo
from archzoo.features import pack_examples
from archzoo.train.loss import loss_fn
from archzoo.train.step import split_model

Example = namedtuple("Example", "inputs targets")
MLMExample = namedtuple("MLMExample", "inputs targets target_positions")
V = 64
START = 2
BASE = dict(vocab_size=V, d_model=32, num_layers=2, attention={"num_heads": 4}, mlp={"d_ff": 64})


def examples(seed, n=9):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        total = int(rng.integers(4, 14))
        split = int(rng.integers(1, total))
        toks = rng.integers(10, V, total).astype(np.int32)
        out.append(Example(toks[:split], toks[split:]))
    return out


LENGTHS = {"decoder": 24, "encoder": 16}


def test_every_family_sees_the_same_multiset_of_targets():
    exs = examples(0, 20)
    want = Counter(int(t) for ex in exs for t in ex.targets)
    for family in ("decoder", "encoder_decoder"):
        got = Counter()
        for batch in pack_examples(exs, family, LENGTHS, batch_size=3, start_id=START):
            w = batch["decoder_weights"] > 0
            got.update(int(t) for t in batch["decoder_targets"][w])
        assert got == want, family


def test_decoder_row_layout_by_hand():
    (batch,) = pack_examples([Example(np.array([11, 12]), np.array([13, 14, 15]))], "decoder", {"decoder": 7}, 1, START)
    np.testing.assert_array_equal(batch["decoder_tokens"][0], [START, 11, 12, 13, 14, 0, 0])
    np.testing.assert_array_equal(batch["decoder_targets"][0], [11, 12, 13, 14, 15, 0, 0])
    np.testing.assert_array_equal(batch["decoder_weights"][0], [0, 0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(batch["decoder_is_input"][0], [1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch["decoder_segment_ids"][0], [1, 1, 1, 1, 1, 0, 0])


def _loss_sum(model, batches):
    return sum(float(loss_fn(model, b)[1]["loss_sum_nats"]) for b in batches)


@pytest.mark.parametrize("family,mask", [("decoder", "causal"), ("decoder", "prefix"), ("encoder_decoder", "causal")])
def test_packed_loss_equals_unpacked(family, mask):
    model = archzoo.build(**BASE, family=family, mask=mask, seed=0)
    exs = examples(1, 8)
    packed = list(pack_examples(exs, family, LENGTHS, batch_size=2, start_id=START))
    alone = [b for ex in exs for b in pack_examples([ex], family, LENGTHS, batch_size=1, start_id=START)]
    assert len(packed) < len(alone)
    np.testing.assert_allclose(_loss_sum(model, packed), _loss_sum(model, alone), rtol=1e-5)


def test_packed_loss_equals_unpacked_mlm():
    model = archzoo.build(**BASE, family="encoder", seed=0)
    rng = np.random.default_rng(2)
    exs = []
    for _ in range(6):
        n = int(rng.integers(3, 9))
        orig = rng.integers(10, V, n).astype(np.int32)
        at = np.flatnonzero(rng.random(n) < 0.4)
        exs.append(MLMExample(np.where(np.isin(np.arange(n), at), 3, orig).astype(np.int32), orig[at], at))
    packed = list(pack_examples(exs, "encoder", LENGTHS, batch_size=2, start_id=START))
    alone = [b for ex in exs for b in pack_examples([ex], "encoder", LENGTHS, batch_size=1, start_id=START)]
    np.testing.assert_allclose(_loss_sum(model, packed), _loss_sum(model, alone), rtol=1e-5)


def test_packer_state_round_trip():
    from archzoo.features import Packer
    from archzoo.features.packing import decoder_features

    exs = examples(3, 7)
    a = Packer({"decoder": 24}, 2)
    for e in exs[:4]:
        a.add(decoder_features(e, START))
    b = Packer({"decoder": 24}, 2)
    b.restore(a.state())
    rest_a = [a.add(decoder_features(e, START)) for e in exs[4:]] + [a.flush()]
    rest_b = [b.add(decoder_features(e, START)) for e in exs[4:]] + [b.flush()]
    for x, y in zip(rest_a, rest_b):
        assert (x is None) == (y is None)
        if x is not None:
            assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


def test_encoder_decoder_with_empty_inputs_packs_exactly():
    """Causal LM gives an encoder-decoder examples with no encoder tokens: their decoder tokens
    must see no encoder token at all, not an average over other examples' encoder tokens."""
    model = archzoo.build(**BASE, family="encoder_decoder", seed=0)
    rng = np.random.default_rng(5)
    exs = [Example(np.zeros(0, np.int32), rng.integers(10, V, int(n)).astype(np.int32)) for n in (5, 7, 3)]
    exs.insert(1, Example(rng.integers(10, V, 4).astype(np.int32), rng.integers(10, V, 6).astype(np.int32)))
    packed = list(pack_examples(exs, "encoder_decoder", LENGTHS, batch_size=1, start_id=START))
    alone = [b for ex in exs for b in pack_examples([ex], "encoder_decoder", LENGTHS, batch_size=1, start_id=START)]
    assert len(packed) == 1
    np.testing.assert_allclose(_loss_sum(model, packed), _loss_sum(model, alone), rtol=1e-5)


def test_encoder_decoder_example_with_empty_targets_packs_to_nothing_on_the_decoder():
    (batch,) = pack_examples([Example(np.array([11, 12, 13]), np.zeros(0, np.int32))], "encoder_decoder", LENGTHS, 1, START)
    assert batch["encoder_segment_ids"][0].tolist()[:4] == [1, 1, 1, 0]
    assert not batch["decoder_weights"].any() and not batch["decoder_segment_ids"].any()


def test_validation_scores_the_same_examples_for_every_family():
    from archzoo.features.pipeline import chunk_documents, validation_batches

    docs = [np.arange(10, 10 + n, dtype=np.int32) for n in (5, 9, 7, 12, 6, 8, 11)]
    chunks = chunk_documents(docs, 16)  # one chunk per document

    def split(tokens, rng, ends_document=True):
        return Example(tokens[: len(tokens) // 2], tokens[len(tokens) // 2 :])

    def targets(family):
        batches = validation_batches(chunks, split, family, LENGTHS, 2, START, 0, limit=5)
        return Counter(int(t) for b in batches for t, w in zip(b["decoder_targets"].ravel(), b["decoder_weights"].ravel()) if w > 0)

    assert targets("decoder") == targets("encoder_decoder") == Counter(int(t) for c in docs[:5] for t in c[len(c) // 2 :])


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_packed_rows_are_in_order(family):
    """The loss marks converter rows ``ordered`` (causal attention skips the key blocks after
    each query block); every packed stream must keep that promise."""
    for batch in pack_examples(examples(3, 30), family, LENGTHS, batch_size=3, start_id=START):
        for stream in ("decoder", "encoder") if family == "encoder_decoder" else ("decoder",):
            f = archzoo.facts(batch[f"{stream}_segment_ids"], positions=batch[f"{stream}_positions"])
            assert f.ordered, stream


@pytest.mark.slow
def test_packed_loss_and_gradients_with_causal_blocks_equal_the_dense_path(monkeypatch):
    from archzoo.layers import kernels

    model = archzoo.build(**BASE, family="decoder", seed=0)
    batch = next(pack_examples(examples(1, 8), "decoder", LENGTHS, batch_size=8, start_id=START))
    graphdef, params, rest = split_model(model)

    def loss(params):
        return loss_fn(nnx.merge(graphdef, params, rest), batch)[0]

    monkeypatch.setattr(kernels, "CAUSAL_BLOCK", 10**9)
    dense = jax.value_and_grad(loss)(params)
    monkeypatch.setattr(kernels, "CAUSAL_BLOCK", 5)
    blocked = jax.value_and_grad(loss)(params)
    np.testing.assert_allclose(float(blocked[0]), float(dense[0]), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(blocked[1]), jax.tree.leaves(dense[1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
