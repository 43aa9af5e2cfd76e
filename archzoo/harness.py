"""Any archzoo run directory as a model of EleutherAI's lm-evaluation-harness (``lm-eval``).

The harness asks a model three things, and each goes through the code archzoo's own evaluation
uses (:mod:`archzoo.analysis.scoring`, :mod:`archzoo.generation`), so a task scored here and the
same task scored by ``archzoo eval`` agree:

- ``loglikelihood``: ``(context, continuation)`` pairs, packed and batched by
  :func:`~archzoo.analysis.scoring.score_texts`; an encoder (MLM) run gives its
  pseudo-log-likelihood, as in ``archzoo eval``;
- ``loglikelihood_rolling``: whole texts, by :func:`~archzoo.analysis.scoring.rolling_logprob`;
- ``generate_until``: greedy or sampled continuations of prompts with a KV cache, cut at the
  first stop string (the harness leaves that cut to the model). Encoder runs cannot generate.

lm-eval 0.4.13 finds models only in its own registry and has no plugin hook for outside ones,
so this module registers :class:`ArchzooLM` as ``archzoo`` when imported, and :func:`main` runs
lm-eval's own command line after that::

    python -m archzoo.harness --model archzoo --model_args run_dir=runs/gpt-small \\
        --tasks my_task --include_path my_tasks/ --output_path results/

takes every argument ``lm_eval`` takes. From Python::

    import lm_eval
    from lm_eval.tasks import TaskManager
    from archzoo.harness import ArchzooLM

    results = lm_eval.simple_evaluate(model=ArchzooLM("runs/gpt-small"), tasks=["my_task"],
                                      task_manager=TaskManager(include_path="my_tasks/"))
    results["results"]["my_task"]["acc,none"]
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


try:
    # lm_eval.models registers the harness's own models; it must come before ours, because
    # lm-eval imports it by itself only while its registry is empty
    import lm_eval.models  # noqa: F401
    from lm_eval.api.model import LM
    from lm_eval.api.registry import model_registry
except ImportError as e:
    raise ImportError(
        f'archzoo.harness needs lm-evaluation-harness ({e}); install it with: pip install "archzoo[lm-eval]"'
    ) from e

from archzoo.analysis.evaluate import generate_texts
from archzoo.analysis.scoring import TrainedRun, load_trained, rolling_logprob, score_texts

__all__ = ["ArchzooLM", "main"]

DEFAULT_BATCH_SIZE = 16
# lm-eval's own default when a task sets no max_gen_toks
DEFAULT_MAX_GEN_TOKS = 256
# The generation options archzoo honours; lm-eval tasks may pass others (warned about, unused).
_GENERATION_KEYS = ("until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p")

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Generation:
    """One group of requests' generation options, read from lm-eval's ``gen_kwargs``.

    Attributes:
      until: stop strings; the text ends before the first of them.
      max_gen_toks: tokens to generate at most (before the position table's limit).
      temperature: 0 for greedy decoding.
      top_k: keep the ``top_k`` most likely tokens when sampling, or None.
      top_p: nucleus sampling mass, or None.
    """

    until: tuple[str, ...]
    max_gen_toks: int
    temperature: float
    top_k: int | None
    top_p: float | None


def _generation_options(gen_kwargs: dict) -> _Generation:
    """lm-eval's ``gen_kwargs`` as archzoo generation options.

    Greedy when ``do_sample`` is false or the temperature is 0; with ``do_sample`` unset, the
    temperature decides (default 0). ``top_k <= 0`` and ``top_p >= 1`` mean no filter, as in
    Hugging Face ``generate``.
    """
    unused = sorted(set(gen_kwargs) - set(_GENERATION_KEYS))
    if unused:
        honoured = ", ".join(_GENERATION_KEYS)
        _log.warning("archzoo generation ignores gen_kwargs %s (it honours %s)", unused, honoured)
    until = gen_kwargs.get("until") or ()
    until = (until,) if isinstance(until, str) else tuple(s for s in until if s)
    max_gen_toks = gen_kwargs.get("max_gen_toks")
    max_gen_toks = DEFAULT_MAX_GEN_TOKS if max_gen_toks is None else int(max_gen_toks)
    if max_gen_toks < 1:
        raise ValueError(f"generate_until: max_gen_toks must be >= 1, got {gen_kwargs['max_gen_toks']!r}")
    do_sample = gen_kwargs.get("do_sample")
    temperature = gen_kwargs.get("temperature")
    temperature = (1.0 if do_sample else 0.0) if temperature is None else float(temperature)
    if do_sample is False or temperature == 0.0:
        return _Generation(until, max_gen_toks, 0.0, None, None)
    top_k, top_p = gen_kwargs.get("top_k"), gen_kwargs.get("top_p")
    top_k = None if top_k is None or int(top_k) <= 0 else int(top_k)
    top_p = None if top_p is None or float(top_p) >= 1.0 else float(top_p)
    return _Generation(until, max_gen_toks, temperature, top_k, top_p)


def _cut_at_stop(text: str, until: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string.

    Args:
      text: generated text.
      until: stop strings (empty ones are ignored).

    Returns:
      the text before the first stop string found, or all of it.
    """
    ends = [at for at in (text.find(s) for s in until if s) if at >= 0]
    return text[: min(ends)] if ends else text


def _batch_size(value) -> int:
    """lm-eval passes ``batch_size`` as an int, a digit string, ``"auto"`` or ``"auto:N"``;
    archzoo does not tune it, so ``auto`` is the default."""
    if isinstance(value, str) and value.strip().startswith("auto"):
        return DEFAULT_BATCH_SIZE
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if isinstance(value, bool) or size < 1:
        raise ValueError(f"archzoo model: batch_size must be an integer >= 1 or 'auto', got {value!r}")
    return size


class ArchzooLM(LM):
    """An archzoo run's checkpoint as an lm-eval model (registered as ``archzoo``).

    Args:
      run_dir: a run directory with a finished checkpoint, or a run already loaded with
        :func:`~archzoo.analysis.scoring.load_trained`.
      step: the checkpoint to load (None: the newest intact one); ignored for a loaded run.
      batch_size: rows per scoring pass and prompts per generation pass: an int, or ``"auto"``
        for the default (lm-eval's command line passes 1 unless ``--batch_size`` is given).
      seed: seed of sampled generation (greedy decoding does not use it).
      **kwargs: what lm-eval passes to every model (``device``, ``max_batch_size``, ...);
        unused: JAX places the model on its default device.

    Raises:
      RecordError, CheckpointError: not a run directory, or no finished checkpoint.
      ValueError: a batch size that is neither a positive integer nor ``auto``.
    """

    def __init__(
        self,
        run_dir: str | Path | TrainedRun,
        step: int | None = None,
        batch_size=DEFAULT_BATCH_SIZE,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__()
        if isinstance(run_dir, TrainedRun):
            self.run = run_dir
        else:
            self.run = load_trained(run_dir, None if step is None else int(step))
        self.batch_size = _batch_size(batch_size)
        self.seed = int(seed)

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        """Per request ``(context, continuation)``: the continuation's log-likelihood in nats and
        whether every one of its tokens is the model's most likely token."""
        if not requests:
            return []
        pairs = [tuple(req.args) for req in requests]
        scores = score_texts(self.run, pairs, batch_size=self.batch_size)
        out = [(s.logprob_nats, s.greedy) for s in scores]
        for req, result in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", req.args, result)
        return out

    def loglikelihood_rolling(self, requests) -> list[float]:
        """Per request ``(text,)``: the log-likelihood of the whole text in nats, every token
        scored once (see :func:`~archzoo.analysis.scoring.rolling_logprob`)."""
        if not requests:
            return []
        texts = [req.args[0] for req in requests]
        out = [s.logprob_nats for s in rolling_logprob(self.run, texts, batch_size=self.batch_size)]
        for req, result in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, result)
        return out

    def generate_until(self, requests) -> list[str]:
        """Per request ``(context, gen_kwargs)``: the text generated after the context, up to
        eos or ``max_gen_toks`` tokens, cut before the first of the ``until`` strings.

        A decoder's prompt keeps its last ``row - max_gen_toks`` tokens (at least half the
        training row), an encoder-decoder's encoder its last ``row``; ``max_gen_toks`` (default
        256) is clipped to what a learned position table leaves. Requests with the same
        ``gen_kwargs`` are generated together in batches of one shape.

        Raises:
          ValueError: the run is an encoder, which has no decoder to generate with.
        """
        if not requests:
            return []
        if not callable(getattr(self.run.model, "decode_step", None)):
            raise ValueError(
                f"run {self.run.name} ({self.run.run_dir}) is an {self.run.family} model and cannot "
                "generate; evaluate it on tasks scored by log-likelihood (multiple_choice, "
                "loglikelihood, loglikelihood_rolling)"
            )
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        out: list[str] = [""] * len(requests)
        for members in groups.values():
            options = _generation_options(requests[members[0]].args[1])
            texts = self._generate([requests[i].args[0] for i in members], options)
            for i, text in zip(members, texts):
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out

    def _generate(self, contexts: list[str], options: _Generation) -> list[str]:
        """The continuation of each context under one set of options, in batches of one shape."""
        run, model = self.run, self.run.model
        cfg = model.config
        window = max(run.lengths.values())  # the row the model trained on, as archzoo eval uses
        limit = cfg.position.max_len if cfg.position.kind == "learned" else None
        decoder_only = model.source_stream is None
        if decoder_only:
            # prompt and answer share the row, but a long max_gen_toks leaves the prompt half of it
            room = max(window - options.max_gen_toks, window // 2)
            max_new = options.max_gen_toks if limit is None else min(options.max_gen_toks, limit - room)
        else:  # the encoder reads the prompt; the decoder holds its start token and the answer
            room = window
            max_new = options.max_gen_toks if limit is None else min(options.max_gen_toks, limit - 1)
        texts = generate_texts(
            model, run.tokenizer, contexts, start_id=run.start_id, room=room, max_new=max_new, batch_size=self.batch_size,
            temperature=options.temperature, top_k=options.top_k, top_p=options.top_p, seed=self.seed,
        )
        return [_cut_at_stop(t, options.until) for t in texts]


def _register() -> None:
    """Registers :class:`ArchzooLM` as ``archzoo``, once (a second import keeps the first)."""
    if "archzoo" not in model_registry:
        model_registry.register("archzoo")(ArchzooLM)


_register()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs lm-eval's command line with the ``archzoo`` model registered.

    Args:
      argv: lm-eval's arguments (``--model archzoo --model_args run_dir=RUN --tasks ...``, or a
        subcommand such as ``ls tasks``); None: ``sys.argv[1:]``.

    Returns:
      the exit status: 0 on success, else the status lm-eval exited with (2 for bad arguments).
    """
    from lm_eval.__main__ import cli_evaluate

    argv = sys.argv[1:] if argv is None else list(argv)
    saved = sys.argv
    # lm-eval's parser reads sys.argv itself (and edits it to insert the `run` subcommand)
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
