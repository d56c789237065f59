"""`t5 parse-metrics` (alias `t5 parse-tb`): TensorBoard scalars to CSV, a table, JSON or a plot.

Only click is imported here; the work happens in `t5cli.metrics.parse`.
"""

from __future__ import annotations

import click

_HELP = """Read the scalar metrics in TensorBoard event files under SUMMARY_DIR.

Replaces T5's `python -m t5.scripts.parse_tb --summary_dir=DIR
--seqio_summaries --out_file=results.csv` and writes the same CSV: a
`step,<metric>,...` header, one row per step, then a `max,` row and a `step,`
row giving the step where each metric's group has its best mean. GLUE and
SuperGLUE averages are added when all their metrics are present, tags T5
knows get its display names (glue_cola_v002/matthews_corrcoef is CoLA), and a
step logged twice keeps its higher value. As in T5, the CSV's `max,` row is
the maximum for every metric; --best and the table use the minimum for losses.

\b
Examples:
  t5 parse-metrics $MODEL_DIR/inference_eval --seqio-summaries
  t5 parse-tb --summary_dir=$MODEL_DIR/inference_eval --seqio_summaries --out_file=results.csv
  t5 parse-metrics runs/ --tag '*bleu*' --best
  t5 parse-metrics runs/ --plot curves.png
"""


@click.command("parse-metrics", help=_HELP, short_help="Parse TensorBoard metrics into CSV, a table or a plot.")
@click.argument("summary_dir_arg", metavar="[SUMMARY_DIR]", required=False,
                type=click.Path(file_okay=True, dir_okay=True))
@click.option("--summary-dir", "--summary_dir", "summary_dir", metavar="DIR",
              help="Directory with the event files (same as SUMMARY_DIR).")
@click.option("--seqio-summaries", "--seqio_summaries", "seqio_summaries", is_flag=True,
              help="Treat each subdirectory as a seqio task (e.g. inference_eval/<task>/) and read its "
                   "eval/<metric> tags as <task>/<metric>. Without it, every run under the directory is "
                   "read as <run>/<tag> (just <tag> for files directly in it).")
@click.option("--out-file", "--out_file", "out_file", metavar="FILE",
              help="Write the result to FILE instead of stdout.")
@click.option("--format", "fmt", type=click.Choice(["csv", "table", "json"]), default=None,
              help="Output format. Default: table on a terminal, csv when piped or with --out-file "
                   "(json when FILE ends in .json).")
@click.option("--plot", "plot_file", metavar="FILE.png",
              help="Also draw one line chart per metric (value against step) into FILE.png.")
@click.option("--tag", "tags", metavar="GLOB", multiple=True,
              help="Only metrics whose name matches GLOB (fnmatch, e.g. '*bleu*'); repeatable.")
@click.option("--best", is_flag=True,
              help="Print only the best step and value per metric: the maximum, or the minimum "
                   "for metrics with 'loss' in their name.")
def command(summary_dir_arg, summary_dir, seqio_summaries, out_file, fmt, plot_file, tags, best):
    from t5cli.errors import T5CliError

    if summary_dir_arg and summary_dir and summary_dir_arg != summary_dir:
        raise T5CliError(f"two summary directories given ({summary_dir_arg!r} and --summary-dir "
                         f"{summary_dir!r}); pass only one")
    directory = summary_dir_arg or summary_dir
    if not directory:
        raise T5CliError("no summary directory given; pass SUMMARY_DIR or --summary-dir DIR, "
                         "e.g. t5 parse-metrics $MODEL_DIR/inference_eval --seqio-summaries")
    from t5cli.metrics.parse import parse_metrics

    parse_metrics(directory, seqio_summaries=seqio_summaries, fmt=fmt, out_file=out_file,
                  plot_file=plot_file, tags=tags, best=best)
