"""The comparison table of a set of runs, built from their run directories only."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from archzoo.analysis.runs import RunRecord, write_text_atomic
from archzoo.analysis.sweep import mask_label

__all__ = ["SWEEP_COLUMNS", "comparison_table", "sweep_rows", "write_sweep_table"]

HEADER = (
    "run", "family", "params", "active params", "target tokens", "tokens processed", "FLOPs",
    "val loss (nats/token)", "val bits/byte", "wall (s)",
)


def _row(record: RunRecord) -> tuple[str, ...]:
    facts = record.facts
    mask = mask_label(facts.get("mask"))
    family = facts["family"] + ("" if mask == "causal" else f" ({mask})")
    s = record.summary
    if s is None:  # still training, or killed: the counts of its last logged step
        last = record.metrics[-1] if record.metrics else {}
        step = last.get("step", 0)
        s = {"target_tokens": last.get("target_tokens", 0), "tokens": last.get("tokens", 0), "flops": last.get("flops", 0.0)}
        name = f"{record.name} (not finished, step {step})"
    elif s.get("stopped_by") == "sigterm":
        name = f"{record.name} (interrupted at step {s['steps']})"
    else:
        name = record.name

    def number(key: str) -> str:
        return f"{s[key]:.4f}" if key in s else "-"

    return (
        name,
        family,
        f"{facts['params']:,}",
        f"{facts.get('active_params', facts['params']):,}",
        f"{s['target_tokens']:,}",
        f"{s['tokens']:,}",
        f"{s['flops']:.3e}",
        number("val_loss_nats"),
        number("val_bits_per_byte"),
        f"{s['wall_seconds']:.1f}" if "wall_seconds" in s else "-",
    )


def comparison_table(records: list[RunRecord]) -> str:
    """A markdown table, one row per run: family, parameters (total, and active: an MoE layer's
    chosen experts, not all of them), target tokens, tokens processed,
    FLOPs, validation loss in nats per target token and bits per byte, wall time."""
    rows = [HEADER, *(_row(r) for r in records)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# One row per run of a sweep: its axis values, then these (CSV, JSON lines, markdown).
SWEEP_COLUMNS = (
    "run", "status", "family", "mask", "objective", "params", "non_embedding_params", "active_params", "flops_per_token",
    "steps", "target_tokens", "tokens", "flops", "val_loss_nats", "val_bits_per_byte", "wall_seconds", "error",
)


def _status(record: RunRecord) -> str:
    if record.summary is not None:
        return "finished" if record.spent_budget else f"stopped by {record.summary['stopped_by']}"
    return "failed" if record.error else "not finished"


def sweep_rows(records: list[RunRecord], axes: dict[str, dict[str, str]] | None = None) -> list[dict]:
    """One mapping per run: its axis values' names (``axis:<key>`` columns), status, facts and
    summary (the last logged step's counts for a run that has not finished); the failed run's
    error message."""
    axis_keys = list(dict.fromkeys(k for names in (axes or {}).values() for k in names))
    rows = []
    for r in records:
        s = r.summary
        if s is None:
            last = r.metrics[-1] if r.metrics else {}
            s = {k: last.get(k, 0) for k in ("step", "target_tokens", "tokens", "flops")}
            s["steps"] = s.pop("step")
        row = {"run": r.name}
        row.update({f"axis:{k}": (axes or {}).get(r.name, {}).get(k) for k in axis_keys})
        row["status"] = _status(r)
        for key in SWEEP_COLUMNS[2:9]:
            row[key] = r.facts.get(key)
        for key in SWEEP_COLUMNS[9:16]:
            row[key] = s.get(key)
        row["error"] = (r.error or {}).get("message") if r.summary is None else None
        rows.append(row)
    return rows


def _markdown(rows: list[dict]) -> str:
    def cell(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    header = list(rows[0])
    table = [header, *([cell(row[k]) for k in header] for row in rows)]
    widths = [max(len(t[i]) for t in table) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(t, widths)) + " |" for t in table]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + "\n"


def write_sweep_table(sweep_dir: str | Path, rows: list[dict]) -> list[Path]:
    """Writes ``sweep.csv``, ``sweep.jsonl`` and ``sweep.md`` into ``sweep_dir``; returns them."""
    sweep_dir = Path(sweep_dir)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    files = {
        "sweep.csv": out.getvalue(),
        "sweep.jsonl": "".join(json.dumps(row) + "\n" for row in rows),
        "sweep.md": _markdown(rows),
    }
    for name, text in files.items():
        write_text_atomic(sweep_dir / name, text)
    return [sweep_dir / name for name in files]
