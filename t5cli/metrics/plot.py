"""Line charts for `t5 parse-metrics --plot`: one panel per metric.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend
change), imported only when a plot is asked for.
"""

from __future__ import annotations

import math
import os

from t5cli.errors import T5CliError
from t5cli.metrics.table import MetricTable, best_steps

MAX_COLUMNS = 3


def _wrap(title: str, width: int = 44) -> str:
    """Break a long metric name after a '/' so the panel title fits (lines of <= `width`)."""
    lines, line = [], ""
    for part in title.split("/"):
        piece = part if not line else "/" + part
        if line and len(line) + len(piece) > width:
            lines.append(line + "/")
            line = part
        else:
            line += piece
    return "\n".join(lines + [line])


def make_figure(table: MetricTable):
    """A matplotlib Figure with one axes per column of `table`: step on x, the
    metric's values on y, the metric name as title (broken after a '/' when long)
    and the last part of it as y label, its best point marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(table.columns)
    ncols = max(1, min(MAX_COLUMNS, len(names)))
    nrows = max(1, math.ceil(len(names) / ncols))
    fig = Figure(figsize=(5.0 * ncols, 3.4 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    best = best_steps(table)
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        series = table.columns[name]
        steps = sorted(series)
        ax.plot(steps, [series[s] for s in steps], marker="." if len(steps) < 60 else None,
                linewidth=1.4)
        b = best[name]
        if not math.isnan(b.value):
            ax.plot([b.step], [b.value], marker="o", color="tab:red", linestyle="none",
                    label=f"{b.mode} {b.value:.4g} @ {b.step}")
            ax.legend(loc="best", fontsize="small")
        ax.set_title(_wrap(name), fontsize="medium")
        ax.set_xlabel("step")
        ax.set_ylabel(name.rsplit("/", 1)[-1])
        ax.grid(True, alpha=0.3)
        ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    return fig


def plot(table: MetricTable, png_path) -> object:
    """Draw `table` (see `make_figure`) into `png_path`; the format follows the file
    extension (png when there is none). Returns the Figure."""
    path = os.fspath(png_path)
    fig = make_figure(table)
    ext = os.path.splitext(path)[1].lower().lstrip(".") or "png"
    supported = fig.canvas.get_supported_filetypes()
    if ext not in supported:
        raise T5CliError(f"--plot {path!r}: unknown image type '.{ext}'; "
                         f"use a .png file (or one of .{', .'.join(sorted(supported))})")
    try:
        fig.savefig(path, format=ext, dpi=100)
    except OSError as e:
        raise T5CliError(f"cannot write --plot {path!r}: {e.strerror or e}; "
                         "check that its directory exists and is writable") from None
    return fig
