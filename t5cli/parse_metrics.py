"""Scalar metrics from TensorBoard event files as CSV, a table, JSON or a plot.

The library behind `t5 parse-metrics` (alias `t5 parse-tb`), which replaces T5's
`python -m t5.scripts.parse_tb --summary_dir=DIR --seqio_summaries --out_file=F`.
Files are read with TensorBoard's own loader and protos: TF1 `simple_value` and
TF2 `scalars`-plugin tensors alike. Plain Python (no pandas); TensorBoard and
TensorFlow are imported inside the functions that need them.
"""

from __future__ import annotations

import collections
import csv
import fnmatch
import io
import json
import logging
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple

from t5cli.errors import T5CliError

logger = logging.getLogger(__name__)

FORMATS = ("csv", "table", "json")
_EVAL = "eval/"


class Metric(NamedTuple):
    """A display name and the group whose mean picks the best step (T5's `Metric`)."""

    name: str
    group: str


def _m(name: str, group: str | None = None) -> Metric:
    return Metric(name, group or name)


# T5's tag -> display-name table (t5/evaluation/eval_utils.py METRIC_NAMES),
# in the same order: it fixes the CSV column order and the metric groups.
METRIC_NAMES: dict[str, Metric] = {
    "glue_average": _m("Average GLUE Score"),
    "glue_cola_v002/matthews_corrcoef": _m("CoLA"),
    "glue_sst2_v002/accuracy": _m("SST-2"),
    "glue_mrpc_v002/f1": _m("MRPC (F1)", "MRPC"),
    "glue_mrpc_v002/accuracy": _m("MRPC (accuracy)", "MRPC"),
    "glue_stsb_v002/pearson_corrcoef": _m("STSB (Pearson)", "STSB"),
    "glue_stsb_v002/spearman_corrcoef": _m("STSB (Spearman)", "STSB"),
    "glue_qqp_v002/f1": _m("QQP (F1)", "QQP"),
    "glue_qqp_v002/accuracy": _m("QQP (accuracy)", "QQP"),
    "glue_mnli_matched_v002/accuracy": _m("MNLIm", "MNLI"),
    "glue_mnli_mismatched_v002/accuracy": _m("MNLImm", "MNLI"),
    "glue_qnli_v002/accuracy": _m("QNLI"),
    "glue_rte_v002/accuracy": _m("GLUE RTE"),
    "cnn_dailymail_v002/rouge1": _m("CNN/DM (ROUGE-1)", "CNN/DM"),
    "cnn_dailymail_v002/rouge2": _m("CNN/DM (ROUGE-2)", "CNN/DM"),
    "cnn_dailymail_v002/rougeL": _m("CNN/DM (ROUGE-L)", "CNN/DM"),
    "cnn_dailymail_v002/rougeLsum": _m("CNN/DM (ROUGE-L)", "CNN/DM"),
    "squad_v010_allanswers/em": _m("SQuAD (EM)", "SQuAD"),
    "squad_v010_allanswers/f1": _m("SQuAD (F1)", "SQuAD"),
    "squad_v010_allanswers_span/em": _m("SQuAD (EM)", "SQuAD"),
    "squad_v010_allanswers_span/f1": _m("SQuAD (F1)", "SQuAD"),
    "squad_v010/em": _m("SQuAD (EM)", "SQuAD"),
    "squad_v010/f1": _m("SQuAD (F1)", "SQuAD"),
    "super_glue_average": _m("Average SuperGLUE Score"),
    "super_glue_boolq_v102/accuracy": _m("BoolQ (accuracy)"),
    "super_glue_cb_v102/mean_3class_f1": _m("CB (F1)", "CB"),
    "super_glue_cb_v102/accuracy": _m("CB (accuracy)", "CB"),
    "super_glue_copa_v102/accuracy": _m("CoPA"),
    "super_glue_multirc_v102/f1": _m("MultiRC (F1)", "MultiRC"),
    "super_glue_multirc_v102/exact_match": _m("MultiRC (EM)", "MultiRC"),
    "super_glue_record_v102/f1": _m("ReCoRD (F1)", "ReCoRD"),
    "super_glue_record_v102/em": _m("ReCoRD (EM)", "ReCoRD"),
    "super_glue_rte_v102/accuracy": _m("SuperGLUE RTE"),
    "super_glue_wic_v102/accuracy": _m("WiC"),
    "super_glue_wsc_v102_simple_eval/accuracy": _m("WSC"),
    "dpr_v001_simple/accuracy": _m("DPR"),
    "wmt_t2t_ende_v003/bleu": _m("WMT T2T En-De"),
    "wmt14_ende_v003/bleu": _m("WMT14 En-De"),
    "wmt15_enfr_v003/bleu": _m("WMT15 En-Fr"),
    "wmt16_enro_v003/bleu": _m("WMT16 En-Ro"),
}

# Benchmark averages: computed only when every member tag is a column (as T5 does).
AVERAGES = {
    "glue_average": [k for k in METRIC_NAMES if "glue" in k and "average" not in k and "super" not in k],
    "super_glue_average": [k for k in METRIC_NAMES if "super_glue" in k and "average" not in k],
}

_SKIP_WORDS = {"graph": "graphs", "pr_curves": "PR curves"}  # else the plugin name


@dataclass
class ReadStats:
    """What `read_scalars` saw besides the scalars: files, skipped summaries, warnings."""

    runs: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    skipped: collections.Counter = field(default_factory=collections.Counter)
    warnings: list[str] = field(default_factory=list)

    def skipped_line(self) -> str:
        """One line like '6 graphs, 60 histograms' (empty when nothing was skipped)."""
        return ", ".join(f"{n} {_SKIP_WORDS.get(k, k)}" for k, n in sorted(self.skipped.items()))


@dataclass
class MetricTable:
    """Columns (display name -> step -> value), in T5's order, with their tags and groups."""

    columns: dict[str, dict[int, float]]
    tags: dict[str, str]
    groups: dict[str, str]

    @property
    def steps(self) -> list[int]:
        """Every step that has a value in some column, ascending."""
        return sorted({s for col in self.columns.values() for s in col})


class Best(NamedTuple):
    step: int
    value: float
    mode: str  # "max" or "min"


# ---------------------------------------------------------------- reading


def _tf():
    from tensorboard.compat import tf  # real TensorFlow when installed, else TB's stub

    return tf


def _keep_higher(series: dict[int, float], step: int, value: float) -> None:
    old = series.get(step)
    if old is None or math.isnan(old) or value > old:
        series[step] = value


def _column(run: str, tag: str, seqio_summaries: bool) -> str | None:
    if seqio_summaries:  # T5: only `eval/<metric>` tags, named `<task>/<metric>`
        return f"{run}/{tag[len(_EVAL):]}" if tag.startswith(_EVAL) else None
    if tag.startswith(_EVAL) and tag.count("/") >= 2:  # mesh-TF T5's `eval/<task>/<metric>`
        tag = tag[len(_EVAL):]
    return tag if run == "." else f"{run}/{tag}"


def _is_event_file(path: str) -> bool:
    from tensorboard.backend.event_processing import io_wrapper

    return io_wrapper.IsSummaryEventsFile(path)


def find_runs(summary_dir: str, *, seqio_summaries: bool = False) -> dict[str, list[str]]:
    """Map run name -> sorted event files. Runs are subdirectories ('.' is the root);
    with `seqio_summaries` each direct subdirectory is a task and only files directly
    in it count. Raises T5CliError for a missing directory."""
    from tensorboard.backend.event_processing import io_wrapper

    tf = _tf()
    path = os.fspath(summary_dir)
    if not tf.io.gfile.exists(path):
        raise T5CliError(f"summary directory {path!r} does not exist; pass the directory that "
                         "holds the event files, e.g. $MODEL_DIR/inference_eval")
    if not tf.io.gfile.isdir(path):
        if _is_event_file(path) and not seqio_summaries:
            return {".": [path]}
        raise T5CliError(f"{path!r} is not a directory; pass the directory that holds the "
                         "event files (names containing 'tfevents')")
    runs: dict[str, list[str]] = {}
    if seqio_summaries:
        for name in sorted(tf.io.gfile.listdir(path)):
            sub = os.path.join(path, name.rstrip("/"))
            if tf.io.gfile.isdir(sub):
                files = [os.path.join(sub, f) for f in tf.io.gfile.listdir(sub)
                         if not f.endswith("/") and _is_event_file(f)]
                files = [f for f in files if not tf.io.gfile.isdir(f)]
                if files:
                    runs[name.rstrip("/")] = sorted(files)
        return runs
    for dir_path, file_paths in io_wrapper.ListRecursivelyViaWalking(path):
        files = sorted(f for f in file_paths if _is_event_file(f))
        if files:
            run = os.path.relpath(dir_path, path).replace(os.sep, "/")
            runs[run] = files
    return dict(sorted(runs.items(), key=lambda kv: (kv[0] != ".", kv[0])))


def _events(path: str, stats: ReadStats, warn: Callable[[str], None]) -> Iterator:
    """Yield the Event protos of one file (old-style values migrated), warning on damage."""
    from google.protobuf.message import DecodeError
    from tensorboard import data_compat
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.compat.proto import event_pb2

    def report(msg: str) -> None:
        stats.warnings.append(msg)
        warn(msg)

    tf = _tf()
    consumed = records = bad = 0
    try:
        for raw in event_file_loader.RawEventFileLoader(path).Load():
            consumed += len(raw) + 16  # TFRecord framing: length, 2 CRCs
            records += 1
            try:
                event = event_pb2.Event.FromString(raw)
            except DecodeError:
                bad += 1
                continue
            yield data_compat.migrate_event(event)
        size = tf.io.gfile.stat(path).length
    except tf.errors.OpError as e:
        why = (e.message or type(e).__name__).splitlines()[0]
        return report(f"{path}: cannot read ({why}); using the {records} records read before")
    if consumed < size:
        report(f"{path}: truncated or corrupt after record {records} (byte {consumed} of {size}); "
               f"using the {records} readable records")
    if bad:
        report(f"{path}: {bad} record(s) are not Event protos; skipped them")


def read_scalars(path, *, seqio_summaries: bool = False, tags: Iterable[str] | None = None,
                 stats: ReadStats | None = None,
                 warn: Callable[[str], None] | None = None) -> dict[str, dict[int, float]]:
    """Read every scalar under `path`: column name -> step -> value.

    Column names: without `seqio_summaries`, the tag for event files directly in
    `path` and `<run>/<tag>` for those in subdirectory `<run>`; a mesh-TF T5 tag
    `eval/<task>/<metric>` becomes `<task>/<metric>`. With `seqio_summaries`
    (T5's `--seqio_summaries`), each subdirectory is a task and only its
    `eval/<metric>` tags are read, as `<task>/<metric>`. A step logged twice keeps
    the higher value. `tags` are fnmatch globs on the column name. Non-scalar
    summaries are counted in `stats.skipped`; damaged files are read up to the
    damage and reported through `warn` (default: logging).
    """
    from tensorboard.util import tensor_util

    stats = stats if stats is not None else ReadStats()
    warn = warn or logger.warning
    globs = list(tags or ())
    out: dict[str, dict[int, float]] = {}
    for run, files in find_runs(path, seqio_summaries=seqio_summaries).items():
        plugin_of: dict[str, str] = {}  # TF2 writers put metadata on a tag's first value only
        stats.runs.append(run)
        for file in files:
            stats.files.append(file)
            for event in _events(file, stats, warn):
                if event.HasField("graph_def") or event.HasField("meta_graph_def"):
                    stats.skipped["graph"] += 1
                for value in event.summary.value:
                    plugin = value.metadata.plugin_data.plugin_name
                    if plugin:
                        plugin_of[value.tag] = plugin
                    else:
                        plugin = plugin_of.get(value.tag, "")
                    if plugin != "scalars" or value.WhichOneof("value") != "tensor":
                        stats.skipped[plugin or "non-scalar tensors"] += 1
                        continue
                    array = tensor_util.make_ndarray(value.tensor)
                    if array.size != 1 or array.dtype.kind not in "fiub":
                        stats.skipped["non-scalar tensors"] += 1
                        continue
                    name = _column(run, value.tag, seqio_summaries)
                    if name is None:
                        stats.skipped["scalars without eval/ prefix"] += 1
                    elif not globs or any(fnmatch.fnmatchcase(name, g) for g in globs):
                        _keep_higher(out.setdefault(name, {}), int(event.step), float(array.item()))
    return out


# ------------------------------------------------------------ the table


def build_table(scalars: Mapping[str, Mapping[int, float]],
                metric_names: Mapping[str, Metric] = METRIC_NAMES) -> MetricTable:
    """Name, average and order columns as T5's parse_tb does.

    Tags in `metric_names` get its display name and group, and come first in its
    order; other tags keep their name, form their own group and follow in read
    order. GLUE / SuperGLUE averages (mean over groups of the group means) are added
    at the steps where all their member tags have a value, when all are columns.
    """
    series = {k: dict(v) for k, v in scalars.items()}
    for avg, members in AVERAGES.items():
        if avg in series or avg not in metric_names or not all(m in series for m in members):
            continue
        groups: dict[str, list[str]] = collections.defaultdict(list)
        for m in members:
            groups[metric_names[m].group].append(m)
        values = {}
        for step in sorted(set.intersection(*(set(series[m]) for m in members))):
            means = [sum(series[m][step] for m in g) / len(g) for g in groups.values()]
            values[step] = sum(means) / len(means)
        if values:
            series[avg] = values
    order = {k: i for i, k in enumerate(metric_names)}
    keys = sorted(series, key=lambda k: (0, order[k]) if k in order else (1, 0))  # stable
    table = MetricTable({}, {}, {})
    for key in keys:
        name, group = metric_names.get(key, Metric(key, key))
        if name in table.columns:  # e.g. rougeL and rougeLsum share a display name
            name = group = key
        table.columns[name], table.tags[name], table.groups[name] = series[key], key, group
    return table


def select(table: MetricTable, globs: Iterable[str]) -> MetricTable:
    """Keep the columns whose display name or tag matches one of the fnmatch `globs`."""
    globs = list(globs)
    if not globs:
        return table
    names = [n for n in table.columns
             if any(fnmatch.fnmatchcase(n, g) or fnmatch.fnmatchcase(table.tags[n], g) for g in globs)]
    if not names:
        known = list(table.columns)
        shown = ", ".join(known[:6]) + (f", … ({len(known)} in all)" if len(known) > 6 else "")
        raise T5CliError(f"--tag {' '.join(globs)} matched no metric; the metrics are: {shown} "
                         "(globs use fnmatch: '*' matches '/', quote them in the shell)")
    return MetricTable({n: table.columns[n] for n in names}, {n: table.tags[n] for n in names},
                       {n: table.groups[n] for n in names})


def is_loss(name: str) -> bool:
    """Loss-like metrics ('loss' in the name) are best at their minimum."""
    return "loss" in name.lower()


def best_steps(table: MetricTable, *, loss_aware: bool = True) -> dict[str, Best]:
    """Best step and value per column, picked per group as T5 does.

    A group's best step is the first step where the mean of its members' values
    is highest (lowest for an all-loss group when `loss_aware`); each member
    reports its value at that step (NaN where it has none). `loss_aware=False`
    is T5's plain max, used for the CSV `max,` / `step,` rows.
    """
    members: dict[str, list[str]] = collections.defaultdict(list)
    for name, group in table.groups.items():
        members[group].append(name)
    steps = table.steps
    best: dict[str, Best] = {}
    for group, names in members.items():
        mode = "min" if loss_aware and all(is_loss(n) for n in names) else "max"
        sign = -1.0 if mode == "min" else 1.0
        best_step, best_score = steps[0] if steps else 0, -math.inf
        for step in steps:
            vals = [table.columns[n][step] for n in names if step in table.columns[n]]
            vals = [v for v in vals if not math.isnan(v)]
            score = sign * sum(vals) / len(vals) if vals else -math.inf
            if score > best_score:
                best_step, best_score = step, score
        for n in names:
            best[n] = Best(best_step, table.columns[n].get(best_step, math.nan), mode)
    return {n: best[n] for n in table.columns}


# ------------------------------------------------------------ rendering


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
    "best": {name: {"step", "value", "mode"}}} (NaN written as null)."""
    best = best_steps(table)
    doc = {
        "summary_dir": summary_dir,
        "metrics": {n: {"tag": table.tags[n], "steps": sorted(c), "values": [c[s] for s in sorted(c)]}
                    for n, c in table.columns.items()},
        "best": {n: _best_dict(b) for n, b in best.items()},
    }
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _best_dict(b: Best) -> dict:
    return {"step": b.step, "value": None if math.isnan(b.value) else b.value, "mode": b.mode}


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


def plot(table: MetricTable, png_path):
    """Draw one line chart per column into `png_path`; see `t5cli.plot_metrics`."""
    from t5cli import plot_metrics

    return plot_metrics.plot(table, png_path)


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


# ------------------------------------------------------------ entry point


def _write_text(path: str, text: str) -> None:
    remote = "://" in path  # gs://… through TensorFlow's gfile, as T5 did
    errors = (OSError, _tf().errors.OpError) if remote else OSError
    try:
        with (_tf().io.gfile.GFile(path, "w") if remote else open(path, "w", encoding="utf-8")) as f:
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
