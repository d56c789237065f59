"""``parse_metrics()``: scalar metrics from TensorBoard event files as CSV, a table, JSON
or a plot.

The library behind ``t5 parse-metrics`` (alias ``t5 parse-tb``), which replaces T5's
``python -m t5.scripts.parse_tb --summary_dir=DIR --seqio_summaries --out_file=F``.
Plain Python (no pandas): reading is in :mod:`t5cli.metrics.events`, naming and best
steps in :mod:`t5cli.metrics.table`, output formats in :mod:`t5cli.metrics.render`.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable

from t5cli.errors import T5CliError
from t5cli.metrics.events import ReadStats, read_scalars, tf_api
from t5cli.metrics.render import format_best, resolve_format, to_csv, to_json, to_table
from t5cli.metrics.table import MetricTable, build_table, select


def plot(table: MetricTable, png_path):
    """Draw one line chart per column into `png_path`; see `t5cli.metrics.plot`."""
    from t5cli.metrics.plot import plot as draw

    return draw(table, png_path)


def _write_text(path: str, text: str) -> None:
    remote = "://" in path  # gs://… through TensorFlow's gfile, as T5 did
    errors = (OSError, tf_api().errors.OpError) if remote else OSError
    try:
        with (tf_api().io.gfile.GFile(path, "w") if remote else open(path, "w", encoding="utf-8")) as f:
            f.write(text)
    except errors as e:
        why = getattr(e, "strerror", None) or getattr(e, "message", None) or e
        raise T5CliError(f"cannot write --out-file {path!r}: {why}; "
                         "check that its directory exists and is writable") from None


def _stderr(msg: str) -> None:
    import click

    click.echo(msg, err=True)


def parse_metrics(summary_dir, *, seqio_summaries: bool = False, fmt: str | None = None,
                  out_file: str | None = None, plot_file: str | None = None,
                  tags: Iterable[str] = (), best: bool = False, stream=None) -> str:
    """Read `summary_dir`, render it as `fmt` and write it to `out_file` or `stream`
    (default stdout); optionally draw `plot_file`. Returns the rendered text.
    Warnings and notes go to stderr, one line each; user errors raise T5CliError."""
    stream = stream if stream is not None else sys.stdout
    isatty = bool(getattr(stream, "isatty", lambda: False)())
    fmt = resolve_format(fmt, out_file, isatty)
    summary_dir = os.fspath(summary_dir)
    stats = ReadStats()
    scalars = read_scalars(summary_dir, seqio_summaries=seqio_summaries, stats=stats,
                           warn=lambda m: _stderr(f"warning: {m}"))
    if not stats.files:
        if seqio_summaries:
            raise T5CliError(f"no event files in any task subdirectory of {summary_dir!r}; "
                             "--seqio-summaries expects DIR/<task>/events.out.tfevents.* "
                             "(drop the flag to read DIR and all its subdirectories)")
        raise T5CliError(f"no TensorBoard event files (names containing 'tfevents') under "
                         f"{summary_dir!r}; point SUMMARY_DIR at a model's summary directory, "
                         "e.g. $MODEL_DIR/inference_eval")
    skipped = stats.skipped_line()
    if not scalars:
        what = "'eval/<metric>' scalar summaries" if seqio_summaries else "scalar summaries"
        raise T5CliError(f"no {what} in the {len(stats.files)} event file(s) under {summary_dir!r}"
                         + (f" (only {skipped})" if skipped else "")
                         + ("; drop --seqio-summaries to read every tag" if seqio_summaries else ""))
    if skipped:
        _stderr(f"note: skipped {skipped}")
    if not seqio_summaries and all("/" not in r and r != "." and any(n.startswith(f"{r}/eval/")
                                                                   for n in scalars)
                                   for r in stats.runs):
        _stderr("hint: these look like seqio task directories; add --seqio-summaries for T5's "
                "<task>/<metric> names")
    table = select(build_table(scalars), tags)
    if best:
        text = format_best(table, fmt)
    elif fmt == "csv":
        text = to_csv(table)
    elif fmt == "json":
        text = to_json(table, summary_dir=summary_dir)
    else:
        text = to_table(table, width=None if isatty else sys.maxsize)
    if plot_file:
        plot(table, plot_file)
        _stderr(f"wrote plot {plot_file} ({len(table.columns)} metrics)")
    if out_file:
        _write_text(os.fspath(out_file), text)
        _stderr(f"wrote {out_file} ({len(table.steps)} steps x {len(table.columns)} metrics)")
    else:
        try:
            stream.write(text)
            stream.flush()
        except BrokenPipeError:  # e.g. `| head`: stop quietly, as other CLI tools do
            if stream is sys.stdout:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return text
