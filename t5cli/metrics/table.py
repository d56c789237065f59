"""Metrics as a table: T5's display names and groups, averages, and each metric's best step."""

from __future__ import annotations

import collections
import fnmatch
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple

from t5cli.errors import T5CliError


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
