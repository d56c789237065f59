"""`t5 train` / `t5 finetune` end to end on a tiny byte-level model, and its user errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from t5cli.errors import CheckpointError, ConfigError, T5CliError, UnknownNameError

TASK = "number_words_en_de_999"
# byt5_tiny made tinier: one layer each side, 32-wide; learns the task's easy tokens fast
TINY = "{'emb_dim': 32, 'num_heads': 2, 'head_dim': 16, 'mlp_dim': 64, " \
       "'num_encoder_layers': 1, 'num_decoder_layers': 1}"
TINY_DICT = dict(emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_encoder_layers=1,
                 num_decoder_layers=1)
LENGTHS = "inputs=48,targets=48"
TAGS = {"loss", "loss_per_nonpadding_target_token", "accuracy", "learning_rate",
        "timing/steps_per_second", "timing/target_tokens_per_second"}


@pytest.fixture(scope="module", autouse=True)
def jax_compilation_cache(tmp_path_factory):
    """Runs of the same shapes reuse compiled steps (each train() call builds its own jit)."""
    import jax

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    old = {n: getattr(jax.config, n) for n in names}
    jax.config.update(names[0], str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update(names[1], 0)
    jax.config.update(names[2], -1)
    yield
    for n, v in old.items():
        jax.config.update(n, v)


def train_args(model_dir, *extra, steps=40):
    return ["train", "--model", "byt5_tiny", "--task", TASK, "--model-dir", str(model_dir),
            "--steps", str(steps), "--batch-size", "16", "--feature-lengths", LENGTHS,
            "--gin", f"train.model_overrides = {TINY}",
            "--gin", "train.learning_rate_schedule = @constant_schedule()",
            "--gin", "constant_schedule.base_learning_rate = 0.01",
            "--gin", "train.checkpoint_period = 20", "--gin", "train.eval_period = 20",
            "--gin", "train.eval_steps = 2", "--gin", "train.log_period = 10", *extra]


def listing(path: Path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real `t5 train` run through the CLI (gin run file, flags, --gin overrides)."""
    from t5cli.cli import main

    model_dir = tmp_path_factory.mktemp("run") / "model"
    try:
        main(train_args(model_dir))
    except SystemExit as exc:
        assert exc.code in (0, None), f"t5 train exited with {exc.code}"
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
    (["--model", "byt5_tinyy"], "unknown model 'byt5_tinyy'; did you mean 'byt5_tiny'"),
    (["--task", "number_words_en_dee"], "unknown task 'number_words_en_dee'"),
    (["--feature-lengths", "inputs=48"], "no length for feature 'targets'"),
    (["--init-checkpoint", "/nonexistent/ckpt"], "checkpoint '/nonexistent/ckpt' does not exist"),
])
def test_user_errors_are_one_line_and_delete_nothing(tmp_path, t5, extra, message):
    model_dir = tmp_path / "existing"
    model_dir.mkdir()
    (model_dir / "notes.txt").write_text("keep me")
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
    assert not (tmp_path / "m").exists()


def test_finetune_from_mismatched_checkpoint_names_the_parameter(trained, tmp_path):
    from t5cli.train import train

    model_dir = tmp_path / "ft"
    model_dir.mkdir()
    (model_dir / "notes.txt").write_text("keep me")
    before = listing(trained)
    wider = dict(TINY_DICT, mlp_dim=96)
    with pytest.raises(CheckpointError) as info:
        train(model_dir=str(model_dir), mixture_or_task_name=TASK,
              task_feature_lengths={"inputs": 48, "targets": 48}, total_steps=50, batch_size=16,
              model_name="byt5_tiny", model_overrides=wider, initial_checkpoint_path=str(trained))
    msg = str(info.value)
    assert "mlp" in msg and "has shape" in msg and "64" in msg and "96" in msg, msg
    assert listing(model_dir) == ["notes.txt"] and listing(trained) == before


def test_finetune_from_checkpoint_counts_steps_from_it(trained, tmp_path):
    from t5cli.train import train

    from t5cli.optim import constant_schedule

    # the same step as the `trained` run (dropout off, lr 0.01): its compilation is cached
    kwargs = dict(mixture_or_task_name=TASK, task_feature_lengths={"inputs": 48, "targets": 48},
                  batch_size=16, model_name="byt5_tiny", model_overrides=TINY_DICT, dropout_rate=0.0,
                  learning_rate_schedule=constant_schedule(0.01),
                  initial_checkpoint_path=str(trained / "checkpoint_20"), eval_period=None,
                  log_period=2)
    with pytest.raises(ConfigError, match="counts from that step, so pass --steps 30"):
        train(model_dir=str(tmp_path / "a"), total_steps=10, **kwargs)
    assert not (tmp_path / "a").exists()
    result = train(model_dir=str(tmp_path / "b"), total_steps=22, **kwargs)
    assert result.step == 22
    assert sorted(os.listdir(tmp_path / "b" / "")) >= ["checkpoint_22"]
    meta = json.loads((tmp_path / "b" / "checkpoint_22" / "train_meta" / "metadata").read_text())
    assert meta["initial_step"] == 20


def test_errors_are_t5cli_errors():
    assert issubclass(UnknownNameError, T5CliError) and issubclass(ConfigError, T5CliError)
