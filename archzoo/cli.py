"""The ``archzoo`` command line."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from archzoo.config import ConfigError

__all__ = ["EXIT_SIGTERM", "entry", "main"]

# `archzoo run` stopped by SIGTERM (after saving the run under way): the shell's code for it.
EXIT_SIGTERM = 128 + signal.SIGTERM


def _params(args) -> int:
    from archzoo.models import count_params, load_model_config

    rows = []
    for path in args.configs:
        cfg = load_model_config(path, args.overrides)
        n = count_params(cfg)
        rows.append((Path(path).stem, cfg.family, n.total, n.embedding, n.non_embedding, n.active))
    # active: what one token passes through (an MoE layer's k chosen experts, not all E)
    header = ("config", "family", "total", "embedding", "non-embedding", "active")
    table = [header] + [(name, fam, *(f"{v:,}" for v in counts)) for name, fam, *counts in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return 0


def _convert(args) -> int:
    import yaml

    from archzoo import convert
    from archzoo.config import to_dict

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


def _selected(experiment, names: list[str]):
    """The runs of ``experiment`` named by ``--run`` (all of them without it)."""
    if not names:
        return experiment.runs
    by_name = {c.name: c for c in experiment.runs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], list(by_name), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{experiment.path}: --run {unknown[0]!r} is not a run of it{hint} (runs: {', '.join(by_name)})")
    return [by_name[n] for n in names]


def _run(args) -> int:
    from archzoo.train.config import load_experiment
    from archzoo.distributed import DistributedError
    from archzoo.train.loop import TrainingError, train
    from archzoo.train.rundir import RunDirBusy, RunDirError
    from archzoo.train.sweep import EXIT_BUSY

    experiment = load_experiment(args.config, args.overrides)
    configs = _selected(experiment, args.run)
    summaries = []
    try:
        for cfg in configs:
            summaries.append(
                train(cfg, overwrite=args.overwrite, progress=False if args.no_progress else None, allow_plugin_change=args.allow_plugin_change)
            )
            if summaries[-1]["stopped_by"] == "sigterm":
                break
    except RunDirBusy as e:
        print(f"archzoo run: error: {e}", file=sys.stderr)
        return EXIT_BUSY
    except (RunDirError, TrainingError, DistributedError) as e:
        print(f"archzoo run: error: {e}", file=sys.stderr)
        return 1
    import jax

    if not args.no_table and jax.process_index() == 0:  # of several processes, the first writes
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


def _sweep(args) -> int:
    from archzoo.analysis.runs import is_run_dir, load_run, sweep_axes, sweep_manifest
    from archzoo.analysis.table import comparison_table, sweep_rows, write_sweep_table
    from archzoo.train import sweep
    from archzoo.train.config import load_experiment

    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    params = sweep.check_launcher_params(args.launcher_arg)
    if params and args.launcher != "submitit":
        raise ConfigError("--launcher-arg sets submitit parameters; it needs --launcher submitit")
    experiment = load_experiment(args.config, args.overrides)
    runs = sweep.plan_sweep(experiment, overwrite=args.overwrite, allow_plugin_change=args.allow_plugin_change)
    if args.print_commands:
        print(sweep.format_commands(experiment, runs, args.overrides))
        return 0
    sweep_dir = sweep.sweep_dir_of(experiment)
    if not args.no_estimate:
        known = sweep_manifest(sweep_dir) or {}
        sweep.estimate_runs(runs, known.get("estimates"), report=lambda m: print(m, file=sys.stderr, flush=True))
    print(sweep.format_plan(experiment, runs, args.jobs), flush=True)
    if args.dry_run:
        return 0
    sweep.write_manifest(experiment, runs)
    wall = time.perf_counter()
    result = sweep.run_sweep(
        experiment, runs, args.overrides, jobs=args.jobs, launcher=args.launcher,
        launcher_params=params, overwrite=args.overwrite, progress=not args.no_progress, allow_plugin_change=args.allow_plugin_change,
    )
    records = [load_run(r.cfg.run_dir) for r in runs if is_run_dir(r.cfg.run_dir)]
    if records:
        paths = write_sweep_table(sweep_dir, sweep_rows(records, sweep_axes(sweep_dir)))
        print(comparison_table(records))
        print(f"sweep table: {', '.join(str(p) for p in paths)}")
    print(
        f"sweep {experiment.name}: {len(result.trained)} trained, {len(result.skipped)} already done, "
        f"{len(result.failed)} failed, {len(result.busy)} held by another process; {time.perf_counter() - wall:,.0f} s"
    )
    for name, message in result.failed.items():
        print(f"  {name} failed: {message} (traceback: {sweep_dir / name / 'error.txt'})", file=sys.stderr)
    for name in result.busy:
        print(f"  {name}: another process trains it; rerun the sweep when it is done", file=sys.stderr)
    if result.stopped:
        print("archzoo sweep: interrupted by SIGTERM: the runs under way saved their checkpoints; run the same command to resume", file=sys.stderr)
        return EXIT_SIGTERM
    return 1 if result.failed else 0


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


def _plot(args) -> int:
    from archzoo.analysis.plots import format_report, plot_sweep
    from archzoo.analysis.runs import RecordError, load_sweep

    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    try:
        records = load_sweep(args.sweep_dir)
    except RecordError as e:
        print(f"archzoo plot: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.sweep_dir) / "plots"
    report = plot_sweep(records, out, bootstrap=args.bootstrap, seed=args.seed)
    print(format_report(report))
    return 0 if report.files else 1


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated numbers (0,3), got {text!r}") from None


def _eval(args) -> int:
    from archzoo.analysis.evaluate import EvalOptions, evaluate_run, task_table
    from archzoo.analysis.runs import RecordError, is_run_dir
    from archzoo.tasks.task import load_task

    opts = EvalOptions(
        shots=_int_list(args.shots, "--shots") if args.shots else None, seed=args.seed, batch_size=args.batch_size, bootstrap=args.bootstrap
    )
    specs = [t.strip() for t in ",".join(args.tasks).split(",") if t.strip()]
    if not specs:
        raise ConfigError("--tasks names no task")
    tasks = [load_task(spec, examples=args.examples, seed=args.seed) for spec in specs]  # read before any run
    run_dirs = []
    for d in args.run_dirs:
        path = Path(d)
        # a sweep directory: every run directory under it
        run_dirs += [path] if is_run_dir(path) or not path.is_dir() else sorted(p for p in path.iterdir() if is_run_dir(p))
    if not run_dirs:
        raise ConfigError(f"{', '.join(args.run_dirs)}: holds no run directory")
    try:
        for run_dir in run_dirs:
            records = evaluate_run(run_dir, tasks, opts, step=args.step)
            print(f"{run_dir} (step {records[0]['step']}, {records[0]['family']}, scored by {records[0]['scoring']}):")
            print(task_table(records))
            print(f"wrote {run_dir / 'evals.jsonl'} and the examples under {run_dir / 'evals'}")
    except RecordError as e:
        print(f"archzoo eval: error: {e}", file=sys.stderr)
        return 2
    return 0


def _generate(args) -> int:
    from archzoo.analysis.scoring import load_trained
    from archzoo.generation import generate

    run = load_trained(args.run_dir, args.step)
    if run.family == "encoder":
        raise ConfigError(f"{args.run_dir}: an encoder (MLM) run cannot generate text; generate from a decoder or encoder-decoder run")
    prompts = args.prompt or [""]
    ids = run.tokenizer.encode_batch(prompts)
    eos = run.tokenizer.roles.get("eos")
    if run.model.source_stream is None:
        # every training row started with the start token: so does each prompt
        kwargs = dict(prompts=[[run.start_id] + p for p in ids])
    else:
        empty = [i for i, p in enumerate(ids) if not p]
        if empty:
            raise ConfigError(f"--prompt {empty[0] + 1} is empty; an encoder-decoder needs an input to encode")
        kwargs = dict(encoder_inputs=ids, decoder_start_id=run.start_id)
    max_new = args.max_new_tokens
    position = run.model.config.position
    if max_new is None:  # 64, or what the learned position table leaves after the longest prompt
        rows = kwargs.get("prompts") or [[run.start_id]]
        max_new = min(64, position.max_len - max(len(r) for r in rows)) if position.kind == "learned" else 64
    for sample in range(args.samples):
        out = generate(
            run.model, max_new_tokens=max_new, temperature=args.temperature, top_k=args.top_k,
            top_p=args.top_p, seed=args.seed + sample, eos_id=eos, **kwargs,
        )
        for i, prompt in enumerate(prompts):
            row = [int(t) for t in out.tokens[i, : out.lengths[i]] if t != eos]
            label = f"[{i + 1}.{sample + 1}] " if len(prompts) * args.samples > 1 else ""
            print(f"{label}{prompt}{run.tokenizer.decode(row)}")
    print(f"({run.run_dir}, step {run.step}, {'greedy' if args.temperature == 0 else f'temperature {args.temperature}'})", file=sys.stderr)
    return 0


def _lm_eval(lm_eval_args: list[str]) -> int:
    try:
        from archzoo.harness import main as harness_main
    except ImportError as e:
        print(f"archzoo lm-eval: error: {e}", file=sys.stderr)
        return 2
    return harness_main(lm_eval_args)


def _bench(args) -> int:
    import jax

    from archzoo import hostmem
    from archzoo.bench import DEFAULT_MODEL, bench_train, check_model, data_sheet_peak, matmul_peak_flops
    from archzoo.models import load_model_config

    if args.config:
        variants = [(Path(args.config).stem, load_model_config(args.config, args.overrides))]
    else:
        base = load_model_config(DEFAULT_MODEL, args.overrides)
        variants = [
            ("causal decoder", base),
            ("prefix decoder", base.replace(mask="prefix")),
            ("encoder-decoder", base.replace(family="encoder_decoder", num_layers=2, num_encoder_layers=2)),
        ]
    if args.remat:  # every policy checked (as model.remat) before the first benchmark starts
        variants = [(name, load_model_config(cfg, [f"remat={p}"])) for name, cfg in variants for p in args.remat.split(",")]
    for _, cfg in variants:
        check_model(cfg, args.length)
    if args.reference == "torch":
        return _bench_against_torch(args, variants)
    dtypes = sorted({cfg.dtype for _, cfg in variants})
    peaks = {dtype: matmul_peak_flops(dtype=dtype) for dtype in dtypes}
    kind = jax.devices()[0].device_kind
    sheet = {dtype: data_sheet_peak(kind, dtype) for dtype in dtypes}
    on_sheet = any(sheet.values())
    measured = "; ".join(f"{dtype} {_flops(peak)}" for dtype, peak in peaks.items())
    print(f"matmul peak measured here ({kind}, best of 10): {measured}; host memory: {hostmem.state()}")
    if on_sheet:
        print("data-sheet peak (dense): " + "; ".join(f"{dtype} {_flops(p)}" for dtype, p in sheet.items() if p) + "; MFU (sheet) is against it")
    print(f"batch {args.batch_size} x length {args.length}, {', '.join(dtypes)}, AdamW; step time is the median of {args.steps} steps")
    device = jax.devices()[0].memory_stats() is not None  # GPUs report their allocator's figures
    print(
        "MFU: model FLOPs per second over the matmul peak measured here in the model's dtype; "
        "peak: what the compiled step holds (arguments + outputs + temporaries - donated buffers, XLA's memory analysis)"
        + ("; device peak: the allocator's high-water mark since the process started (it never falls)" if device else "")
    )
    print(
        f"{'model':<18}{'remat':<11}{'params':>12}{'tokens/s':>12}{'step (ms)':>11}{'first step (s)':>16}{'MFU':>8}"
        + (f"{'MFU (sheet)':>13}" if on_sheet else "")
        + f"{'peak (MiB)':>12}" + (f"{'device peak (MiB)':>19}" if device else "")
    )
    for name, cfg in variants:
        r = bench_train(cfg, batch=args.batch_size, length=args.length, steps=args.steps, peak=peaks[cfg.dtype])
        line = (
            f"{name:<18}{r['remat']:<11}{r['params']:>12,}{r['tokens_per_s']:>12,.0f}{r['step_s'] * 1e3:>11.1f}"
            f"{r['first_step_s']:>16.2f}{r['mfu']:>8.1%}"
        )
        if on_sheet:
            p = sheet[cfg.dtype]
            line += f"{r['model_flops'] / r['step_s'] / p:>13.1%}" if p else f"{'-':>13}"
        line += f"{r['peak_bytes'] / 2**20:>12.1f}"
        if device:
            line += f"{(r['device_peak_bytes'] or 0) / 2**20:>19.1f}"
        print(line, flush=True)
    return 0


def _flops(per_s: float) -> str:
    return f"{per_s / 1e12:,.1f} TFLOP/s" if per_s >= 1e12 else f"{per_s / 1e9:,.1f} GFLOP/s"


def _bench_against_torch(args, variants) -> int:
    import numpy as np
    import torch

    from archzoo import hostmem
    from archzoo.bench import bench_against_torch

    rates = bench_against_torch(variants, batch=args.batch_size, length=args.length, steps=args.steps, rounds=args.rounds)
    print(
        f"batch {args.batch_size} x length {args.length}, float32, AdamW; {args.rounds} rounds of {args.steps} steps, "
        f"archzoo and the PyTorch {torch.__version__} reference (benchmarks/torch_gpt.py: the {variants[0][0]}, eager, "
        f"{torch.get_num_threads()} threads) interleaved in this process; host memory: {hostmem.state()}"
    )
    print(f"{'model':<18}{'tokens/s (median)':>19}{'torch tokens/s':>16}{'ratio min':>11}{'ratio median':>14}")
    torch_rates = np.array(rates.pop("torch"))
    for name, r in rates.items():
        ratio = np.array(r) / torch_rates  # round by round: the two ran under the same load
        print(f"{name:<18}{np.median(r):>19,.0f}{np.median(torch_rates):>16,.0f}{ratio.min():>11.2f}{np.median(ratio):>14.2f}", flush=True)
    return 0


def _bench_attention(args) -> int:
    from archzoo.bench import bench_attention
    from archzoo.layers import cpu_fused

    if not cpu_fused.available():
        raise ConfigError("bench attention compares the cpu kernel with xla; the kernel is not available here (see the line above)")
    print(
        f"attention core alone: batch {args.batch_size} x length {args.length}, {args.heads} heads of {args.head_dim}, float32; "
        f"median of {args.steps} calls; prefix: the first half of each row"
    )
    print(f"{'mask':<8}{'backend':<9}{'forward (ms)':>14}{'fwd+bwd (ms)':>14}")
    rows = bench_attention(batch=args.batch_size, length=args.length, heads=args.heads, head_dim=args.head_dim, steps=args.steps, reference=args.reference)
    for r in rows:
        print(f"{r['mask']:<8}{r['backend']:<9}{r['forward_s'] * 1e3:>14.1f}{r['step_s'] * 1e3:>14.1f}", flush=True)
    return 0


def _bench_moe(args) -> int:
    from archzoo.bench import DEFAULT_MODEL, bench_moe_layer, bench_train, matmul_peak_flops, moe_variants
    from archzoo.models import load_model_config

    peak = matmul_peak_flops()
    base = load_model_config(args.config or DEFAULT_MODEL, args.overrides)
    if base.moe is not None:
        raise ConfigError(f"{args.config}: give the dense model; bench moe builds its MoE twins (it has moe set)")
    variants = moe_variants(base, args.experts, args.top_k)
    print(f"float32 matmul peak (2048x2048, best of 10): {peak / 1e9:,.1f} GFLOP/s")
    print(
        f"{args.experts} experts of width {base.mlp.d_ff // args.top_k}, top-{args.top_k}, against the dense MLP of width "
        f"{base.mlp.d_ff}: the same active parameters; batch {args.batch_size} x length {args.length}, float32; "
        f"median of {args.steps} steps; MFU counts active FLOPs (chosen experts and router)"
    )
    rows = []
    for what, run in (("layer (fwd+bwd)", bench_moe_layer), ("training step", bench_train)):
        dense_s = None
        for name, cfg in variants:
            r = run(cfg, batch=args.batch_size, length=args.length, steps=args.steps, peak=peak)
            dense_s = dense_s or r["step_s"]
            rows.append((what, name, r, r["step_s"] / dense_s))
    print(f"{'':<16}{'variant':<23}{'params':>12}{'active':>12}{'tokens/s':>11}{'ms':>9}{'MFU':>7}{'x dense':>9}")
    for what, name, r, ratio in rows:
        params = f"{r['params']:,}" if "params" in r else ""
        active = f"{r['active_params']:,}" if "active_params" in r else ""
        print(f"{what:<16}{name:<23}{params:>12}{active:>12}{r['tokens_per_s']:>11,.0f}{r['step_s'] * 1e3:>9.1f}{r['mfu']:>7.1%}{ratio:>9.2f}")
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
    r.add_argument("--allow-plugin-change", action="store_true", help="resume although a plug-in's source file changed since the run started")
    r.add_argument("--run", action="append", default=[], metavar="NAME", help="train only this run of an experiment (repeatable)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--no-table", action="store_true", help=argparse.SUPPRESS)  # a sweep's runs: the sweep prints one table
    r.set_defaults(func=_run)

    w = sub.add_parser(
        "sweep",
        help="plan and train every run of an experiment, each in its own process; then write the sweep table",
        description="Plan and train every run of an experiment, each in its own process and run directory. "
        "Finished runs are skipped, interrupted ones resume, failed ones record error.json and error.txt in their "
        "directory while the others carry on. Ends with sweep.csv, sweep.jsonl and sweep.md in the sweep directory.",
    )
    w.add_argument("config", help="experiment YAML (axes or runs)")
    w.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config keys of every run")
    w.add_argument("--jobs", type=int, default=1, help="runs at once; the CPU cores are divided between them (default 1)")
    w.add_argument("--dry-run", action="store_true", help="print the plan (with its time estimate) and stop")
    w.add_argument("--no-estimate", action="store_true", help="plan without timing steps (no time estimate)")
    w.add_argument("--print-commands", action="store_true", help="print one shell command per run still to train, for any scheduler, and stop")
    w.add_argument("--launcher", choices=("local", "submitit"), default="local", help="local processes, or submitit jobs (SLURM; its local executor without SLURM)")
    w.add_argument("--launcher-arg", action="append", default=[], metavar="KEY=VALUE", help="a submitit executor parameter (slurm_partition=gpu, timeout_min=60, cluster=local)")
    w.add_argument("--overwrite", action="store_true", help="train afresh runs whose directories hold a different config")
    w.add_argument("--allow-plugin-change", action="store_true", help="resume runs although a plug-in's source file changed since they started")
    w.add_argument("--no-progress", action="store_true", help="no progress display")
    w.set_defaults(func=_sweep)

    t = sub.add_parser("table", help="print the comparison table of run directories (or of the runs under a directory)")
    t.add_argument("dirs", nargs="+", help="run directories, or directories holding run directories")
    t.set_defaults(func=_table)

    pl = sub.add_parser(
        "plot",
        help="fit a sweep's runs and draw its scaling plots (PNG and SVG)",
        description="Fit power laws in parameters, tokens and FLOPs per family (bootstrap intervals over runs), find "
        "where families cross, and draw loss against N, D and C, the compute frontier, IsoFLOP profiles when the runs "
        "form them, and every run's validation curve. Unfinished or failed runs are skipped with a note.",
    )
    pl.add_argument("sweep_dir", help="a directory of run directories (a sweep's out_dir)")
    pl.add_argument("--out", help="where the figures go (default: SWEEP_DIR/plots)")
    pl.add_argument("--bootstrap", type=int, default=1000, help="resamples of the runs behind every interval (default 1000; 0: none)")
    pl.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    pl.set_defaults(func=_plot)

    e = sub.add_parser(
        "eval",
        help="evaluate run directories on prompted tasks; writes evals.jsonl and the examples",
        description="Score a run's newest intact checkpoint (or --step) on built-in synthetic tasks or task YAML files, "
        "zero- and few-shot, with discontinuous metrics (exact match, accuracy) and continuous ones (answer "
        "log-likelihood, Brier score, edit distances) side by side; writes RUN_DIR/evals.jsonl and RUN_DIR/evals/*.jsonl.",
    )
    e.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories, or directories holding run directories")
    e.add_argument("--tasks", action="append", required=True, metavar="TASKS", help="comma-separated built-in task names or task YAML paths")
    e.add_argument("--shots", help="comma-separated numbers of demonstrations (default: each task's own)")
    e.add_argument("--examples", type=int, help="at most this many examples per task (a built-in task's default: 200)")
    e.add_argument("--step", type=int, help="the checkpoint step to evaluate (default: the newest)")
    e.add_argument("--seed", type=int, default=0, help="demonstrations, built-in examples and bootstrap (default 0)")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--bootstrap", type=int, default=1000, help="resamples behind each standard error (default 1000)")
    e.set_defaults(func=_eval)

    g = sub.add_parser("generate", help="print text a trained run writes after prompts (greedy or sampled)")
    g.add_argument("run_dir", help="a run directory with a finished checkpoint")
    g.add_argument("--prompt", action="append", help="a prompt (repeatable; default: one empty prompt)")
    g.add_argument("--max-new-tokens", type=int, help="tokens to generate (default: 64, or what a learned position table leaves)")
    g.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    g.add_argument("--top-k", type=int)
    g.add_argument("--top-p", type=float)
    g.add_argument("--samples", type=int, default=1, help="samples per prompt (seeds seed, seed+1, ...)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--step", type=int, help="the checkpoint step (default: the newest)")
    g.set_defaults(func=_generate)

    h = sub.add_parser(
        "lm-eval",
        help="run lm-evaluation-harness with run directories as its 'archzoo' model",
        description="lm-evaluation-harness's own command line, with archzoo registered as a model: "
        "archzoo lm-eval --model archzoo --model_args run_dir=RUN --tasks TASKS [--include_path DIR] "
        "[--num_fewshot K] [--output_path OUT]. Every lm_eval argument is passed through.",
        add_help=False,
    )
    h.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="lm_eval's arguments")
    h.set_defaults(func=lambda a: _lm_eval(a.lm_eval_args))

    b = sub.add_parser("bench", help="speed benchmarks")
    bsub = b.add_subparsers(dest="what", required=True)
    bt = bsub.add_parser("train", help="training-step speed and MFU (default: GPT-2-style 4x256, context 256)")
    bt.add_argument("config", nargs="?", help="a model config YAML (default: the built-in GPT-2-style model, as causal, prefix and encoder-decoder)")
    bt.add_argument("--batch-size", type=int, default=16)
    bt.add_argument("--length", type=int, default=256)
    bt.add_argument("--steps", type=int, default=10)
    bt.add_argument("--reference", choices=("torch",), help="time the plain PyTorch step of the same causal decoder in the same process, interleaved, and print the ratios")
    bt.add_argument("--rounds", type=int, default=5, help="rounds of --steps steps each with --reference (default 5)")
    bt.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    bt.add_argument(
        "--remat",
        metavar="POLICY[,POLICY...]",
        help="benchmark each model under each rematerialisation policy: none, full, dots, attention (default: the model's)",
    )
    bt.set_defaults(func=_bench)
    bm = bsub.add_parser(
        "moe",
        help="dropless, capacity-based and dense layers and training steps at the same active parameters",
    )
    bm.add_argument("config", nargs="?", help="a dense model config YAML (default: the built-in GPT-2-style model)")
    bm.add_argument("--experts", type=int, default=8)
    bm.add_argument("--top-k", type=int, default=2)
    bm.add_argument("--batch-size", type=int, default=16)
    bm.add_argument("--length", type=int, default=256)
    bm.add_argument("--steps", type=int, default=10)
    bm.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    bm.set_defaults(func=_bench_moe)

    ba = bsub.add_parser("attention", help="the attention core's forward and backward on the cpu kernel and on xla")
    ba.add_argument("--batch-size", type=int, default=16)
    ba.add_argument("--length", type=int, default=256)
    ba.add_argument("--heads", type=int, default=4)
    ba.add_argument("--head-dim", type=int, default=64)
    ba.add_argument("--steps", type=int, default=10)
    ba.add_argument("--reference", choices=("torch",), help="also time PyTorch's scaled_dot_product_attention on the same inputs")
    ba.set_defaults(func=_bench_attention)

    c = sub.add_parser("convert", help="read a Hugging Face folder (config.json + safetensors)")
    c.add_argument("source", help="folder written by save_pretrained")
    c.add_argument("--to-hf", help="write the converted model back as a Hugging Face folder here")
    c.add_argument("--model-type", help="Hugging Face model_type for --to-hf (default: the source's)")
    c.add_argument("--config", help="write the archzoo model config (YAML) here")
    c.add_argument("--checkpoint", help="write the archzoo weights (orbax) here")
    c.set_defaults(func=_convert)

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["lm-eval"]:  # every argument after it is lm_eval's, --help included
        return _lm_eval(argv[1:])
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


def entry() -> None:
    """The ``archzoo`` command: :func:`main` on the command line's arguments, in a process whose
    host memory comes in huge pages (:func:`archzoo.hostmem.reexec`)."""
    from archzoo import hostmem

    hostmem.reexec()
    sys.exit(main())


if __name__ == "__main__":
    entry()
