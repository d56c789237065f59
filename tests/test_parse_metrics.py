"""Tests for `t5 parse-metrics` / `t5 parse-tb` (t5cli.metrics.parse).

Expected values are read with TensorFlow's own `summary_iterator`, a different
reader than the implementation's TensorBoard loader, or written by the test with
seqio's loggers / `tf.summary`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from t5cli.commands.parse_metrics import command
from t5cli.errors import T5CliError
from t5cli.metrics import parse as pm

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
KNOWN_TB = ["tb-hf-trainer-marian-en-fr", "tb-katib-tf2-mnist", "tb-lingvo-mt-bleu",
            "tb-tfx-estimator-taxi", "tb-wandb-keras-tf1"]
TB_DIRS = sorted(set(KNOWN_TB) | ({p.name for p in SHARED.glob("tb-*") if p.is_dir()}
                                  if SHARED.is_dir() else set()))


def shared_dir(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"shared test data {path} is absent")
    return path


@pytest.fixture(scope="module")
def tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow

    return tensorflow


def run_cli(*args):
    result = CliRunner().invoke(command, [str(a) for a in args])
    return result


def independent_read(tf, root: Path) -> tuple[dict[str, dict[int, float]], int]:
    """Scalars under `root` via tf.compat.v1.train.summary_iterator, named like the
    implementation's default mode; also the number of non-scalar values seen."""
    expected: dict[str, dict[int, float]] = {}
    other = 0
    for dirpath, _, files in os.walk(root):
        run = os.path.relpath(dirpath, root).replace(os.sep, "/")
        plugin: dict[str, str] = {}
        for name in sorted(f for f in files if "tfevents" in f):
            for event in tf.compat.v1.train.summary_iterator(os.path.join(dirpath, name)):
                for v in event.summary.value:
                    if v.metadata.plugin_data.plugin_name:
                        plugin[v.tag] = v.metadata.plugin_data.plugin_name
                    if v.HasField("simple_value"):
                        value = float(v.simple_value)
                    elif v.HasField("tensor") and plugin.get(v.tag) == "scalars":
                        value = float(tf.make_ndarray(v.tensor).item())
                    else:
                        other += 1
                        continue
                    tag = v.tag
                    if tag.startswith("eval/") and tag.count("/") >= 2:
                        tag = tag[len("eval/"):]
                    col = tag if run == "." else f"{run}/{tag}"
                    series = expected.setdefault(col, {})
                    series[event.step] = max(value, series.get(event.step, -math.inf))
    return expected, other


# ------------------------------------------------------- real event files

# Facts from each folder's README, checked on top of the independent reader.
README_FACTS = {
    "tb-lingvo-mt-bleu": dict(n_cols=7, series={"bleu/dev": (360, (1500, 0.11201), (185200, 0.285217))},
                              skipped=""),
    "tb-katib-tf2-mnist": dict(n_cols=4, series={
        "logs/train/loss": (10, (0, 0.2048), (9, 0.0360666)),
        "logs/train/accuracy": (10, (0, 0.9404), (9, 0.98963)),
        "logs/test/loss": (10, (0, 0.0755185), (9, 0.0559284)),
        "logs/test/accuracy": (10, (0, 0.9763), (9, 0.98335))}, skipped=""),
    "tb-hf-trainer-marian-en-fr": dict(n_cols=15, series={
        "runs/Dec03_02-30-26_bdfb9d7ec860/eval/bleu": (2, (0, 39.2666), (17736, 52.9021)),
        "runs/Dec03_02-30-26_bdfb9d7ec860/train/loss": (35, (500, 1.3864), (17500, 0.8134)),
        # README: 37 points; step 17736 is logged in both files, so 36 distinct steps.
        "runs/Dec03_02-30-26_bdfb9d7ec860/train/epoch": (36, (500, 0.0846), (17736, 3.0))},
        skipped="2 text"),
    "tb-tfx-estimator-taxi": dict(n_cols=20, series={
        "Format-Serving/loss": (10, (1, 0.428026), (901, 0.665362)),
        "Format-Serving/global_step/sec": (9, (101, 127.83), (901, 441.249)),
        "Format-Serving/eval_chicago-taxi-eval/accuracy": (2, (999, 0.777), (1000, 0.77735))},
        skipped="6 graphs, 60 histograms, 2 non-scalar tensors"),
    "tb-wandb-keras-tf1": dict(n_cols=6, series={
        "batch_loss": (17, (0, 3.91358), (16, 2.93251e-05)),
        "epoch_val_acc": (17, (0, 1.0), (16, 1.0))}, skipped="2 graphs"),
}


@pytest.mark.parametrize("name", TB_DIRS)
def test_real_event_files_match_independent_reader(tf, name):
    root = shared_dir(name)
    expected, _ = independent_read(tf, root)
    stats = pm.ReadStats()
    got = pm.read_scalars(root, stats=stats)
    assert got == expected  # same tags, steps and (float32) values, exactly
    assert list(got)  # every folder has scalars
    assert not stats.warnings
    facts = README_FACTS.get(name)
    if facts:
        assert len(got) == facts["n_cols"]
        for col, (n, first, last) in facts["series"].items():
            steps = sorted(got[col])
            assert len(steps) == n
            assert (steps[0], got[col][steps[0]]) == (first[0], pytest.approx(first[1], rel=1e-3))
            assert (steps[-1], got[col][steps[-1]]) == (last[0], pytest.approx(last[1], rel=1e-3))
        assert stats.skipped_line() == facts["skipped"]


@pytest.mark.parametrize("name", TB_DIRS)
def test_real_event_files_csv_layout(tf, name):
    root = shared_dir(name)
    expected, _ = independent_read(tf, root)
    out = io.StringIO()
    text = pm.parse_metrics(root, fmt="csv", stream=out)
    assert out.getvalue() == text
    rows = list(csv.reader(io.StringIO(text)))
    header, body, max_row, step_row = rows[0], rows[1:-2], rows[-2], rows[-1]
    assert header[0] == "step" and sorted(header[1:]) == sorted(expected)
    steps = sorted({s for series in expected.values() for s in series})
    assert [int(r[0]) for r in body] == steps
    for row in body:
        step = int(row[0])
        for col, cell in zip(header[1:], row[1:]):
            want = expected[col].get(step)
            assert cell == ("" if want is None else f"{want:.3f}")
    # No T5 metric groups here: each column's max and the first step reaching it.
    assert max_row[0] == "max" and step_row[0] == "step"
    for col, mx, st in zip(header[1:], max_row[1:], step_row[1:]):
        series = expected[col]
        best = max(series.values())
        assert mx == f"{best:.3f}"
        assert int(st) == min(s for s, v in series.items() if v == best)


def test_real_best_and_tag_filter():
    root = shared_dir("tb-lingvo-mt-bleu")
    result = run_cli(root, "--tag", "bleu/dev", "--best", "--format", "json")
    assert result.exit_code == 0, result.output
    best = json.loads(result.stdout)
    assert list(best) == ["bleu/dev"]  # README: best 0.28823 at step 102600
    assert best["bleu/dev"]["step"] == 102600 and best["bleu/dev"]["mode"] == "max"
    assert best["bleu/dev"]["value"] == pytest.approx(0.28823, rel=1e-4)


def test_real_best_uses_min_for_loss(tf):
    root = shared_dir("tb-katib-tf2-mnist")
    expected, _ = independent_read(tf, root)
    result = run_cli(root, "--best", "--format", "csv", "--tag", "logs/test/*")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["metric"] for r in rows] == ["logs/test/loss", "logs/test/accuracy"]
    loss, acc = expected["logs/test/loss"], expected["logs/test/accuracy"]
    assert rows[0]["mode"] == "min" and int(rows[0]["step"]) == min(loss, key=loss.get)
    assert float(rows[0]["value"]) == pytest.approx(min(loss.values()), rel=1e-5)
    assert rows[1]["mode"] == "max" and int(rows[1]["step"]) == max(acc, key=acc.get)


def test_real_table_and_skipped_note():
    root = shared_dir("tb-tfx-estimator-taxi")
    result = run_cli(root, "--format", "table", "--tag", "*eval*/accuracy", "--tag", "*eval*/auc")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["step", "Format-Serving/eval_chicago-taxi-eval/accuracy",
                                "Format-Serving/eval_chicago-taxi-eval/auc"]
    assert lines[2].split()[:2] == ["999", "0.777"]
    assert any(line.startswith("best step") and line.split()[2:] == ["1000", "999"] for line in lines)
    assert result.stderr.strip().splitlines() == [
        "note: skipped 6 graphs, 60 histograms, 2 non-scalar tensors"]


# ------------------------------------------------------- seqio-written files


def seqio_log(logger, task, step, metrics):
    import seqio

    logger(task_name=task, step=step, metrics={k: seqio.metrics.Scalar(v) for k, v in metrics.items()},
           dataset=None, inferences=None, targets=None)


@pytest.fixture(scope="module")
def seqio_dir(tmp_path_factory, tf):
    seqio = pytest.importorskip("seqio")
    root = tmp_path_factory.mktemp("model") / "inference_eval"
    v2 = seqio.TensorBoardLogger(str(root))  # TF2 tf.summary.scalar: scalars-plugin tensors
    seqio_log(v2, "task_a", 100, {"accuracy": 50.0, "bleu": 10.25})
    seqio_log(v2, "task_a", 200, {"accuracy": 60.5, "bleu": 20.0})
    seqio_log(v2, "task_a", 200, {"accuracy": 55.25, "bleu": 19.0})  # same step again, lower
    seqio_log(v2, "task_a", 300, {"accuracy": 55.0, "bleu": 20.5})
    again = seqio.TensorBoardLogger(str(root))  # a second event file, as after a restart
    seqio_log(again, "task_a", 200, {"accuracy": 58.0, "bleu": 21.0})
    v1 = seqio.TensorBoardLoggerV1(str(root))  # TF1 simple_value
    seqio_log(v1, "task_b", 100, {"f1": 0.5})
    seqio_log(v1, "task_b", 300, {"f1": 0.75})
    with tf.summary.create_file_writer(str(root / "task_a")).as_default():
        tf.summary.scalar("loss", 3.0, step=100)  # not an eval/ tag: T5 drops it
        tf.summary.text("eval/predictions", "hello", step=100)
    (root / "results.csv").write_text("not a task dir\n")
    return root


SEQIO_CSV = """\
step,task_a/accuracy,task_a/bleu,task_b/f1
100,50.000,10.250,0.500
200,60.500,21.000,
300,55.000,20.500,0.750
max,60.500,21.000,0.750
step,200,200,300
"""


def test_seqio_csv_exact(seqio_dir, tmp_path):
    out = tmp_path / "results.csv"
    result = run_cli(f"--summary_dir={seqio_dir}", "--seqio_summaries", f"--out_file={out}")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert out.read_text() == SEQIO_CSV
    assert f"wrote {out} (3 steps x 3 metrics)" in result.stderr
    assert "1 text" in result.stderr and "1 scalars without eval/ prefix" in result.stderr


def test_seqio_positional_and_dashes_to_stdout(seqio_dir):
    result = run_cli(seqio_dir, "--seqio-summaries")  # not a terminal: csv
    assert result.exit_code == 0, result.output
    assert result.stdout == SEQIO_CSV


def test_seqio_read_scalars_values(seqio_dir):
    got = pm.read_scalars(seqio_dir, seqio_summaries=True, tags=["task_a/*"])
    assert got == {"task_a/accuracy": {100: 50.0, 200: 60.5, 300: 55.0},
                   "task_a/bleu": {100: 10.25, 200: 21.0, 300: 20.5}}


def test_without_seqio_flag_runs_are_subdirectories(seqio_dir):
    got = pm.read_scalars(seqio_dir)
    assert sorted(got) == ["task_a/eval/accuracy", "task_a/eval/bleu", "task_a/loss", "task_b/eval/f1"]
    assert got["task_a/loss"] == {100: 3.0}
    result = run_cli(seqio_dir, "--tag", "*/eval/*")
    assert result.exit_code == 0, result.output
    assert "hint: these look like seqio task directories; add --seqio-summaries" in result.stderr


def test_seqio_json(seqio_dir, tmp_path):
    out = tmp_path / "r.json"
    result = run_cli(seqio_dir, "--seqio-summaries", "--out-file", out)  # .json: json format
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["metrics"]["task_b/f1"] == {"tag": "task_b/f1", "steps": [100, 300], "values": [0.5, 0.75]}
    assert doc["metrics"]["task_a/bleu"]["values"] == [10.25, 21.0, 20.5]
    assert doc["best"]["task_a/accuracy"] == {"step": 200, "value": 60.5, "mode": "max"}


def test_json_writes_nan_and_infinity_as_null():
    """A diverged run logs NaN/inf losses; the JSON stays valid JSON."""
    from t5cli.metrics.render import to_json
    from t5cli.metrics.table import build_table

    table = build_table({"loss": {1: 2.5, 2: math.nan, 3: math.inf}})
    doc = json.loads(to_json(table))
    assert doc["metrics"]["loss"]["values"] == [2.5, None, None]
    assert doc["best"]["loss"] == {"step": 1, "value": 2.5, "mode": "min"}


def test_seqio_table_fits_width(seqio_dir):
    table = pm.build_table(pm.read_scalars(seqio_dir, seqio_summaries=True))
    text = pm.to_table(table, width=40)
    assert all(len(line) <= 40 for line in text.splitlines())
    headers = [line for line in text.splitlines() if line.startswith("step ")]
    assert len(headers) >= 2  # split into blocks, step column repeated
    assert "60.5" in text and "best step" in text
    wide = pm.to_table(table, width=10_000).splitlines()
    assert [line for line in wide if line.startswith("step ")] == [wide[0]]


def test_plot_one_axes_per_metric(seqio_dir, tmp_path):
    from t5cli.metrics.plot import plot

    png = tmp_path / "curves.png"
    result = run_cli(seqio_dir, "--seqio-summaries", "--plot", png, "--tag", "task_a/*")
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pm.select(pm.build_table(pm.read_scalars(seqio_dir, seqio_summaries=True)), ["task_a/*"])
    fig = plot(table, tmp_path / "again.png")
    assert [ax.get_title().replace("\n", "") for ax in fig.axes] == ["task_a/accuracy", "task_a/bleu"]
    assert {ax.get_xlabel() for ax in fig.axes} == {"step"}
    assert [ax.get_ylabel() for ax in fig.axes] == ["accuracy", "bleu"]
    assert list(fig.axes[1].lines[0].get_xdata()) == [100, 200, 300]


# ------------------------------------------------------- T5 naming and GLUE

GLUE = {  # task -> metric -> (value at step 10, value at step 20)
    "glue_cola_v002": {"matthews_corrcoef": (80, 88)},
    "glue_sst2_v002": {"accuracy": (80, 80)},
    "glue_mrpc_v002": {"f1": (90, 82), "accuracy": (70, 82)},
    "glue_stsb_v002": {"pearson_corrcoef": (80, 80), "spearman_corrcoef": (80, 80)},
    "glue_qqp_v002": {"f1": (80, 80), "accuracy": (80, 80)},
    "glue_mnli_matched_v002": {"accuracy": (85, 88)},
    "glue_mnli_mismatched_v002": {"accuracy": (85, 78)},
    "glue_qnli_v002": {"accuracy": (80, 80)},
    "glue_rte_v002": {"accuracy": (80, 80)},
    "my_task": {"accuracy": (1, 2)},
}

# 8 groups: step 10 group means 80,80,80,80,80,85,80,80 -> 80.625;
# step 20: 88,80,82,80,80,83,80,80 -> 81.625. MRPC's best mean is at 20, MNLI's at 10.
GLUE_CSV = """\
step,Average GLUE Score,CoLA,SST-2,MRPC (F1),MRPC (accuracy),STSB (Pearson),STSB (Spearman),\
QQP (F1),QQP (accuracy),MNLIm,MNLImm,QNLI,GLUE RTE,my_task/accuracy
10,80.625,80.000,80.000,90.000,70.000,80.000,80.000,80.000,80.000,85.000,85.000,80.000,80.000,1.000
20,81.625,88.000,80.000,82.000,82.000,80.000,80.000,80.000,80.000,88.000,78.000,80.000,80.000,2.000
max,81.625,88.000,80.000,82.000,82.000,80.000,80.000,80.000,80.000,85.000,85.000,80.000,80.000,2.000
step,20,20,10,20,20,10,10,10,10,10,10,10,10,20
"""


def test_glue_average_and_t5_names(tmp_path, tf):
    seqio = pytest.importorskip("seqio")
    logger = seqio.TensorBoardLogger(str(tmp_path))
    for i, step in enumerate((10, 20)):
        for task in reversed(list(GLUE)):  # write order must not matter
            seqio_log(logger, task, step, {m: v[i] for m, v in GLUE[task].items()})
    result = run_cli(tmp_path, "--seqio-summaries", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout == GLUE_CSV


def test_glue_average_needs_every_member():
    scalars = {f"{t}/{m}": {10: float(v[0])} for t, ms in GLUE.items() for m, v in ms.items()}
    assert "Average GLUE Score" in pm.build_table(scalars).columns
    del scalars["glue_rte_v002/accuracy"]
    table = pm.build_table(scalars)
    assert "Average GLUE Score" not in table.columns and "CoLA" in table.columns
    assert pm.select(table, ["glue_cola*"]).tags == {"CoLA": "glue_cola_v002/matthews_corrcoef"}


def test_super_glue_average():
    keys = ["super_glue_boolq_v102/accuracy", "super_glue_cb_v102/mean_3class_f1",
            "super_glue_cb_v102/accuracy", "super_glue_copa_v102/accuracy",
            "super_glue_multirc_v102/f1", "super_glue_multirc_v102/exact_match",
            "super_glue_record_v102/f1", "super_glue_record_v102/em", "super_glue_rte_v102/accuracy",
            "super_glue_wic_v102/accuracy", "super_glue_wsc_v102_simple_eval/accuracy"]
    scalars = {k: {1: 70.0, 2: 70.0} for k in keys}
    scalars["super_glue_boolq_v102/accuracy"][2] = 78.0  # 8 groups: (78 + 7 * 70) / 8 = 71
    scalars["super_glue_cb_v102/mean_3class_f1"][2] = 80.0  # CB group: (80 + 60) / 2 = 70
    scalars["super_glue_cb_v102/accuracy"][2] = 60.0
    table = pm.build_table(scalars)
    assert list(table.columns)[:3] == ["Average SuperGLUE Score", "BoolQ (accuracy)", "CB (F1)"]
    assert table.columns["Average SuperGLUE Score"] == {1: 70.0, 2: 71.0}
    assert "Average GLUE Score" not in table.columns
    # CB's group mean is 70 at both steps, so CB (F1) reports step 1, not its own max (80 at 2).
    assert pm.to_csv(table).splitlines()[-2:] == ["max,71.000,78.000" + ",70.000" * 10,
                                                  "step,2,2" + ",1" * 10]


def test_mesh_tf_eval_tags_and_duplicate_steps(tmp_path, tf):
    # mesh-TF T5 wrote `eval/<task>/<metric>` into one directory (no --seqio_summaries).
    with tf.summary.create_file_writer(str(tmp_path)).as_default():
        tf.summary.scalar("eval/glue_sst2_v002/accuracy", 90.0, step=5)
        tf.summary.scalar("eval/glue_sst2_v002/accuracy", 92.0, step=5)
        tf.summary.scalar("eval/glue_sst2_v002/accuracy", 91.0, step=5)
        tf.summary.histogram("weights", [1.0, 2.0], step=5)
    result = run_cli(tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout == "step,SST-2\n5,92.000\nmax,92.000\nstep,5\n"
    assert result.stderr.strip() == "note: skipped 1 histograms"


# ------------------------------------------------------- damaged and bad input


def write_steps(tf, directory: Path, n: int) -> Path:
    with tf.summary.create_file_writer(str(directory)).as_default():
        for step in range(n):
            tf.summary.scalar("eval/bleu", float(step), step=step)
    (path,) = directory.glob("*tfevents*")
    return path


def test_truncated_file_warns_and_uses_readable_records(tmp_path, tf):
    path = write_steps(tf, tmp_path, 5)
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    result = run_cli(tmp_path, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["eval/bleu"]["steps"] == [0, 1, 2, 3]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"warning: {path}: truncated or corrupt after record 5")
    assert "using the 5 readable records" in line  # file_version + 4 summaries


def test_corrupt_record_warns(tmp_path, tf):
    path = write_steps(tf, tmp_path, 6)
    data = bytearray(path.read_bytes())
    data[len(data) * 2 // 3] ^= 0xFF  # break a CRC in the middle
    path.write_bytes(bytes(data))
    result = run_cli(tmp_path, "--format", "csv")
    assert result.exit_code == 0, result.output
    steps = [int(r.split(",")[0]) for r in result.stdout.splitlines()[1:-2]]
    assert steps and steps == list(range(len(steps))) and len(steps) < 6
    assert result.stderr.count("\n") == 1 and "truncated or corrupt" in result.stderr


def assert_user_error(result, *needles):
    assert result.exit_code != 0
    assert isinstance(result.exception, T5CliError), repr(result.exception)
    message = str(result.exception)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_missing_directory(tmp_path):
    assert_user_error(run_cli(tmp_path / "nope"), "does not exist", "nope")


def test_no_directory_given():
    assert_user_error(run_cli(), "no summary directory", "--summary-dir")


def test_directory_without_event_files(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    assert_user_error(run_cli(tmp_path), "no TensorBoard event files", str(tmp_path))


def test_seqio_mode_without_task_directories(tmp_path, tf):
    write_steps(tf, tmp_path, 2)
    assert_user_error(run_cli(tmp_path, "--seqio-summaries"), "task subdirectory", "drop the flag")


def test_only_non_scalar_summaries(tmp_path, tf):
    with tf.summary.create_file_writer(str(tmp_path / "run")).as_default():
        tf.summary.histogram("h", [1.0, 2.0, 3.0], step=1)
        tf.summary.text("t", "hello", step=1)
        tf.summary.image("i", tf.zeros([1, 2, 2, 1]), step=1)
    assert_user_error(run_cli(tmp_path), "no scalar summaries", "1 histograms", "1 images", "1 text")


def test_tag_matching_nothing(seqio_dir):
    assert_user_error(run_cli(seqio_dir, "--seqio-summaries", "--tag", "*rouge*"),
                      "matched no metric", "task_a/accuracy")


def test_unwritable_outputs(seqio_dir, tmp_path):
    missing = tmp_path / "no" / "dir"
    assert_user_error(run_cli(seqio_dir, "--seqio-summaries", "--out-file", missing / "r.csv"),
                      "cannot write --out-file")
    assert_user_error(run_cli(seqio_dir, "--seqio-summaries", "--plot", missing / "p.png"),
                      "cannot write --plot")
    assert_user_error(run_cli(seqio_dir, "--seqio-summaries", "--plot", tmp_path / "p.xyz"),
                      "unknown image type")


def test_resolve_format():
    assert pm.resolve_format(None, None, isatty=True) == "table"
    assert pm.resolve_format(None, None, isatty=False) == "csv"
    assert pm.resolve_format(None, "results.csv", isatty=True) == "csv"
    assert pm.resolve_format(None, "results.JSON", isatty=True) == "json"
    assert pm.resolve_format("table", "results.csv", isatty=False) == "table"


def test_command_module_imports_only_click():
    code = ("import sys, t5cli.commands.parse_metrics as m; assert m.command.name == 'parse-metrics'; "
            "print(sorted(x for x in ('tensorflow', 'tensorboard', 'matplotlib', 'jax', 'seqio', "
            "'numpy') if x in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]"


def test_help_lists_both_spellings():
    result = run_cli("--help")
    assert result.exit_code == 0
    for opt in ("--summary-dir", "--summary_dir", "--seqio-summaries", "--seqio_summaries",
                "--out-file", "--out_file", "--format", "--plot", "--tag", "--best", "'loss'"):
        assert opt in result.output


# ------------------------------------------------------- registered in the `t5` group


def test_t5_group_parse_tb_alias_with_t5_spellings(seqio_dir, tmp_path):
    from t5cli.cli import cli

    out = tmp_path / "results.csv"
    for name in ("parse-tb", "parse-metrics"):
        result = CliRunner().invoke(cli, [name, f"--summary_dir={seqio_dir}", "--seqio_summaries",
                                          f"--out_file={out}"])
        assert result.exit_code == 0, result.output
        assert out.read_text() == SEQIO_CSV and result.stdout == ""
    result = CliRunner().invoke(cli, ["parse-tb", str(tmp_path / "missing")])
    assert isinstance(result.exception, T5CliError)


def test_t5_entry_point_parse_tb_plot_and_error(t5, tmp_path):
    """Through the real `t5` entry point: the alias, --plot, and a one-line error."""
    data = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tb-katib-tf2-mnist"
    if not data.is_dir():
        pytest.skip("shared data absent")
    png = tmp_path / "out.png"
    r = t5("parse-tb", data, "--plot", png, "--format", "csv")
    assert r.exit_code == 0, r.err
    assert r.out.startswith("step,") and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = t5("parse-metrics", tmp_path / "missing")
    assert r.exit_code == 1 and len(r.err.strip().splitlines()) == 1
    assert "does not exist" in r.err and "Traceback" not in r.err
