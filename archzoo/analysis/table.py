"""The comparison table of a set of runs, built from their run directories only."""

from __future__ import annotations

from archzoo.analysis.runs import RunRecord

__all__ = ["comparison_table"]

HEADER = (
    "run", "family", "params", "target tokens", "tokens processed", "FLOPs",
    "val loss (nats/token)", "val bits/byte", "wall (s)",
)


def _row(record: RunRecord) -> tuple[str, ...]:
    facts = record.facts
    family = facts["family"] + (" (prefix)" if facts["family"] == "decoder" and facts.get("mask") == "prefix" else "")
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
        f"{s['target_tokens']:,}",
        f"{s['tokens']:,}",
        f"{s['flops']:.3e}",
        number("val_loss_nats"),
        number("val_bits_per_byte"),
        f"{s['wall_seconds']:.1f}" if "wall_seconds" in s else "-",
    )


def comparison_table(records: list[RunRecord]) -> str:
    """A markdown table, one row per run: family, parameters, target tokens, tokens processed,
    FLOPs, validation loss in nats per target token and bits per byte, wall time."""
    rows = [HEADER, *(_row(r) for r in records)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
