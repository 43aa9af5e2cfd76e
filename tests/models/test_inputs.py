"""What a family refuses at its edge, before any tracing: ragged token lists, and positions that
a learned table does not hold (instead of reading its first or last row for them)."""

import jax
import numpy as np
import pytest
from flax import nnx

import archzoo

V, MAX_LEN = 256, 16
BASE = dict(vocab_size=V, d_model=32, num_layers=2, attention={"num_heads": 4}, mlp={"d_ff": 64})
LEARNED = dict(position={"kind": "learned", "max_len": MAX_LEN})


@pytest.fixture(scope="module")
def decoder():
    return archzoo.build(**BASE, **LEARNED, seed=0)


@pytest.fixture(scope="module")
def encoder_decoder():
    return archzoo.build(**BASE, **LEARNED, family="encoder_decoder", seed=0)


def forward(model, *args):
    """The model's logits under ``jax.jit`` (traced facts: nothing checked)."""
    graphdef, state = nnx.split(model)
    return np.asarray(jax.jit(lambda state, *a: nnx.merge(graphdef, state)(*a))(state, *args))


def test_ragged_token_lists_name_the_argument(decoder):
    with pytest.raises(ValueError, match=r"tokens: .*different lengths \[2, 1\]"):
        decoder([[1, 2], [3]])


def test_ragged_encoder_decoder_tokens_name_the_argument(encoder_decoder):
    with pytest.raises(ValueError, match=r"encoder tokens: .*different lengths \[1, 3\]"):
        encoder_decoder([[1], [2, 3, 4]], [[1], [2]])
    with pytest.raises(ValueError, match=r"decoder tokens: .*different lengths \[2, 1\]"):
        encoder_decoder([[1], [2]], [[1, 5], [2]])


def test_string_segment_ids_name_the_argument(decoder):
    with pytest.raises(ValueError, match=r"segment_ids.*dtype <U1"):
        decoder(np.ones((1, 2), np.int32), archzoo.facts(segment_ids=np.array([["1", "1"]])))


def test_tokens_longer_than_the_learned_table_name_the_length_and_table(decoder):
    x = np.ones((1, MAX_LEN + 1), np.int32)
    with pytest.raises(ValueError, match=rf"tokens: length {MAX_LEN + 1} .*learned position table.*max_len={MAX_LEN}"):
        decoder(x)
    # one row of the table per position: MAX_LEN tokens fit
    assert np.isfinite(np.asarray(decoder(x[:, :MAX_LEN]))).all()


@pytest.mark.parametrize("bad", [MAX_LEN, 10**6, -1])
def test_positions_outside_the_learned_table_name_the_argument_and_table(decoder, bad):
    positions = np.arange(4)[None].copy()
    positions[0, 2] = bad
    f = archzoo.facts(positions=positions)
    with pytest.raises(ValueError, match=rf"facts\.positions: position {bad} at \(0, 2\) .*\[0, {MAX_LEN}\).*max_len={MAX_LEN}"):
        decoder(np.ones((1, 4), np.int32), f)


def test_encoder_decoder_positions_name_the_stack(encoder_decoder):
    long = np.ones((1, MAX_LEN + 3), np.int32)
    short = np.ones((1, 2), np.int32)
    with pytest.raises(ValueError, match=rf"encoder tokens: length {MAX_LEN + 3} .*max_len={MAX_LEN}"):
        encoder_decoder(long, short)
    with pytest.raises(ValueError, match=rf"decoder tokens: length {MAX_LEN + 3} .*max_len={MAX_LEN}"):
        encoder_decoder(short, long)
    f = archzoo.facts(positions=np.array([[0, 99]]))
    with pytest.raises(ValueError, match=rf"decoder facts\.positions: position 99 at \(0, 1\) .*max_len={MAX_LEN}"):
        encoder_decoder(short, short, None, f)


def test_packed_rows_longer_than_the_table_are_fine_when_each_example_fits(decoder):
    """The table bounds positions, not the row: two packed examples of 10 in a row of 20."""
    seg = np.array([[1] * 10 + [2] * 10])
    x = np.random.default_rng(0).integers(0, V, (1, 20)).astype(np.int32)
    f = archzoo.facts(segment_ids=seg)
    with pytest.raises(ValueError, match="position 16 at"):
        decoder(x, archzoo.facts(shape=(1, 20)))  # one example of 20 does not fit
    decoder(x[:, :1], f[:, :1])  # concrete packed facts pass the check
    packed = forward(decoder, x, f)
    np.testing.assert_allclose(packed[:, 10:], forward(decoder, x[:, 10:]), atol=2e-5, rtol=0)


def test_positions_under_jit_are_not_checked_and_read_the_table_clipped(decoder):
    """Traced positions cannot be checked; the documented behaviour is the table's edge row."""
    x = np.ones((1, 2), np.int32)
    past = forward(decoder, x, archzoo.facts(positions=np.array([[0, MAX_LEN + 5]])))
    last = forward(decoder, x, archzoo.facts(positions=np.array([[0, MAX_LEN - 1]])))
    np.testing.assert_array_equal(past, last)
