"""archzoo.testing: each check passes on the built-in masks and families and fails, naming the
invariant, on a component that breaks it."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import archzoo
from archzoo import masks, testing
from archzoo.masks import TILE_FULL, Mask
from archzoo.models import Decoder
from archzoo.models.cache import write_facts

TINY = dict(vocab_size=64, d_model=32, num_layers=2, attention={"num_heads": 4}, mlp={"d_ff": 64})
CONFIGS = {
    "causal": dict(TINY),
    "prefix": dict(TINY, mask="prefix"),
    "encoder": dict(TINY, family="encoder"),
    "encoder_decoder": dict(TINY, family="encoder_decoder"),
}


@functools.cache
def model(name: str):
    return archzoo.build(CONFIGS[name], seed=0)


# -- check_mask ----------------------------------------------------------------------------------


def causal_packed(q, k=None):
    return masks.causal(q, k) & masks.same_segment(q, k)


def causal_packed_predicate(q, k):
    return (k.positions <= q.positions) & (q.segment_ids == k.segment_ids)


BUILT_IN_MASKS = {
    "causal & same_segment": (causal_packed, causal_packed_predicate),
    # written with jnp.where and Python comparisons, as a user might: it must work on 0-d arrays
    "prefix & same_segment & not_padding": (
        lambda q, k=None: masks.prefix(q, k) & masks.same_segment(q, k) & masks.not_padding(q, k),
        lambda q, k: jnp.where(q.is_input & k.is_input, True, k.positions <= q.positions)
        & (q.segment_ids == k.segment_ids)
        & (q.segment_ids != 0)
        & (k.segment_ids != 0),
    ),
    "sliding_window(3) & same_segment | full & ~not_padding": (
        lambda q, k=None: (
            masks.sliding_window(3, q, k) & masks.same_segment(q, k) | masks.full(q, k) & ~masks.not_padding(q, k)
        ),
        lambda q, k: (q.positions - 3 < k.positions) & (k.positions <= q.positions)
        & (q.segment_ids == k.segment_ids)
        | (q.segment_ids == 0)
        | (k.segment_ids == 0),
    ),
}


@pytest.mark.parametrize("name", BUILT_IN_MASKS)
def test_check_mask_passes_for_built_in_masks(name):
    builder, predicate = BUILT_IN_MASKS[name]
    testing.check_mask(builder, predicate)


def test_check_mask_calls_the_predicate_on_single_tokens_of_given_facts():
    shapes = set()

    def predicate(q, k):
        shapes.update({q.positions.shape, k.segment_ids.shape, q.is_input.shape})
        return k.positions <= q.positions

    segment_ids = np.array([[1, 1, 1, 1, 1, 1, 1, 0, 0], [1, 2, 2, 2, 3, 3, 3, 3, 3]] * 2)
    testing.check_mask(masks.causal, predicate, facts=[archzoo.facts(segment_ids)])
    assert shapes == {()}


def test_check_mask_fails_when_builder_and_predicate_disagree():
    # k <= q and k < q differ on the 36 diagonal cells of the 4 rows of 9 tokens, and on the 4
    # pairs of distinct padding tokens (rows 0 and 3 end in two, all at position 0)
    def strictly_earlier(q, k):
        return (k.positions < q.positions) & (q.segment_ids == k.segment_ids)

    with pytest.raises(AssertionError, match=r"disagree at 40 of 324 cells; first at row 0, query 0, key 0: the mask allows"):
        testing.check_mask(causal_packed, strictly_earlier)


def test_check_mask_fails_when_the_decode_step_differs_from_the_full_mask():
    def forgets_causality_when_decoding(q, k=None):
        return causal_packed(q) if k is None else masks.full(q, k) & masks.same_segment(q, k)

    # the first token of each row sees the later tokens of its example: 3 + 4 + 8 + 2 cells
    message = r"the decode step builder\(f\[:, 0:1\], f\) and row 0 .* disagree at 17 of 36 cells; first at row 0, query 0, key 1:"
    with pytest.raises(AssertionError, match=message):
        testing.check_mask(forgets_causality_when_decoding, causal_packed_predicate)


class TilesSayFull(Mask):
    """A causal mask whose tiles claim that every tile is full."""

    def tiles(self, block_q, block_k, *, exact=False):
        B, Q, K = self.shape
        return jnp.full((B, -(-Q // block_q), -(-K // block_k)), TILE_FULL, jnp.int8)


class ClaimsLowerTriangular(Mask):
    """A bidirectional mask that claims no key after its query is allowed."""

    lower_triangular = True


def test_check_mask_fails_on_tiles_that_would_drop_the_mask():
    def builder(q, k=None):
        return TilesSayFull(("causal",), q, q if k is None else k)

    message = r"tiles\(4, 2\) says tile \(0, 0\) of row 0 .* is FULL, but query 0 may not attend to key 1"
    with pytest.raises(AssertionError, match=message):
        testing.check_mask(builder, lambda q, k: k.positions <= q.positions)


def test_check_mask_fails_on_a_false_lower_triangular_promise():
    def builder(q, k=None):
        return ClaimsLowerTriangular(("full",), q, q if k is None else k)

    with pytest.raises(AssertionError, match=r"lower_triangular .* but at row 0 query 0 may attend to the later key 1"):
        testing.check_mask(builder, lambda q, k: jnp.array(True))


# -- broken models: a built-in decoder with one mistake each ---------------------------------------


class SeesLaterTokens(Decoder):
    """Self-attention over the whole example (``full & same_segment``): not causal."""

    def forward(self, tokens, facts=None, *, cache=None, mask=None, rng=None):
        if cache is None and mask is None:
            mask = masks.full(facts) & masks.same_segment(facts)
        return super().forward(tokens, facts, cache=cache, mask=mask, rng=rng)


class IgnoresSegments(Decoder):
    """Causal by positions without ``same_segment``: a token sees every token of the row at its
    position or before, of any example."""

    def forward(self, tokens, facts=None, *, cache=None, mask=None, rng=None):
        if cache is None and mask is None:
            mask = masks.causal(facts)
        return super().forward(tokens, facts, cache=cache, mask=mask, rng=rng)


class CacheSeesEmptySlots(Decoder):
    """The decode step's mask forgets that empty cache slots and left padding are segment 0."""

    def decode_step(self, tokens, facts, cache):
        kv_facts = write_facts(cache.facts, facts, cache.index)
        return self.forward(tokens, facts, cache=cache, mask=masks.causal(facts, kv_facts))


class IgnoresItsTokens(Decoder):
    """Reads token 0 wherever it is given another: nothing it could leak, nothing it checks."""

    def forward(self, tokens, facts=None, *, cache=None, mask=None, rng=None):
        return super().forward(jnp.zeros_like(tokens), facts, cache=cache, mask=mask, rng=rng)


def broken(cls):
    return cls(archzoo.load_model_config(TINY), rngs=nnx.Rngs(params=0))


# -- check_causal --------------------------------------------------------------------------------


def test_check_causal_passes_for_a_decoder_config_and_an_encoder_decoder():
    testing.check_causal(archzoo.load_model_config(CONFIGS["causal"]))  # a ModelConfig, built inside
    testing.check_causal(model("encoder_decoder"))


def test_check_causal_fails_on_a_decoder_that_sees_later_tokens():
    message = r"after position 0 changed the logits at position 0 \(row \d\) by max \|Δ\| = .* > tolerance 1e-06"
    with pytest.raises(AssertionError, match=message):
        testing.check_causal(broken(SeesLaterTokens))


def test_check_causal_refuses_to_pass_a_model_that_ignores_its_tokens():
    with pytest.raises(AssertionError, match=r"left the logits at position 1 unchanged too .* causality went untested"):
        testing.check_causal(broken(IgnoresItsTokens))


def test_checks_that_need_a_decoder_refuse_an_encoder():
    for check in (testing.check_causal, testing.check_cache):
        with pytest.raises(ValueError, match=r"Encoder \(family 'encoder'\) is bidirectional by design"):
            check(CONFIGS["encoder"])
    with pytest.raises(TypeError, match="expected a ModelConfig, a YAML path, a mapping or a built archzoo model"):
        testing.check_packing(object())


# -- check_packing -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_check_packing_passes_for_every_family(name):
    testing.check_packing(model(name))


def test_check_packing_fails_on_a_decoder_that_ignores_segments():
    # causal by positions alone: the first token of example 1 sees the first tokens of examples 2
    # and 3 and the padding, all at position 0
    message = r"example 1 of the packed row \(segment id 1, decoder tokens 0..4\) differs from the same example alone"
    with pytest.raises(AssertionError, match=message):
        testing.check_packing(broken(IgnoresSegments))


# -- check_cache ---------------------------------------------------------------------------------


def test_check_cache_passes_for_a_prefix_decoder_and_an_encoder_decoder_mapping():
    testing.check_cache(model("prefix"))
    testing.check_cache(CONFIGS["encoder_decoder"])  # a mapping, built inside


def test_check_cache_fails_on_a_decode_step_that_attends_to_empty_slots():
    # the prompt's first token (position 0) already sees every empty slot (position 0, segment 0)
    message = r"at row \d, decoder position [01] \(the 3-token prompt written in one call\) by max \|Δ\| = .* > tolerance"
    with pytest.raises(AssertionError, match=message):
        testing.check_cache(broken(CacheSeesEmptySlots))
