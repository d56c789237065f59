"""Rendering a metric table: T5 parse_tb's CSV, a terminal table, JSON, best steps."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import sys

from t5cli.errors import T5CliError
from t5cli.metrics.table import Best, MetricTable, best_steps

FORMATS = ("csv", "table", "json")


def to_csv(table: MetricTable) -> str:
    """T5 parse_tb's CSV: `step,<metrics>` header, one row per step (3 decimals, blank
    where missing), then `max,` (values at each group's best step) and `step,` rows."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", *table.columns])
    for step in table.steps:
        writer.writerow([step, *(f"{c[step]:.3f}" if step in c else "" for c in table.columns.values())])
    best = best_steps(table, loss_aware=False)
    buf.write("max," + ",".join(f"{b.value:.3f}" for b in best.values()) + "\n")
    buf.write("step," + ",".join(f"{b.step:d}" for b in best.values()) + "\n")
    return buf.getvalue()


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _grid(rows: list[list[str]], width: int, keep: int = 1) -> str:
    """Lay out rows as aligned columns, splitting into blocks no wider than `width`
    (the first `keep` columns are repeated in every block)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    blocks, current, used = [], [], sum(widths[:keep]) + 2 * keep
    for i in range(keep, len(widths)):
        if current and used + widths[i] + 2 > width:
            blocks.append(current)
            current, used = [], sum(widths[:keep]) + 2 * keep
        current.append(i)
        used += widths[i] + 2
    blocks.append(current)
    out = []
    for block in blocks:
        cols = list(range(keep)) + block
        for r, row in enumerate(rows):
            cells = [row[i].ljust(widths[i]) if i < max(keep, 1) else row[i].rjust(widths[i])
                     for i in cols]
            out.append("  ".join(cells).rstrip())
            if r == 0:
                out.append("  ".join("-" * widths[i] for i in cols))
        out.append("")
    return "\n".join(out)


def to_table(table: MetricTable, *, width: int | None = None) -> str:
    """A readable terminal table: one row per step, then the best value and its step
    (max, or min for loss-like metrics); split into blocks to fit `width` columns
    (default: the terminal's width)."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    best = best_steps(table)
    rows = [["step", *table.columns]]
    rows += [[str(s), *(_fmt(c.get(s)) for c in table.columns.values())] for s in table.steps]
    rows.append(["best", *(_fmt(b.value) for b in best.values())])
    rows.append(["best step", *(str(b.step) for b in best.values())])
    return _grid(rows, width) + "best: max; min if 'loss' in name\n"


def to_json(table: MetricTable, *, summary_dir: str | None = None) -> str:
    """JSON: {"summary_dir", "metrics": {name: {"tag", "steps", "values"}},
    "best": {name: {"step", "value", "mode"}}} (NaN and infinities written as null)."""
    best = best_steps(table)
    doc = {
        "summary_dir": summary_dir,
        "metrics": {n: {"tag": table.tags[n], "steps": sorted(c), "values": [_finite_or_none(c[s]) for s in sorted(c)]}
                    for n, c in table.columns.items()},
        "best": {n: _best_dict(b) for n, b in best.items()},
    }
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity: such values are written as null."""
    return value if math.isfinite(value) else None


def _best_dict(b: Best) -> dict:
    return {"step": b.step, "value": _finite_or_none(b.value), "mode": b.mode}


def format_best(table: MetricTable, fmt: str) -> str:
    """Only the best step per metric (max; min for loss-like), in `fmt`."""
    best = best_steps(table)
    if fmt == "json":
        return json.dumps({n: _best_dict(b) for n, b in best.items()}, indent=2, allow_nan=False) + "\n"
    rows = [["metric", "step", "value", "mode"]]
    rows += [[n, str(b.step), _fmt(b.value), b.mode] for n, b in best.items()]
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        return buf.getvalue()
    return _grid(rows, sys.maxsize, keep=0)


def resolve_format(fmt: str | None, out_file: str | None, isatty: bool) -> str:
    """`fmt` if given; else json for a .json out file, csv for any other out file,
    table on a terminal, csv otherwise."""
    if fmt:
        if fmt not in FORMATS:
            raise T5CliError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt
    if out_file:
        return "json" if str(out_file).lower().endswith(".json") else "csv"
    return "table" if isatty else "csv"
