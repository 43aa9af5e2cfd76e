"""The ``archzoo`` command line."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from archzoo.config import ConfigError

__all__ = ["main", "EXIT_SIGTERM"]

# `archzoo run` stopped by SIGTERM (after saving the run under way): the shell's code for it.
EXIT_SIGTERM = 128 + signal.SIGTERM


def _params(args) -> int:
    from archzoo.models import count_params, load_model_config

    rows = []
    for path in args.configs:
        cfg = load_model_config(path, args.overrides)
        n = count_params(cfg)
        rows.append((Path(path).stem, cfg.family, n.total, n.embedding, n.non_embedding))
    header = ("config", "family", "total", "embedding", "non-embedding")
    table = [header] + [(name, fam, f"{t:,}", f"{e:,}", f"{ne:,}") for name, fam, t, e, ne in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return 0


def _convert(args) -> int:
    from archzoo import convert
    from archzoo.config import to_dict
    import yaml

    model = convert.load_hf(args.source)
    if args.to_hf:
        convert.save_hf(model, args.to_hf, args.model_type)
        print(f"wrote {args.to_hf}")
    if args.config:
        with open(args.config, "w") as f:
            yaml.safe_dump(to_dict(model.config), f, sort_keys=False)
        print(f"wrote {args.config}")
    if args.checkpoint:
        from archzoo.checkpoint import save_weights

        save_weights(model, args.checkpoint)
        print(f"wrote {args.checkpoint}")
    n = sum(v.size for v in convert.get_params(model).values())
    print(f"{model.config.name}: family {model.config.family}, {n:,} weights")
    return 0


def _run(args) -> int:
    from archzoo.train.config import load_run_configs
    from archzoo.train.loop import TrainingError, train
    from archzoo.train.rundir import RunDirError

    configs = load_run_configs(args.config, args.overrides)
    summaries = []
    try:
        for cfg in configs:
            summaries.append(train(cfg, overwrite=args.overwrite))
            if summaries[-1]["stopped_by"] == "sigterm":
                break
    except (RunDirError, TrainingError) as e:
        print(f"archzoo run: error: {e}", file=sys.stderr)
        return 1
    from archzoo.analysis.runs import load_run
    from archzoo.analysis.table import comparison_table

    # built from what the run directories hold, as `archzoo table` builds it later
    table = comparison_table([load_run(cfg.run_dir) for cfg in configs[: len(summaries)]])
    print(table)
    budget = configs[0].budget
    text = f"# {Path(args.config).name}\n\nBudget: {budget.value:,.0f} {budget.kind.replace('_', ' ')} per run.\n\n{table}\n"
    for cfg in configs[: len(summaries)]:
        (cfg.run_dir / "comparison.md").write_text(text)
    last = summaries[-1]
    if last["stopped_by"] == "sigterm":
        left = len(configs) - len(summaries)
        not_started = f", {left} run(s) after it not started" if left else ""
        print(
            f"archzoo run: interrupted by SIGTERM: {last['name']} stopped at step {last['steps']} and saved "
            f"its checkpoint{not_started}; run the same command to resume",
            file=sys.stderr,
        )
        return EXIT_SIGTERM
    return 0


def _table(args) -> int:
    from archzoo.analysis.runs import RecordError, is_run_dir, load_run, load_sweep
    from archzoo.analysis.table import comparison_table

    try:
        records = []
        for d in args.dirs:
            path = Path(d)
            records += [load_run(path)] if is_run_dir(path) else load_sweep(path)
    except RecordError as e:
        print(f"archzoo table: error: {e}", file=sys.stderr)
        return 2
    print(comparison_table(records))
    return 0


def _bench(args) -> int:
    from archzoo.bench import DEFAULT_MODEL, bench_train, matmul_peak_flops
    from archzoo.models import load_model_config

    peak = matmul_peak_flops()
    print(f"float32 matmul peak (2048x2048, best of 10): {peak / 1e9:,.1f} GFLOP/s")
    if args.config:
        variants = [(Path(args.config).stem, load_model_config(args.config, args.overrides))]
    else:
        base = load_model_config(DEFAULT_MODEL, args.overrides)
        variants = [
            ("causal decoder", base),
            ("prefix decoder", base.replace(mask="prefix")),
            ("encoder-decoder", base.replace(family="encoder_decoder", num_layers=2, num_encoder_layers=2)),
        ]
    print(f"batch {args.batch_size} x length {args.length}, float32, AdamW; step time is the median of {args.steps} steps")
    print(f"{'model':<18}{'params':>12}{'tokens/s':>12}{'step (ms)':>11}{'first step (s)':>16}{'MFU':>8}")
    for name, cfg in variants:
        r = bench_train(cfg, batch=args.batch_size, length=args.length, steps=args.steps, peak=peak)
        print(f"{name:<18}{r['params']:>12,}{r['tokens_per_s']:>12,.0f}{r['step_s'] * 1e3:>11.1f}{r['first_step_s']:>16.2f}{r['mfu']:>8.1%}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="archzoo", description="Compare language-model architectures in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("params", help="count parameters of model configs without allocating weights")
    p.add_argument("configs", nargs="+", help="model config YAML files")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.set_defaults(func=_params)

    r = sub.add_parser(
        "run",
        help="train the runs of a config file and print their comparison table",
        description="Train the runs of a config file and print their comparison table. SIGTERM stops the "
        f"command after the step under way, saved, and exits with status {EXIT_SIGTERM}; the same command resumes.",
    )
    r.add_argument("config", help="run or experiment config YAML")
    r.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config keys (train.batch_size=8)")
    r.add_argument("--overwrite", action="store_true", help="replace run directories that hold a different config")
    r.set_defaults(func=_run)

    t = sub.add_parser("table", help="print the comparison table of run directories (or of the runs under a directory)")
    t.add_argument("dirs", nargs="+", help="run directories, or directories holding run directories")
    t.set_defaults(func=_table)

    b = sub.add_parser("bench", help="speed benchmarks")
    bsub = b.add_subparsers(dest="what", required=True)
    bt = bsub.add_parser("train", help="training-step speed and MFU (default: GPT-2-style 4x256, context 256)")
    bt.add_argument("config", nargs="?", help="a model config YAML (default: the built-in GPT-2-style model, as causal, prefix and encoder-decoder)")
    bt.add_argument("--batch-size", type=int, default=16)
    bt.add_argument("--length", type=int, default=256)
    bt.add_argument("--steps", type=int, default=10)
    bt.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    bt.set_defaults(func=_bench)

    c = sub.add_parser("convert", help="read a Hugging Face folder (config.json + safetensors)")
    c.add_argument("source", help="folder written by save_pretrained")
    c.add_argument("--to-hf", help="write the converted model back as a Hugging Face folder here")
    c.add_argument("--model-type", help="Hugging Face model_type for --to-hf (default: the source's)")
    c.add_argument("--config", help="write the archzoo model config (YAML) here")
    c.add_argument("--checkpoint", help="write the archzoo weights (orbax) here")
    c.set_defaults(func=_convert)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as e:  # DataError and RunDirError are ValueErrors
        print(f"archzoo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the user named that cannot be read or written
        where = f"{e.filename}: " if e.filename else ""
        print(f"archzoo {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
