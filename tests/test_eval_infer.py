"""`t5 eval` and `t5 infer` end to end, from a tiny model trained here, and their user errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from t5cli.errors import CheckpointError

TASK = "number_words_en_de_999"
TINY = dict(emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_encoder_layers=1,
            num_decoder_layers=1)
LENGTHS = {"inputs": 32, "targets": 32}
FLAGS = ["--feature-lengths", "inputs=32,targets=32", "--batch-size", "16"]
STEPS = 40


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A MODEL_DIR with checkpoints at steps 20 and 40 of a tiny model (overrides recorded
    only in config.gin, so eval/infer must recover them)."""
    from t5cli.runtime import optim
    from t5cli.runtime.evaluate import make_inference_evaluator
    from t5cli.models.model import model_for
    from t5cli.plugins import load_runtime
    from t5cli.runtime.train import train

    runtime = load_runtime()
    model_dir = tmp_path_factory.mktemp("run") / "model"
    # inference eval during training, every 20 steps, into its own folder
    model = model_for(runtime.registry.model("byt5_tiny").replace(**TINY))
    on_eval = make_inference_evaluator(TASK, model, LENGTHS, model_dir, split="validation",
                                       num_examples=16, batch_size=16, runtime=runtime,
                                       output_dir=model_dir / "train_infer_eval")
    train(model_dir=str(model_dir), mixture_or_task_name=TASK, model_name="byt5_tiny",
          model_overrides=TINY, task_feature_lengths=LENGTHS, total_steps=STEPS, batch_size=16,
          dropout_rate=0.0, learning_rate_schedule=optim.constant_schedule(base_learning_rate=0.01),
          checkpoint_period=20, eval_period=None, log_period=20, runtime=runtime,
          on_eval=on_eval, infer_eval_period=20)
    on_eval.close()
    return model_dir


def test_inference_eval_during_training(trained):
    from t5cli.metrics.events import read_scalars

    scalars = read_scalars(str(trained / "train_infer_eval"), seqio_summaries=True)
    assert sorted(scalars[f"{TASK}/sequence_accuracy"]) == [20, 40]
    assert sorted(scalars[f"{TASK}/chrf"]) == [20, 40]
    assert len(read_jsonl(trained / "train_infer_eval" / f"{TASK}-000020.jsonl")) == 16


def listing(path: Path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def read_jsonl(path) -> list:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_eval_writes_summaries_and_predictions(trained, t5):
    from t5cli.metrics.events import read_scalars

    r = t5("eval", "--checkpoint", trained, "--split", "validation", "--num-examples", "24",
           "--metric", "bleu", *FLAGS)
    assert r.exit_code == 0, r.err
    assert f"{TASK}/sequence_accuracy" in r.out and "step 40" in r.out
    out = trained / "inference_eval"
    scalars = read_scalars(str(out), seqio_summaries=True)
    for metric in ("sequence_accuracy", "chrf", "bleu"):  # task metrics + the --metric plugin
        assert list(scalars[f"{TASK}/{metric}"]) == [STEPS], scalars.keys()
    rows = read_jsonl(out / f"{TASK}-{STEPS:06d}.jsonl")
    assert len(rows) == 24
    assert all({"inputs", "prediction", "target"} <= set(row) for row in rows)
    assert rows[0]["inputs"] and isinstance(rows[0]["prediction"], str)
    metrics = read_jsonl(out / f"{TASK}-metrics.jsonl")
    assert metrics[-1]["step"] == STEPS and "bleu" in metrics[-1]


def test_eval_library_at_an_earlier_step(trained, tmp_path):
    from t5cli.runtime.evaluate import evaluate

    result = evaluate(checkpoint_path=str(trained / "checkpoint_20"), split="validation",
                      num_examples=16, task_feature_lengths=LENGTHS, batch_size=16,
                      output_dir=str(tmp_path / "ev"))
    assert result.step == 20
    assert 0.0 <= result.metrics[TASK]["sequence_accuracy"] <= 100.0
    assert (tmp_path / "ev" / TASK).is_dir()
    assert len(read_jsonl(result.predictions[TASK])) == 16


def test_infer_text_file_greedy_and_beam(trained, tmp_path, t5):
    inputs = tmp_path / "in.txt"
    inputs.write_text("seven\nforty-two\n\nnine hundred and one\n")
    out = tmp_path / "out.jsonl"
    r = t5("infer", "--checkpoint", trained, "--input", inputs, "--output", out)
    assert r.exit_code == 0, r.err
    rows = read_jsonl(out)
    assert [row["inputs"] for row in rows] == ["seven", "forty-two", "nine hundred and one"]
    assert all(set(row) == {"inputs", "prediction", "score"} for row in rows)
    assert all(isinstance(row["score"], float) for row in rows)

    r = t5("infer", "--checkpoint", trained, "--input", inputs, "--beam-size", "2")
    assert r.exit_code == 0, r.err
    beam = [json.loads(line) for line in r.out.splitlines() if line.startswith("{")]
    assert [row["inputs"] for row in beam] == [row["inputs"] for row in rows]
    assert "beam search (beams=2" in r.err


def test_infer_task_split_default_output(trained, t5):
    r = t5("infer", "--model-dir", trained, "--num-examples", "8", "--temperature", "0.7",
           "--top-k", "5", "--seed", "3", *FLAGS)
    assert r.exit_code == 0, r.err
    path = trained / "inference" / f"{TASK}-test-{STEPS}.jsonl"
    rows = read_jsonl(path)
    assert len(rows) == 8 and all({"inputs", "prediction", "score", "target"} <= set(x) for x in rows)


def test_missing_checkpoint_is_a_clear_error_and_deletes_nothing(trained, tmp_path, t5):
    r = t5("eval", "--checkpoint", tmp_path / "nope")
    assert r.exit_code == 1
    assert "does not exist" in r.err and "Traceback" not in r.err
    # a MODEL_DIR whose checkpoints are gone: files stay where they are
    empty = tmp_path / "empty_run"
    empty.mkdir()
    for name in ("config.gin", "t5cli_run.json"):
        shutil.copy(trained / name, empty / name)
    before = listing(empty)
    r = t5("infer", "--model-dir", empty, "--input", "-")
    assert r.exit_code == 1 and "holds no checkpoint" in r.err, r.err
    assert listing(empty) == before
    from t5cli.runtime.evaluate import evaluate

    with pytest.raises(CheckpointError, match="no checkpoint for step 7"):
        evaluate(checkpoint_path=str(trained), step=7)
    assert (trained / "checkpoint_40").is_dir() and (trained / "checkpoint_20").is_dir()


def test_model_from_unloaded_user_dir_says_pass_user_dir(trained, tmp_path, t5):
    run = tmp_path / "udir_run"
    shutil.copytree(trained, run)
    record = json.loads((run / "t5cli_run.json").read_text())
    user_dir = tmp_path / "my_user_dir"
    record["model"] = "my_private_model"
    record.pop("model_config", None)  # only the name: the model must come from the user dir
    record["model_origin"] = {"plugin": "my_user_dir/models.py", "source": "user-dir",
                              "path": str(user_dir / "models.py")}
    record["user_dirs"] = [str(user_dir)]
    (run / "t5cli_run.json").write_text(json.dumps(record))
    for command in ("eval", "infer", "export"):
        extra = ["-o", tmp_path / "x"] if command == "export" else []
        r = t5(command, "--checkpoint", run, *extra)
        assert r.exit_code == 1, (command, r.err)
        assert f"pass --user-dir {user_dir}" in r.err, (command, r.err)


def test_sizes_come_from_the_checkpoint_when_the_record_lacks_them(trained, tmp_path, t5):
    run = tmp_path / "bare_run"
    shutil.copytree(trained, run)
    (run / "config.gin").write_text("# no model_overrides recorded\n")
    record = json.loads((run / "t5cli_run.json").read_text())
    record.pop("model_config", None)
    (run / "t5cli_run.json").write_text(json.dumps(record))
    inputs = tmp_path / "in.txt"
    inputs.write_text("seven\n")
    r = t5("infer", "--checkpoint", run, "--input", inputs)
    assert r.exit_code == 0, r.err
    assert "sizes read from the checkpoint" in r.err and "emb_dim=32" in r.err
    assert json.loads(r.out.splitlines()[-1])["inputs"] == "seven"


# ---- the activation dtype recorded with the checkpoint ----------------------------------------

@pytest.fixture(scope="module")
def trained_bf16(tmp_path_factory):
    """A tiny model trained for two steps with bfloat16 activations."""
    from t5cli.plugins import load_runtime
    from t5cli.runtime.train import train

    model_dir = tmp_path_factory.mktemp("bf16") / "model"
    train(model_dir=str(model_dir), mixture_or_task_name=TASK, model_name="byt5_tiny",
          model_overrides=dict(TINY, dtype="bfloat16"), task_feature_lengths=LENGTHS, total_steps=2,
          batch_size=8, checkpoint_period=2, eval_period=None, infer_eval_period=0,
          runtime=load_runtime())
    return model_dir


def test_eval_and_infer_compute_in_the_recorded_activation_dtype(trained_bf16, tmp_path, capsys):
    import math

    from t5cli.plugins import load_runtime
    from t5cli.runtime.evaluate import evaluate
    from t5cli.runtime.infer import infer
    from t5cli.runtime.model_loading import load_model

    runtime = load_runtime()
    note = "byt5_tiny computes in bfloat16, as the run was trained"
    # the user's own overrides without a dtype keep the recorded one
    loaded = load_model(runtime, str(trained_bf16), model_overrides={"dropout_rate": 0.0})
    assert (loaded.model.config.dtype, loaded.model.config.dropout_rate, loaded.model.config.emb_dim) == \
        ("bfloat16", 0.0, 32)
    capsys.readouterr()
    result = infer(checkpoint_path=str(trained_bf16), inputs=["seven", "forty-two"],
                   model_overrides=dict(TINY, dropout_rate=0.0), runtime=runtime, output="-")
    assert note in capsys.readouterr().err
    assert [r["inputs"] for r in result.records] == ["seven", "forty-two"]
    assert all(isinstance(r["prediction"], str) and math.isfinite(r["score"]) for r in result.records)

    ev = evaluate(checkpoint_path=str(trained_bf16), split="validation", num_examples=8, batch_size=8,
                  output_dir=str(tmp_path / "ev"), runtime=runtime)
    assert note in capsys.readouterr().err
    assert 0 <= ev.metrics[TASK]["sequence_accuracy"] <= 100 and len(read_jsonl(ev.predictions[TASK])) == 8

    # a dtype the user names wins
    loaded = load_model(runtime, str(trained_bf16), model_overrides={"dtype": "float32"})
    assert loaded.model.config.dtype == "float32" and note not in capsys.readouterr().err


def test_t5x_style_dtype_binding_is_the_recorded_dtype(trained, tmp_path):
    """A T5X gin run records ``network.T5Config.dtype`` (often through ACTIVATION_DTYPE), not
    t5cli's model_overrides: the sizes then come from the checkpoint, the dtype from the gin."""
    from t5cli.plugins import load_runtime
    from t5cli.runtime.model_loading import load_model, recorded_activation_dtype

    run = tmp_path / "t5x_run"
    shutil.copytree(trained, run)
    (run / "config.gin").write_text("ACTIVATION_DTYPE = 'bfloat16'\n# Parameters for network.T5Config:\n"
                                    "network.T5Config.dtype = %ACTIVATION_DTYPE\n")
    assert recorded_activation_dtype(run) == "bfloat16"
    loaded = load_model(load_runtime(), str(run))
    assert (loaded.model.config.dtype, loaded.model.config.emb_dim) == ("bfloat16", 32)
    assert recorded_activation_dtype(trained) is None  # a float32 run records no dtype
