"""T5X's gin files run unchanged: imports, scoped DatasetConfigs, run scripts, T5X's meaning.

The gin files here are written in T5X's style (T5X's own imports, ``train_script.train``,
``train/``/``train_eval/``/``infer_eval/`` ``utils.DatasetConfig`` …) and pointed at the
offline task with T5X-style ``--gin.X=Y`` flags.
"""

from __future__ import annotations

import json
import math
import os

import pytest

TASK = "number_words_en_de_999"

FROM_SCRATCH = """\
from __gin__ import dynamic_registration

import __main__ as train_script
import optax
import seqio
from t5.data import mixtures
from t5x import models
from t5x import optimizers
from t5x import partitioning
from t5x import trainer
from t5x import utils

include "t5x/examples/t5/t5_1_1/tiny.gin"
include "t5x/configs/runs/pretrain.gin"

MIXTURE_OR_TASK_NAME = "wmt_t2t_ende_v003"
TASK_FEATURE_LENGTHS = {"inputs": 256, "targets": 256}
TRAIN_STEPS = 50000
DROPOUT_RATE = 0.0

train/utils.DatasetConfig:
  batch_size = 128
  use_cached = False
  pack = True
  shuffle = False
  seed = 0

train_eval/utils.DatasetConfig:
  batch_size = 128
  use_cached = False
  pack = True
  seed = 0

infer_eval/utils.DatasetConfig:
  mixture_or_task_name = %MIXTURE_OR_TASK_NAME
  task_feature_lengths = None  # compute max
  split = "validation"
  seed = 0
  batch_size = 128
  shuffle = False
  use_cached = False

train_script.train:
  eval_period = 500
  eval_steps = 20
  random_seed = 0
  use_hardware_rng = True
  infer_eval_dataset_cfg = @infer_eval/utils.DatasetConfig()
  inference_evaluator_cls = @seqio.Evaluator
  actions = {'TRAIN': [@trainer.TerminateOnNanAction()]}

seqio.Evaluator:
  logger_cls = [@seqio.PyLoggingLogger, @seqio.TensorBoardLogger, @seqio.JSONLogger]
  num_examples = None
  use_memory_cache = True

utils.SaveCheckpointConfig:
  period = 5000
  keep = 1

models.EncoderDecoderModel.predict_batch_with_aux.num_decodes = 4

partitioning.PjitPartitioner.num_partitions = 2

trainer.Trainer.num_microbatches = 2

utils.create_learning_rate_scheduler:
  factors = 'constant * linear_warmup * rsqrt_decay'
  base_learning_rate = 2.0
  warmup_steps = 4
"""

ADAMW = """\
from __gin__ import dynamic_registration

from t5x import optimizers
import optax

include "scratch.gin"

OPTIMIZER = @optimizers.chain()
optimizers.chain.transformations = [@optax.clip(), @optax.adamw()]
optax.clip.max_delta = 1.0
optax.adamw.learning_rate = 1e-3
"""

SHRINK = ["--gin.MIXTURE_OR_TASK_NAME='%s'" % TASK,
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 32}",
          "--gin.train/utils.DatasetConfig.batch_size=8",
          "--gin.train_eval/utils.DatasetConfig.batch_size=8",
          "--gin.infer_eval/utils.DatasetConfig.batch_size=8",
          "--gin.network.T5Config.dtype='float32'"]


@pytest.fixture
def captured_train(monkeypatch):
    """t5cli's train() replaced by a recorder: what T5X's train_script.train translated to."""
    from t5cli import config
    from t5cli.runtime import train as runtime_train

    config.register_configurables()  # t5cli's own `train` wraps the real function, not the recorder
    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        return runtime_train.TrainResult(step=kwargs["total_steps"], params=None, model_dir=kwargs["model_dir"])

    monkeypatch.setattr(runtime_train, "train", fake)
    return calls


def test_every_binding_of_a_t5x_train_file_takes_its_meaning(tmp_path, t5, monkeypatch, captured_train):
    import jax.numpy as jnp

    from t5cli import t5x_compat

    monkeypatch.setattr(t5x_compat, "_notes", set())  # the skip note prints once per process
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scratch.gin").write_text(FROM_SCRATCH)
    r = t5("train", "--gin_file=scratch.gin", *SHRINK, "--gin.MODEL_DIR='m'", "--gin.TRAIN_STEPS=7",
           "--gin.train_script.train.eval_period=3")
    assert r.exit_code == 0, r.err
    (kw,) = captured_train
    assert kw["model_dir"] == str(tmp_path / "m") and kw["total_steps"] == 7
    assert kw["mixture_or_task_name"] == TASK and kw["task_feature_lengths"] == {"inputs": 32, "targets": 32}
    assert kw["batch_size"] == 8 and kw["pack"] is True and kw["use_cached_tasks"] is False
    assert kw["shuffle"] is False
    assert kw["eval_period"] == 3 and kw["eval_steps"] == 20 and kw["infer_eval_period"] == 3
    assert kw["checkpoint_period"] == 5000 and kw["keep_checkpoints"] == 1
    assert kw["num_partitions"] == 2 and kw["num_microbatches"] == 2 and kw["random_seed"] == 0
    assert kw["initial_checkpoint_path"] is None and kw["z_loss"] == 1e-4
    config = kw["model_config"]  # T5X's t5_1_1/tiny.gin: 8 wide, head_dim 3
    assert (config.emb_dim, config.head_dim, config.mlp_dim, config.num_heads) == (8, 3, 16, 4)
    assert config.mlp_activations == ("gelu", "linear") and config.dtype == "float32"
    assert kw["on_eval"].options.beam_size == 4  # num_decodes
    lr = kw["learning_rate_schedule"]
    for step, want in ((0, 1e-8), (2, 2.0 * 0.5 / 2.0), (8, 2.0 / math.sqrt(8))):
        assert float(lr(jnp.asarray(step))) == pytest.approx(want, rel=1e-6)
    # what t5cli cannot honour: one warning line naming each binding
    warning = [line for line in r.err.splitlines() if "have no effect here" in line]
    assert len(warning) == 1, r.err
    assert "use_hardware_rng=True" in warning[0]
    assert kw["stop_on_nonfinite"] is True and "TerminateOnNanAction" not in warning[0]
    assert "logger_cls" not in warning[0]
    assert "skipped `import t5.data.mixtures`" in r.err

    # optimizers.chain + optax.adamw replace Adafactor: the optimizer state is Adam's
    (tmp_path / "adamw.gin").write_text(ADAMW)
    r = t5("train", "--gin_file=adamw.gin", *SHRINK, "--gin.MODEL_DIR='m2'", "--gin.TRAIN_STEPS=7")
    assert r.exit_code == 0, r.err
    names = _state_types(captured_train[1]["optimizer"].init({"w": jnp.zeros((2, 3))}))
    assert "ScaleByAdamState" in names and "FactoredState" not in names
    assert "FactoredState" in _state_types(captured_train[0]["optimizer"].init({"w": jnp.zeros((2, 3))}))


def _state_types(state) -> set:
    """The type names of an optax state and of every state nested in it."""
    out = {type(state).__name__}
    if isinstance(state, tuple):
        for part in state:
            out |= _state_types(part)
    return out


def test_precompile_plans_a_t5x_run_without_its_model_dir_or_steps(tmp_path, t5, monkeypatch):
    """`--precompile` with a T5X train file, or T5X's precompile.gin: the step of T5X's model
    and batch is compiled and reported; MODEL_DIR and TRAIN_STEPS may be left unset and
    nothing is written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.gin").write_text(FROM_SCRATCH)
    r = t5("train", "--gin_file=run.gin", *SHRINK, "--gin.PjitPartitioner.num_partitions=1",
           "--gin.trainer.Trainer.num_microbatches=None", "--precompile")
    assert r.exit_code == 0, r.err
    assert "precompiled the train step of t5x_t5_1_1 (" in r.out and "for batch 8 (inputs=32,targets=32)" in r.out
    assert "activations/temp" in r.out and "FLOPs per step" in r.out
    assert list(tmp_path.iterdir()) == [tmp_path / "run.gin"]
    # T5X's precompile.gin (train_script.precompile) plans the same step
    r = t5("train", "--gin_file=t5x/examples/t5/t5_1_1/tiny.gin", "--gin_file=t5x/configs/runs/precompile.gin",
           *SHRINK[:2], "--gin.BATCH_SIZE=8", "--gin.USE_CACHED_TASKS=False", "--gin.DROPOUT_RATE=0.0",
           "--gin.network.T5Config.dtype='float32'", "--gin.MODEL_DIR='m'")
    assert r.exit_code == 0, r.err
    assert "precompiled the train step of t5x_t5_1_1 (" in r.out and "for batch 8 (inputs=32,targets=32)" in r.out
    assert "have no effect" not in r.err, r.err
    assert list(tmp_path.iterdir()) == [tmp_path / "run.gin"]


def test_t5x_names_t5cli_does_not_know_fail_in_one_line(tmp_path, t5, monkeypatch, captured_train):
    monkeypatch.chdir(tmp_path)
    cases = {
        "from t5x.contrib.moe import models as moe\n": "'t5x.contrib.moe.models', a T5X module t5cli does not emulate",
        "from t5x import utils\nutils.DatasetConfg.batch_size = 8\n": "did you mean utils.DatasetConfig?",
        "from t5x import utils\nutils.SaveCheckpointConfig.perod = 8\n": "did you mean 'period'?",
    }
    for i, (text, message) in enumerate(cases.items()):
        (tmp_path / f"bad{i}.gin").write_text("from __gin__ import dynamic_registration\n" + text)
        r = t5("train", f"--gin_file=bad{i}.gin", "--gin.MODEL_DIR='m'")
        assert r.exit_code == 1 and r.err.strip().count("\n") == 0, r.err
        assert message in r.err, r.err
    assert not captured_train and not (tmp_path / "m").exists()
    # a gs:// checkpoint gets the offline error, naming the fix
    (tmp_path / "ft.gin").write_text(FROM_SCRATCH.replace("pretrain.gin", "finetune.gin"))
    r = t5("train", "--gin_file=ft.gin", *SHRINK, "--gin.MODEL_DIR='m'", "--gin.TRAIN_STEPS=7",
           "--gin.INITIAL_CHECKPOINT_PATH='gs://t5-data/pretrained_models/t5x/t5_1_1_base/checkpoint_1000000'")
    assert r.exit_code == 1 and "is remote and t5cli works offline" in r.err, r.err


def test_a_t5cli_run_after_a_t5x_one_sees_only_its_own_names(tmp_path, t5, monkeypatch, captured_train):
    """T5X's `train_script.train` is forgotten after its run: `train.X` is t5cli's again."""
    from t5cli import config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "scratch.gin").write_text(FROM_SCRATCH)
    assert t5("train", "--gin_file=scratch.gin", *SHRINK, "--gin.MODEL_DIR='m'").exit_code == 0
    config.parse_gin(base_files=["runs/pretrain.gin"], bindings=["train.eval_period = 7"])
    import gin

    assert gin.query_parameter("train.eval_period") == 7
    assert config.t5x_script("train") is None


def test_t5x_run_scripts_end_to_end(tmp_path, t5, monkeypatch):
    """Train from scratch, fine-tune, evaluate and infer, driven by T5X-style gin files only."""
    from t5cli.metrics.events import read_scalars

    monkeypatch.chdir(tmp_path)
    (tmp_path / "scratch.gin").write_text(FROM_SCRATCH.replace("num_partitions = 2", "num_partitions = 1")
                                          .replace("num_microbatches = 2", "num_microbatches = None"))
    r = t5("train", "--gin_file=scratch.gin", *SHRINK, "--gin.MODEL_DIR='m'", "--gin.TRAIN_STEPS=4",
           "--gin.train_script.train.eval_period=2", "--gin.train_script.train.eval_steps=1",
           "--gin.utils.SaveCheckpointConfig.period=2", "--gin.seqio.Evaluator.num_examples=8")
    assert r.exit_code == 0, r.err
    m = tmp_path / "m"
    assert sorted(p.name for p in m.glob("checkpoint_*")) == ["checkpoint_4"]  # keep = 1
    lr = read_scalars(m / "train")["learning_rate"]
    assert lr[2] == pytest.approx(2.0 * (1 / 4) / 2.0, rel=1e-5)  # step 1's rate, logged at step 2
    assert (m / "training_eval").is_dir() and (m / "inference_eval" / f"{TASK}-metrics.jsonl").is_file()
    steps = [json.loads(line)["step"] for line in (m / "inference_eval" / f"{TASK}-metrics.jsonl").open()]
    assert steps == [2, 4]
    assert "train_script.train.eval_period = 2" in (m / "config.gin").read_text()

    # fine-tune: T5X's finetune.gin restores INITIAL_CHECKPOINT_PATH; TRAIN_STEPS counts from it
    (tmp_path / "ft.gin").write_text(FROM_SCRATCH.replace("pretrain.gin", "finetune.gin")
                                     .replace("num_partitions = 2", "num_partitions = 1"))
    r = t5("train", "--gin_file=ft.gin", *SHRINK, "--gin.MODEL_DIR='ft'", "--gin.TRAIN_STEPS=6",
           "--gin.INITIAL_CHECKPOINT_PATH='m/checkpoint_4'", "--gin.USE_CACHED_TASKS=False",
           "--gin.train_script.train.eval_period=2", "--gin.seqio.Evaluator.num_examples=8")
    assert r.exit_code == 0, r.err
    assert json.loads((tmp_path / "ft" / "t5cli_run.json").read_text())["train"]["initial_step"] == 4
    assert (tmp_path / "ft" / "checkpoint_6").is_dir()

    # eval and infer with T5X's run files and their macros
    eval_gin = ('from __gin__ import dynamic_registration\n'
                'include "t5x/examples/t5/t5_1_1/tiny.gin"\ninclude "t5x/configs/runs/eval.gin"\n'
                'DROPOUT_RATE = 0.0\n')
    (tmp_path / "eval.gin").write_text(eval_gin)
    r = t5("eval", "--gin_file=eval.gin", f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
           "--gin.CHECKPOINT_PATH='ft/checkpoint_6'", "--gin.EVAL_OUTPUT_DIR='ev'",
           "--gin.network.T5Config.dtype='float32'", "--gin.seqio.Evaluator.num_examples=8",
           "--gin.models.EncoderDecoderModel.predict_batch_with_aux.num_decodes=2")
    assert r.exit_code == 0, r.err
    assert (tmp_path / "ev" / f"{TASK}-metrics.jsonl").is_file() and (tmp_path / "ev" / "config.gin").is_file()
    (tmp_path / "infer.gin").write_text(eval_gin.replace("eval.gin", "infer.gin"))
    r = t5("infer", "--gin_file=infer.gin", f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
           "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 32}",
           "--gin.CHECKPOINT_PATH='ft/checkpoint_6'", "--gin.INFER_OUTPUT_DIR='inf'",
           "--gin.network.T5Config.dtype='float32'", "--gin.utils.DatasetConfig.batch_size=8")
    assert r.exit_code == 0, r.err
    out = list((tmp_path / "inf").glob("*.jsonl"))
    assert out and "prediction" in json.loads(out[0].open().readline())
    assert "RestoreCheckpointConfig.dtype='bfloat16'" in r.err  # named, not silently dropped


def test_terminate_on_nan_action_stops_a_diverging_t5x_run(tmp_path, t5, monkeypatch):
    """T5X's TerminateOnNanAction: a loss that turns NaN ends the run, exit 1, no NaN checkpoint."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scratch.gin").write_text(FROM_SCRATCH.replace("num_partitions = 2", "num_partitions = 1")
                                          .replace("num_microbatches = 2", "num_microbatches = None"))
    r = t5("train", "--gin_file=scratch.gin", *SHRINK, "--gin.MODEL_DIR='nan'", "--gin.TRAIN_STEPS=8",
           "--gin.utils.create_learning_rate_scheduler.factors='constant'",
           "--gin.utils.create_learning_rate_scheduler.base_learning_rate=1e6",
           "--gin.utils.SaveCheckpointConfig.period=1", "--gin.train_script.train.eval_period=100",
           "--gin.train_script.train.infer_eval_dataset_cfg=None")
    assert r.exit_code == 1, r.err
    assert "training diverged" in r.err and "NaN or infinite at step" in r.err, r.err
    saved = sorted(int(p.name.split("_")[1]) for p in (tmp_path / "nan").glob("checkpoint_*"))
    assert saved and saved[-1] < 8, saved  # stopped early; only finite steps were saved


@pytest.mark.slow
def test_num_partitions_2_on_4_cpu_devices_gives_a_2_by_2_mesh(tmp_path):
    import subprocess
    import sys

    from tests.conftest import python_env

    (tmp_path / "scratch.gin").write_text(FROM_SCRATCH.replace("num_microbatches = 2", "num_microbatches = None"))
    env = python_env(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-m", "t5cli", "train", "--gin_file=scratch.gin", *SHRINK,
                        "--gin.MODEL_DIR='m'", "--gin.TRAIN_STEPS=1", "--gin.train_script.train.eval_period=0"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mesh data=2, model=2" in r.stdout, r.stdout
    assert os.path.isdir(tmp_path / "m" / "checkpoint_1")
