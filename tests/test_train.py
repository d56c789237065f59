"""`t5 train` / `t5 finetune` end to end on a tiny byte-level model, and its user errors."""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path

import pytest

from t5cli.errors import ConfigError, T5CliError, UnknownNameError

TASK = "number_words_en_de_999"
# byt5_tiny made tinier: one layer each side, 32-wide; learns the task's easy tokens fast
TINY = "{'emb_dim': 32, 'num_heads': 2, 'head_dim': 16, 'mlp_dim': 64, " \
       "'num_encoder_layers': 1, 'num_decoder_layers': 1}"
# as the run files bind it: the activation dtype comes from ACTIVATION_DTYPE (--dtype)
TINY_RUN = TINY[:-1] + ", 'dtype': %ACTIVATION_DTYPE}"
TINY_DICT = dict(emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_encoder_layers=1,
                 num_decoder_layers=1)
LENGTHS = "inputs=48,targets=48"
TAGS = {"loss", "loss_per_nonpadding_target_token", "accuracy", "learning_rate",
        "timing/steps_per_second", "timing/target_tokens_per_second"}


def train_args(model_dir, *extra, steps=40):
    return ["train", "--model", "byt5_tiny", "--task", TASK, "--model-dir", str(model_dir),
            "--steps", str(steps), "--batch-size", "16", "--feature-lengths", LENGTHS,
            "--gin", f"train.model_overrides = {TINY_RUN}",
            "--gin", "train.learning_rate_schedule = @constant_schedule()",
            "--gin", "constant_schedule.base_learning_rate = 0.01",
            "--gin", "train.checkpoint_period = 20", "--gin", "train.eval_period = 20",
            "--gin", "train.eval_steps = 2", "--gin", "train.log_period = 10", *extra]


def listing(path: Path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def run_cli(*args):
    """`t5 ARGS…` in this process for a module fixture (the `t5` fixture is per test)."""
    from t5cli.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code in (0, None), f"t5 {args[0]} exited with {exc.code}"


def csv_rows(text: str):
    return [line.split(",") for line in text.strip().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real `t5 train` run through the CLI (gin run file, flags, --gin overrides)."""
    import contextlib
    import io

    model_dir = tmp_path_factory.mktemp("run") / "model"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        run_cli(*train_args(model_dir))
    (model_dir.parent / "stderr.txt").write_text(stderr.getvalue())
    return model_dir


@pytest.fixture(scope="module")
def finetuned(trained, tmp_path_factory):
    """`t5 finetune` from the `trained` run's step 20 to step 30 (dropout off, so its
    compiled train step is the cached one of `trained`)."""
    model_dir = tmp_path_factory.mktemp("ft") / "model"
    args = train_args(model_dir, "--init-checkpoint", trained / "checkpoint_20", "--gin", "DROPOUT_RATE = 0.0",
                      steps=30)
    run_cli("finetune", *args[1:])
    return model_dir


def test_train_writes_the_model_dir(trained):
    names = set(os.listdir(trained))
    assert {"config.gin", "model-info.txt", "t5cli_run.json", "checkpoint_20", "checkpoint_40",
            "train", "training_eval"} <= names
    config = (trained / "config.gin").read_text()
    assert "train.total_steps = 40" in config or "TRAIN_STEPS = 40" in config
    assert "number_words_en_de_999" in config and "adafactor" in config
    info = (trained / "model-info.txt").read_text().splitlines()
    var_lines = [ln for ln in info if ln.startswith("Variable ")]
    assert var_lines and all(" size " in ln and " shape (" in ln and "partition spec" in ln
                             for ln in var_lines)
    assert any("vocab=384" in ln for ln in var_lines)
    record = json.loads((trained / "t5cli_run.json").read_text())
    assert record["task"] == TASK and record["model"] == "byt5_tiny"
    assert (trained / "training_eval" / TASK).is_dir()
    assert (trained / "inference_eval" / TASK).is_dir()


def test_progress_lines_match_the_summaries(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    line = re.compile(r"^train step (\d+)/40 \| loss ([\d.]+) \| ([\d.]+)/token \| ([\d.]+) steps/s "
                      r"\| ([\d,]+) tokens/s \| ETA (\S+)$")
    found = [m for m in map(line.match, (trained.parent / "stderr.txt").read_text().splitlines()) if m]
    assert [int(m.group(1)) for m in found] == [10, 20, 30, 40]
    acc = EventAccumulator(str(trained / "train"))
    acc.Reload()
    per_token = [e.value for e in acc.Scalars("loss_per_nonpadding_target_token")]
    for m, value in zip(found, per_token):
        assert float(m.group(3)) == pytest.approx(value, abs=1e-4)
        assert float(m.group(4)) > 0 and float(m.group(5).replace(",", "")) > 0
    assert found[0].group(6) != "-" and found[-1].group(6) == "-"  # ETA until the end


def test_train_events_have_the_tags_and_loss_falls(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trained / "train"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert TAGS <= tags, TAGS - tags
    loss = [e.value for e in acc.Scalars("loss_per_nonpadding_target_token")]
    assert [e.step for e in acc.Scalars("loss")] == [10, 20, 30, 40]
    assert loss[-1] < loss[0] * 0.8, loss
    ev = EventAccumulator(str(trained / "training_eval" / TASK))
    ev.Reload()
    assert {"loss", "accuracy"} <= set(ev.Tags()["scalars"])


def test_train_runs_inference_eval_every_eval_period_and_at_the_end(trained):
    from t5cli.metrics.events import read_scalars

    scalars = read_scalars(str(trained / "inference_eval"), seqio_summaries=True)
    for metric in ("sequence_accuracy", "chrf"):  # the task's seqio metrics
        values = scalars[f"{TASK}/{metric}"]
        assert sorted(values) == [20, 40], values
        assert all(0.0 <= v <= 100.0 for v in values.values())
    assert scalars[f"{TASK}/chrf"][40] > scalars[f"{TASK}/chrf"][20] > 0.0
    rows = (trained / "inference_eval" / f"{TASK}-000040.jsonl").read_text().splitlines()
    assert len(rows) > 50 and {"inputs", "prediction", "target"} <= set(json.loads(rows[0]))


def test_finetune_writes_every_output(finetuned, trained, t5):
    from t5cli.metrics.events import read_scalars

    assert {"config.gin", "model-info.txt", "t5cli_run.json", "checkpoint_30", "train",
            "training_eval", "inference_eval"} <= set(os.listdir(finetuned))
    assert not (finetuned / "checkpoint_20").exists()  # the initial checkpoint stays where it is
    config = (finetuned / "config.gin").read_text()  # gin's operative config, macros included
    config = re.sub(r"\\\n\s*", "", config)  # gin wraps long values onto a continuation line
    for line in (f"INITIAL_CHECKPOINT_PATH = '{trained / 'checkpoint_20'}'", "TRAIN_STEPS = 30",
                 f"MIXTURE_OR_TASK_NAME = '{TASK}'", "ACTIVATION_DTYPE = 'float32'",
                 "DROPOUT_RATE = 0.0", "train.total_steps = %TRAIN_STEPS",
                 "train.infer_eval_period = None"):
        assert line in config, line
    specs = [ln for ln in (finetuned / "model-info.txt").read_text().splitlines()
             if ln.startswith("Variable ")]
    assert len(specs) > 10 and all("partition spec (" in ln for ln in specs), specs[:2]
    record = json.loads((finetuned / "t5cli_run.json").read_text())
    assert record["t5cli_version"] and record["task"] == TASK and record["model"] == "byt5_tiny"
    assert {"builtin_tasks", "builtin_models"} <= {p["name"] for p in record["plugins"]}
    assert record["train"]["initial_step"] == 20
    assert record["train"]["initial_checkpoint_path"] == str(trained / "checkpoint_20")
    meta = json.loads((finetuned / "checkpoint_30" / "train_meta" / "metadata").read_text())
    assert meta["initial_step"] == 20

    train = read_scalars(str(finetuned / "train"))
    assert TAGS <= set(train), TAGS - set(train)
    assert all(list(train[tag]) == [30] for tag in TAGS)
    assert 0.0 < train["accuracy"][30] <= 1.0 and train["learning_rate"][30] == pytest.approx(0.01)
    assert train["timing/target_tokens_per_second"][30] > train["timing/steps_per_second"][30] > 0
    training_eval = read_scalars(str(finetuned / "training_eval" / TASK))
    assert list(training_eval["loss"]) == [30] and training_eval["loss"][30] > 0
    inference = read_scalars(str(finetuned / "inference_eval"), seqio_summaries=True)
    assert list(inference[f"{TASK}/sequence_accuracy"]) == [30]

    r = t5("parse-tb", finetuned / "train")
    assert r.exit_code == 0, r.err
    rows = csv_rows(r.out)
    column = rows[0].index("loss_per_nonpadding_target_token")
    assert rows[1][0] == "30"
    assert float(rows[1][column]) == pytest.approx(train["loss_per_nonpadding_target_token"][30], abs=1e-3)
    r = t5("parse-tb", finetuned / "inference_eval", "--seqio-summaries")
    assert r.exit_code == 0, r.err
    rows = csv_rows(r.out)
    column = rows[0].index(f"{TASK}/sequence_accuracy")
    assert rows[1][0] == "30"
    assert float(rows[1][column]) == pytest.approx(inference[f"{TASK}/sequence_accuracy"][30], abs=1e-3)


def test_rerun_when_done_changes_nothing(trained, t5):
    before = {p: (trained / p).stat().st_mtime for p in listing(trained) if "checkpoint_" in p}
    r = t5(*train_args(trained))
    assert r.exit_code == 0, r.err
    assert "nothing to do" in r.out
    after = {p: (trained / p).stat().st_mtime for p in listing(trained) if "checkpoint_" in p}
    assert before == after


# --- user errors: one clear line, non-zero exit, MODEL_DIR untouched ---------------------------

@pytest.mark.parametrize("extra,message", [
    (["--gin", "train.no_such_param = 1"], "doesn't have a parameter named 'no_such_param'"),
    (["--gin", "nonexistent_fn.x = 1"], "No configurable matching 'nonexistent_fn'"),
    (["--gin-file", "no_such_file.gin"], "gin file 'no_such_file.gin' not found"),
    (["--gin", "BATCH_SIZE = eight"], "cannot read the value 'eight': gin values are Python literals"),
    (["--gin", "BATCH_SIZE = [8"], "BATCH_SIZE = [8': a bracket or quote is not closed"),
    (["--model", "byt5_tinyy"], "unknown model 'byt5_tinyy'; did you mean 'byt5_tiny'"),
    (["--task", "number_words_en_dee"], "unknown task 'number_words_en_dee'"),
    (["--feature-lengths", "inputs=48"], "no length for feature 'targets'"),
    (["--init-checkpoint", "/nonexistent/ckpt"], "checkpoint '/nonexistent/ckpt' does not exist"),
    (["--task", "wmt_t2t_de_en_v003", "--tfds-data-dir", "EMPTY_DIR"],
     "On a machine with internet access run `tfds build wmt_t2t_translate --data_dir EMPTY_DIR`"),
    (["--dtype", "bfloat16", "--gin", f"train.model_overrides = {TINY}"],
     "--dtype has no effect: your train.model_overrides replaces the run file's"),
])
def test_user_errors_are_one_line_and_delete_nothing(tmp_path, t5, extra, message):
    model_dir = tmp_path / "existing"
    model_dir.mkdir()
    (model_dir / "notes.txt").write_text("keep me")
    (tmp_path / "empty").mkdir()
    extra = [a.replace("EMPTY_DIR", str(tmp_path / "empty")) for a in extra]
    message = message.replace("EMPTY_DIR", str(tmp_path / "empty"))
    r = t5(*train_args(model_dir), *extra)
    assert r.exit_code != 0
    assert message in r.err, r.err
    assert r.err.strip().count("\n") == 0, r.err  # one line
    assert listing(model_dir) == ["notes.txt"]


def test_required_flags_are_named(t5, tmp_path):
    r = t5("finetune", "--model", "byt5_tiny", "--task", TASK, "--model-dir", str(tmp_path / "m"),
           "--steps", "10", "--feature-lengths", LENGTHS)
    assert r.exit_code != 0 and "INITIAL_CHECKPOINT_PATH is not set: pass --init-checkpoint" in r.err
    r = t5("train", "--model", "byt5_tiny", "--task", TASK, "--steps", "10", "--feature-lengths", LENGTHS)
    assert r.exit_code != 0 and "MODEL_DIR is not set: pass --model-dir" in r.err
    r = t5("train", "--task", TASK, "--model-dir", str(tmp_path / "m"), "--steps", "10",
           "--feature-lengths", LENGTHS)
    assert r.exit_code != 0 and "MODEL_NAME is not set: pass --model NAME, a model gin file" in r.err
    assert not (tmp_path / "m").exists()


def test_finetune_from_mismatched_checkpoint_names_the_parameter(trained, tmp_path, t5):
    model_dir = tmp_path / "ft"
    model_dir.mkdir()
    (model_dir / "notes.txt").write_text("keep me")
    before = listing(trained)
    wider = TINY_RUN.replace("'mlp_dim': 64", "'mlp_dim': 96")
    r = t5("finetune", *train_args(model_dir, "--init-checkpoint", trained, "--gin",
                                   f"train.model_overrides = {wider}", steps=50)[1:])
    assert r.exit_code == 1 and r.err.strip().count("\n") == 0, r.err
    assert "does not match the model: parameter" in r.err and "mlp" in r.err, r.err
    assert "64" in r.err and "96" in r.err, r.err
    assert listing(model_dir) == ["notes.txt"] and listing(trained) == before


def test_damaged_checkpoint_is_one_line_and_deletes_nothing(trained, tmp_path, t5):
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(trained, model_dir)
    (model_dir / "checkpoint_40" / "params" / "_sharding").write_text("{not json")
    before = listing(model_dir)
    resume = t5(*train_args(model_dir, steps=60))
    evaluate = t5("eval", "--checkpoint", model_dir / "checkpoint_40", "--task", TASK,
                  "--feature-lengths", LENGTHS, "--output-dir", tmp_path / "eval")
    for r in (resume, evaluate):
        assert r.exit_code == 1 and r.err.strip().count("\n") == 0, r.err
        assert f"{model_dir / 'checkpoint_40' / 'params'}" in r.err
        assert "damaged or incomplete" in r.err and "move checkpoint_40 out of" in r.err, r.err
    assert listing(model_dir) == before


T5X_STYLE_GIN = """\
from __gin__ import dynamic_registration

import __main__ as train_script
from t5.data import mixtures
from t5x import utils
{imports}
include "t5x/examples/t5/byt5/small.gin"
include "t5x/configs/runs/finetune.gin"

MIXTURE_OR_TASK_NAME = "{task}"
TASK_FEATURE_LENGTHS = {{"inputs": 48, "targets": 48}}
TRAIN_STEPS = 30
DROPOUT_RATE = 0.0
USE_CACHED_TASKS = False
INITIAL_CHECKPOINT_PATH = "trained/checkpoint_20"

train_script.train.eval_period = 20
train_script.train.eval_steps = 2
utils.create_learning_rate_scheduler.factors = 'constant'
utils.create_learning_rate_scheduler.base_learning_rate = 0.01
"""
# the architecture of the `trained` fixture, in T5X's network.T5Config names
T5X_TINY = ["--gin.network.T5Config.emb_dim=32", "--gin.network.T5Config.num_heads=2",
            "--gin.network.T5Config.head_dim=16", "--gin.network.T5Config.mlp_dim=64",
            "--gin.network.T5Config.num_encoder_layers=1", "--gin.network.T5Config.num_decoder_layers=1",
            "--gin.network.T5Config.dtype='float32'"]


def test_finetune_with_a_t5x_gin_file(trained, tmp_path, t5, monkeypatch):
    """A T5X example gin file as T5X writes it (imports, T5X's include paths, flag
    spellings, relative paths) fine-tunes from a t5cli checkpoint."""
    monkeypatch.chdir(tmp_path)
    os.symlink(trained, tmp_path / "trained")
    (tmp_path / "wmt_finetune.gin").write_text(T5X_STYLE_GIN.format(imports="", task=TASK))
    args = ["finetune", "--gin_file=wmt_finetune.gin", "--gin.MODEL_DIR='ft'", "--gin.BATCH_SIZE=16",
            "--gin.EVALUATOR_NUM_EXAMPLES=8", *T5X_TINY]
    r = t5(*args)
    assert r.exit_code == 0, r.err
    assert (tmp_path / "ft" / "checkpoint_30").is_dir()
    record = json.loads((tmp_path / "ft" / "t5cli_run.json").read_text())
    assert record["train"]["initial_step"] == 20 and record["task"] == TASK
    assert "train_script.train.eval_period = 20" in (tmp_path / "ft" / "config.gin").read_text()

    # a T5X module t5cli does not emulate is named, with the fix, and nothing is written
    (tmp_path / "wmt_finetune.gin").write_text(T5X_STYLE_GIN.format(
        imports="from t5x.contrib.moe import models as moe_models\n", task=TASK))
    args[2] = "--gin.MODEL_DIR='ft2'"
    r = t5(*args)
    assert r.exit_code == 1 and r.err.strip().count("\n") == 0, r.err
    assert "'t5x.contrib.moe.models', a T5X module t5cli does not emulate" in r.err, r.err
    assert "delete that import" in r.err, r.err
    assert not (tmp_path / "ft2").exists()


def test_finetune_steps_count_from_the_initial_checkpoint(trained, tmp_path):
    from t5cli.runtime.train import train

    with pytest.raises(ConfigError, match="counts from that step, so pass --steps 30"):
        train(model_dir=str(tmp_path / "a"), total_steps=10, mixture_or_task_name=TASK,
              task_feature_lengths={"inputs": 48, "targets": 48}, batch_size=16,
              model_name="byt5_tiny", model_overrides=TINY_DICT, eval_period=None,
              initial_checkpoint_path=str(trained / "checkpoint_20"))
    assert not (tmp_path / "a").exists()


BROKEN_TASKS = textwrap.dedent('''
    """Tasks whose data cannot be read, each failing at another point of the pipeline."""
    import t5cli


    def _task(name, splits, dataset_fn, preprocessors=()):
        import seqio

        from builtin_tasks.metrics import sequence_accuracy

        vocab = seqio.ByteVocabulary()
        return seqio.Task(
            name, source=seqio.FunctionDataSource(dataset_fn, splits=splits),
            preprocessors=[*preprocessors, seqio.preprocessors.tokenize,
                           seqio.preprocessors.append_eos_after_trim],
            output_features={"inputs": seqio.Feature(vocab), "targets": seqio.Feature(vocab)},
            metric_fns=[sequence_accuracy])


    def _rows(split, shuffle_files=False, seed=None):
        import tensorflow as tf

        if split == "validation":
            raise ValueError("validation file missing")
        return tf.data.Dataset.from_tensor_slices({"inputs": ["seven"] * 8, "targets": ["sieben"] * 8})


    def _unreachable(split, shuffle_files=False, seed=None):
        raise ValueError("corpus server unreachable")


    def _to_number(dataset):  # fails on the first example, inside tf.data
        import tensorflow as tf

        return dataset.map(lambda ex: dict(ex, inputs=tf.strings.as_string(tf.strings.to_number(ex["inputs"]))))


    @t5cli.hookimpl
    def register_tasks(register):
        register("broken_source", lambda: _task("broken_source", ["train"], _unreachable))
        register("broken_rows", lambda: _task("broken_rows", ["train"], _rows, [_to_number]))
        register("broken_validation", lambda: _task("broken_validation", ["train", "validation"], _rows))
''')


@pytest.mark.parametrize("task,message", [  # a fresh MODEL_DIR for two, an existing one for one
    ("broken_source", "task 'broken_source': reading its 'train' split failed: ValueError: corpus server unreachable"),
    ("broken_rows", "task 'broken_rows': reading its 'train' split failed: InvalidArgumentError: Error in "
                    "user-defined function passed to MapDataset:N transformation: StringToNumberOp could "
                    "not correctly convert string: seven"),
    ("broken_validation", "task 'broken_validation': reading its 'validation' split failed: ValueError: "
                          "validation file missing"),
])
def test_unreadable_task_data_is_one_line_and_writes_no_records(make_user_dir, tmp_path, t5, task, message):
    user_dir = make_user_dir({"broken.py": BROKEN_TASKS})
    model_dir = tmp_path / "model"
    existing = task == "broken_rows"
    if existing:
        model_dir.mkdir()
        (model_dir / "notes.txt").write_text("keep me")
    r = t5("--user-dir", user_dir, *train_args(model_dir, "--task", task))
    assert r.exit_code == 1, r.err
    assert re.sub(r"MapDataset:\d+", "MapDataset:N", r.err.strip()) == f"error: {message}", r.err
    assert not (model_dir / "config.gin").exists()
    assert (listing(model_dir) == ["notes.txt"]) if existing else not model_dir.exists()


def test_missing_include_names_the_including_file(tmp_path, t5):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "run.gin").write_text("include 'base.gin'\nTRAIN_STEPS = 5\n")
    (configs / "base.gin").write_text("BATCH_SIZE = 8\ninclude 'sizes/tiny_base.gin'\n")
    r = t5(*train_args(tmp_path / "m"), "--gin-search-path", configs, "--gin-file", "run.gin")
    assert r.exit_code == 1 and r.err.strip().count("\n") == 0, r.err
    assert f"gin file '{configs / 'base.gin'}' includes 'sizes/tiny_base.gin', which was not found" in r.err
    r = t5(*train_args(tmp_path / "m"), "--gin-search-path", configs, "--gin-file", "runs.gin")
    assert r.exit_code == 1 and "gin file 'runs.gin' not found (searched: " in r.err, r.err
    assert not (tmp_path / "m").exists()


def test_keep_checkpoints_leaves_the_last_ones_and_infer_eval_can_be_off(tmp_path, t5):
    model_dir = tmp_path / "m"
    r = t5(*train_args(model_dir, "--gin", "train.checkpoint_period = 1", "--gin",
                       "train.keep_checkpoints = 2", "--gin", "train.eval_period = 2",
                       "--gin.train.infer_eval_period=0", steps=3))
    assert r.exit_code == 0, r.err
    assert sorted(p for p in os.listdir(model_dir) if p.startswith("checkpoint_")) == [
        "checkpoint_2", "checkpoint_3"]
    assert (model_dir / "training_eval" / TASK).is_dir()  # eval_period still on
    assert not (model_dir / "inference_eval").exists()


def test_finetune_from_hugging_face_export(trained, tmp_path, t5):
    from t5cli.metrics.events import read_scalars

    hf = tmp_path / "hf"
    r = t5("export", "--checkpoint", trained, "-o", hf)
    assert r.exit_code == 0, r.err
    model_dir = tmp_path / "ft"
    r = t5("finetune", *train_args(model_dir, "--init-checkpoint", hf, "--gin", "DROPOUT_RATE = 0.0",
                                   "--gin", "train.log_period = 1", "--gin.train.infer_eval_period=0",
                                   steps=2)[1:])
    assert r.exit_code == 0, r.err
    assert "checkpoint_2" in os.listdir(model_dir)
    record = json.loads((model_dir / "t5cli_run.json").read_text())
    assert record["train"]["initial_step"] == 0 and record["train"]["initial_checkpoint_path"] == str(hf)
    # it starts from the trained weights: its first loss is near where `trained` ended,
    # far below the loss of `trained` after 10 steps from scratch
    first = read_scalars(str(model_dir / "train"))["loss_per_nonpadding_target_token"][1]
    trained_loss = read_scalars(str(trained / "train"))["loss_per_nonpadding_target_token"]
    assert first < trained_loss[10] * 0.9, (first, trained_loss)


def test_bfloat16_activations_keep_float32_params(tmp_path, t5, monkeypatch):
    import jax

    import t5cli.runtime.train_state
    from t5cli.runtime.checkpoints import _tree_metadata
    from t5cli.metrics.events import read_scalars

    built = []
    build = t5cli.runtime.train_state.build_model
    monkeypatch.setattr(t5cli.runtime.train_state, "build_model",
                        lambda *a: built.append(build(*a)) or built[-1])
    model_dir = tmp_path / "m"
    r = t5(*train_args(model_dir, "--dtype", "bfloat16", "--gin", "train.log_period = 1",
                       "--gin", "train.eval_period = None", steps=2))
    assert r.exit_code == 0, r.err
    config = (model_dir / "config.gin").read_text()
    assert "ACTIVATION_DTYPE = 'bfloat16'" in config and "'dtype': %ACTIVATION_DTYPE" in config
    assert built and {m.config.dtype for m in built} == {"bfloat16"}
    dtypes = {str(x.dtype) for x in jax.tree_util.tree_leaves(_tree_metadata(model_dir / "checkpoint_2" / "params"))}
    assert dtypes == {"float32"}
    loss = read_scalars(str(model_dir / "train"))["loss"]
    assert sorted(loss) == [1, 2] and all(0 < v < 1e4 for v in loss.values())
    # eval and infer rebuild the model with the recorded ACTIVATION_DTYPE
    from t5cli.runtime.model_loading import load_model
    from t5cli.plugins import load_runtime

    assert load_model(load_runtime(), str(model_dir)).model.config.dtype == "bfloat16"

    # the CLI run leaves no gin bindings behind: a train() called next from Python in this
    # process takes its own defaults (float32) and records its own arguments
    from t5cli.runtime.model_loading import recorded_model_overrides
    from t5cli.runtime.train import train

    plain_dir = tmp_path / "plain"
    train(model_dir=str(plain_dir), mixture_or_task_name=TASK, model_name="byt5_tiny",
          model_overrides=TINY_DICT, task_feature_lengths={"inputs": 48, "targets": 48},
          total_steps=1, batch_size=4, checkpoint_period=None, eval_period=None,
          infer_eval_period=0)
    assert "ACTIVATION_DTYPE" not in (plain_dir / "config.gin").read_text()
    assert recorded_model_overrides(plain_dir) == TINY_DICT
    assert built[-1].config.dtype == "float32"


def test_periodic_actions_fire_on_their_periods_and_after_the_last_step():
    """The loop's actions, run by the real loop on fake steps that take one (fake) second."""
    import io

    import numpy as np

    from t5cli.runtime import partitioning, train_loop
    from t5cli.runtime.progress import Progress

    now = [0.0]
    fired = []

    class Record(train_loop.PeriodicAction):
        def __init__(self, name, every_steps, off_clock=False, seconds=0.0):
            self.name, self.every_steps, self.off_clock, self.seconds = name, every_steps, off_clock, seconds
            self.closed = False

        def __call__(self, step, state, last):
            fired.append((step, self.name, last))
            now[0] += self.seconds

        def close(self):
            self.closed = True

    def train_step(state, batch, dropout_rng):
        now[0] += 1.0
        p = float(state["params"]) + 1
        sums = {"loss_normalized": p, "z_loss": 0.0, "cross_ent_loss": p, "unweighted_loss": 6 * p,
                "weight_sum": 6.0, "total_tokens": 6.0, "correct": 0.0, "learning_rate": 0.1}
        return {"params": np.asarray(p)}, sums

    class Writer:
        written = {}

        def write(self, step, scalars):
            self.written[step] = dict(scalars)

        def close(self):
            pass

    clock, metrics, stream = train_loop.TrainingClock(lambda: now[0]), train_loop.StepMetrics(), io.StringIO()
    summaries = train_loop.WriteSummaries(4, Writer(), metrics, clock)
    progress = Progress(1, 7, every_steps=4, every_seconds=0, stream=stream, clock=clock)
    records = [Record("every 3", 3), Record("only last", None),
               Record("checkpoint every 2", 2, off_clock=True, seconds=10.0)]
    actions = [summaries, train_loop.ReportProgress(progress, metrics, summaries), *records]
    batches = iter(lambda: {"decoder_loss_weights": np.ones((2, 3), np.float32)}, None)
    # resumed at step 1, to TRAIN_STEPS=7
    step, state = train_loop.run(train_step, {"params": np.asarray(1.0)}, batches, step=1, total_steps=7,
                                 mesh=partitioning.create_mesh(1), dropout_rng=None, metrics=metrics,
                                 actions=actions, clock=clock)

    assert step == 7 and float(state["params"]) == 7.0
    # on-clock actions first, then the off-clock ones; every action runs after the last step
    assert fired == [(2, "checkpoint every 2", False), (3, "every 3", False), (4, "checkpoint every 2", False),
                     (6, "every 3", False), (6, "checkpoint every 2", False),
                     (7, "every 3", True), (7, "only last", True), (7, "checkpoint every 2", True)]
    assert all(r.closed for r in records)
    # summaries every 4 steps and at the end, over the steps since the last one; the 10 s of
    # each checkpoint are not training time
    assert sorted(Writer.written) == [4, 7] and summaries.losses == [3.0, 6.0]
    for summary in Writer.written.values():
        assert summary["timing/steps_per_second"] == 1.0
        assert summary["timing/target_tokens_per_second"] == 6.0
    assert summaries.last == Writer.written[7] and clock() == 6.0 and now[0] == 46.0
    # progress lines: step 5 (4 steps after the start) with that step's loss, and the end
    # with the summary just written
    lines = stream.getvalue().splitlines()
    assert [line.split(" | ")[:2] for line in lines] == [["train step 5/7", "loss 5.0000"],
                                                         ["train step 7/7", "loss 6.0000"]]
    assert all("1.00 steps/s | 6 tokens/s" in line for line in lines), lines


def test_errors_are_t5cli_errors():
    assert issubclass(UnknownNameError, T5CliError) and issubclass(ConfigError, T5CliError)


def test_seqio_packing_notice_is_dropped_and_other_warnings_kept(caplog):
    from absl import logging as absl_logging

    from t5cli.quiet import drop_seqio_noise

    drop_seqio_noise()
    drop_seqio_noise()  # idempotent
    with caplog.at_level("WARNING"):
        absl_logging.warning("Features not in `features_length` will be removed during packing: %s",
                             {"inputs_pretokenized"})
        absl_logging.warning("Using an uncached FunctionDataset for training is not recommended")
    assert [r.getMessage()[:13] for r in caplog.records] == ["Using an unca"]
