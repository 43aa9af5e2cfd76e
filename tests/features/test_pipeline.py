"""The pipeline: chunks keep every token of their document, eos is a target only where a document
ends, the stream resumes exactly, and rows too short for an objective are refused naming the key."""

import numpy as np
import pytest

from archzoo.config import ConfigError, from_dict
from archzoo.data import DataError, SpecialTokens
from archzoo.features.pipeline import Pipeline, auto_chunk_len, chunk_documents, validation_batches
from archzoo.objectives import ObjectiveConfig, build_objective, example_rng
from archzoo.train.config import RunConfig

SPECIAL = SpecialTokens()
ROW = 64
# Around multiples of the causal chunk length (ROW - 1 = 63), a 2-token and a 1-token document.
DOC_LENGTHS = [5, 63, 64, 126, 127, 130, 200, 2, 1]
SEQUENCE_OBJECTIVES = ["causal_lm", "prefix_lm", "span_corruption", "ul2"]


def documents() -> list[np.ndarray]:
    """Documents whose tokens differ from every other document's, so a token names its document."""
    docs, start = [], SPECIAL.count
    for n in DOC_LENGTHS:
        docs.append(np.arange(start, start + n, dtype=np.int32))
        start += n
    return docs


def objective(name: str):
    cfg = ObjectiveConfig(name=name)
    if name == "mlm":
        cfg = from_dict(ObjectiveConfig, {"name": "mlm", "mlm": {"vocab_size": 2048}})
    return build_objective(cfg, SPECIAL)


def lengths_of(family: str) -> dict:
    return {"decoder": {"decoder": ROW}, "encoder_decoder": {"encoder": ROW, "decoder": ROW}, "encoder": {"encoder": ROW}}[family]


def segments(batch: dict, family: str):
    """(text tokens, weighted targets) of every packed example in a ``[B, L]`` batch."""
    streams = {"decoder": ("decoder",), "encoder_decoder": ("encoder", "decoder"), "encoder": ("encoder",)}[family]
    loss = "encoder" if family == "encoder" else "decoder"
    for row in range(batch[f"{loss}_segment_ids"].shape[0]):
        for seg in np.unique(batch[f"{loss}_segment_ids"][row]):
            if seg == 0:
                continue
            text = []
            for s in streams:
                here = batch[f"{s}_segment_ids"][row] == seg
                text += batch[f"{s}_tokens"][row][here].tolist() + batch.get(f"{s}_targets", batch[f"{s}_tokens"])[row][here].tolist()
            here = (batch[f"{loss}_segment_ids"][row] == seg) & (batch[f"{loss}_weights"][row] > 0)
            yield {t for t in text if not SPECIAL.is_special(t)}, batch[f"{loss}_targets"][row][here]


def test_chunks_keep_every_token_and_mark_each_documents_last_one():
    docs = documents()
    chunks = chunk_documents(docs, ROW - 1)
    assert chunks.num_documents == len(docs)
    rebuilt, current = [], []
    for tokens, ends in zip(chunks.tokens, chunks.ends_document):
        assert 2 <= len(tokens) <= ROW - 1
        current.append(tokens)
        if ends:
            rebuilt.append(np.concatenate(current).tolist())
            current = []
    assert not current
    # Every document of 2 tokens or more, whole and in order (a short tail borrows from the chunk before).
    assert rebuilt == [d.tolist() for d in docs if len(d) >= 2]


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
@pytest.mark.parametrize("name", SEQUENCE_OBJECTIVES)
def test_eos_is_a_target_at_each_documents_end_and_nowhere_else(name, family):
    docs = documents()
    last_tokens = {int(d[-1]) for d in docs if len(d) >= 2}
    chunks = chunk_documents(docs, auto_chunk_len(name, ROW))
    fn, lengths = objective(name), lengths_of(family)

    def check(batches) -> int:
        ends_seen = 0
        for batch in batches:
            for text, targets in segments(batch, family):
                ends = bool(text & last_tokens)
                assert int(np.sum(targets == SPECIAL.eos)) == int(ends), (sorted(text)[:3], targets.tolist())
                if ends:
                    assert targets[-1] == SPECIAL.eos
                    ends_seen += 1
        return ends_seen

    # Validation reads every chunk once: each document ends exactly once, with eos.
    assert check(validation_batches(chunks, fn, family, lengths, 4, SPECIAL.pad, 0, None)) == len(last_tokens)
    pipeline = Pipeline(chunks, fn, family, lengths, 4, 1, SPECIAL.pad, 3)
    batches = []
    while pipeline.epoch < 2:
        batches.append({k: v[0] for k, v in pipeline.next_batch().items()})
    assert check(batches) >= len(last_tokens)


def test_mlm_never_predicts_eos():
    chunks = chunk_documents(documents(), auto_chunk_len("mlm", ROW))
    for batch in validation_batches(chunks, objective("mlm"), "encoder", lengths_of("encoder"), 4, SPECIAL.pad, 0, None):
        assert not np.any(batch["encoder_tokens"] == SPECIAL.eos) and not np.any(batch["encoder_targets"] == SPECIAL.eos)


def test_a_chunk_without_its_documents_end_gets_no_eos_from_any_objective():
    text = np.arange(200, 240, dtype=np.int32)
    for name in SEQUENCE_OBJECTIVES + ["mlm"]:
        for seed in range(20):
            whole = objective(name)(text, example_rng(seed, 0, 0))
            middle = objective(name)(text, example_rng(seed, 0, 0), ends_document=False)
            assert SPECIAL.eos not in middle.inputs.tolist() + middle.targets.tolist(), name
            # The same draw: the middle chunk's example is the whole one without its final eos.
            np.testing.assert_array_equal(middle.inputs, whole.inputs)
            expected = whole.targets[:-1] if name != "mlm" else whole.targets
            np.testing.assert_array_equal(middle.targets, expected, err_msg=name)


def test_a_restored_pipeline_continues_with_the_same_batches():
    chunks = chunk_documents(documents(), auto_chunk_len("span_corruption", ROW))
    fn = objective("span_corruption")

    def fresh():
        return Pipeline(chunks, fn, "encoder_decoder", lengths_of("encoder_decoder"), 3, 2, SPECIAL.pad, 5)

    straight = fresh()
    reference = [straight.next_batch() for _ in range(9)]
    first = fresh()
    for _ in range(4):
        first.next_batch()
    resumed = fresh()
    resumed.restore(first.state())
    for want in reference[4:]:
        got = resumed.next_batch()
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_documents_too_short_for_any_chunk_are_named():
    short = [np.array([SPECIAL.count], np.int32)] * 3
    with pytest.raises(DataError, match="3 validation documents.*shorter than 2 tokens.*data.validation_count"):
        validation_batches(chunk_documents(short, 8), objective("causal_lm"), "decoder", lengths_of("decoder"), 2, 0, 0, None)
    with pytest.raises(DataError, match="3 training documents.*shorter than 2 tokens"):
        Pipeline(chunk_documents(short, 8), objective("causal_lm"), "decoder", lengths_of("decoder"), 2, 1, 0, 0)
    # No validation split at all is no error: nothing was held out.
    assert validation_batches(chunk_documents([], 8), objective("causal_lm"), "decoder", lengths_of("decoder"), 2, 0, 0, None) == []


def shortest_row(name: str) -> int:
    """Reference: the longest example a 2-token chunk makes (inputs ++ targets), over many draws."""
    fn, text = objective(name), np.array([200, 201], np.int32)
    return max(len(e.inputs) + len(e.targets) for e in (fn(text, example_rng(s, 0, 0)) for s in range(200)))


def run_config(family="decoder", objective="causal_lm", **train) -> dict:
    objective = {"name": objective, "mlm": {"vocab_size": 512}} if objective == "mlm" else {"name": objective}
    return {"model": {"family": family}, "objective": objective, "train": train}


@pytest.mark.parametrize("name", SEQUENCE_OBJECTIVES)
def test_rows_shorter_than_the_objectives_shortest_example_name_the_key_and_the_minimum(name):
    minimum = shortest_row(name)
    for seq_len in range(1, minimum):
        with pytest.raises(ConfigError) as e:
            from_dict(RunConfig, run_config(seq_len=seq_len, objective=name))
        message = str(e.value)
        assert message.startswith("train.seq_len:") and f"at least {minimum} tokens" in message and name in message
    cfg = from_dict(RunConfig, run_config(seq_len=minimum, objective=name))
    # At the minimum, every example of every document fits its row.
    chunks = chunk_documents(documents(), auto_chunk_len(name, cfg.train.seq_len))
    assert validation_batches(chunks, objective(name), "decoder", {"decoder": minimum}, 4, 0, 0, None)


def test_the_python_api_refuses_short_rows_and_chunks_naming_the_key():
    with pytest.raises(ConfigError, match=r"^train.seq_len: rows of 1 token are too short for causal_lm.*at least 3 tokens"):
        auto_chunk_len("causal_lm", 1)
    with pytest.raises(ConfigError, match=r"^train.chunk_len: chunks of 1 token are too short.*at least 2 tokens"):
        chunk_documents(documents(), 1)


@pytest.mark.parametrize(
    "train, key, minimum",
    [
        ({"chunk_len": 1}, "train.chunk_len", 2),
        ({"family": "encoder_decoder", "objective": "span_corruption", "encoder_len": 4, "decoder_len": 32}, "train.encoder_len", 5),
        ({"family": "encoder_decoder", "objective": "ul2", "seq_len": 64, "decoder_len": 5}, "train.decoder_len", 6),
        ({"family": "encoder", "objective": "mlm", "seq_len": 1}, "train.seq_len", 2),
    ],
)
def test_each_row_key_is_named_with_its_minimum(train, key, minimum):
    with pytest.raises(ConfigError, match=rf"^{key}: .*at least {minimum} tokens"):
        from_dict(RunConfig, run_config(**train))
