"""The example user dir's `toy_ende` task: training with inference eval writes BLEU, and
eval from its MODEL_DIR needs the user dir again (and says so)."""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest

from conftest import EXAMPLE_USER_DIR, SHARED_DATA

TINY = dict(emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_encoder_layers=1,
            num_decoder_layers=1)
LENGTHS = {"inputs": 32, "targets": 32}

# CI always has ../shared beside the checkout, so there a missing corpus is a failure.
pytestmark = [
    pytest.mark.skipif(not (SHARED_DATA / "toy-ende" / "src-train.txt").is_file()
                       and not os.environ.get("CI"), reason="toy-ende data not present"),
]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    from t5cli.runtime import optim
    from t5cli.runtime.evaluate import make_inference_evaluator
    from t5cli.models.model import EncoderDecoderModel
    from t5cli.plugins import load_runtime
    from t5cli.runtime.train import train

    runtime = load_runtime([EXAMPLE_USER_DIR])
    model_dir = tmp_path_factory.mktemp("toy") / "model"
    config = runtime.registry.model("byt5_tiny").replace(**TINY)
    on_eval = make_inference_evaluator("toy_ende", EncoderDecoderModel(config), LENGTHS, model_dir,
                                       split="validation", num_examples=32, batch_size=32,
                                       runtime=runtime)
    result = train(model_dir=str(model_dir), mixture_or_task_name="toy_ende", model_name="byt5_tiny",
                   model_overrides=TINY, task_feature_lengths=LENGTHS, total_steps=30, batch_size=16,
                   learning_rate_schedule=optim.constant_schedule(base_learning_rate=0.01),
                   checkpoint_period=None, eval_period=None, log_period=10, runtime=runtime,
                   on_eval=on_eval, infer_eval_period=15)
    on_eval.close()
    assert result.step == 30
    return model_dir


def test_training_writes_bleu_to_inference_eval(toy_run):
    from t5cli.metrics.events import read_scalars

    scalars = read_scalars(str(toy_run / "inference_eval"), seqio_summaries=True)
    bleu = scalars["toy_ende/bleu"]
    assert sorted(bleu) == [15, 30]
    assert all(math.isfinite(v) and 0.0 <= v <= 100.0 for v in bleu.values())
    assert "toy_ende/chrf" in scalars
    lines = (toy_run / "inference_eval" / "toy_ende-000030.jsonl").read_text().splitlines()
    assert len(lines) == 32


def test_eval_needs_the_user_dir_and_says_so(toy_run, t5, tmp_path):
    user_dir = EXAMPLE_USER_DIR.resolve()
    r = t5("eval", "--checkpoint", toy_run)
    assert r.exit_code == 1
    assert "unknown task 'toy_ende'" in r.err and (
        f"; this task came from user dir {user_dir}: pass --user-dir {user_dir}\n") in r.err, r.err
    # a record without the task's origin still names the run's user dirs
    bare = tmp_path / "bare"
    shutil.copytree(toy_run, bare)
    record = json.loads((bare / "t5cli_run.json").read_text())
    del record["task_origin"]
    (bare / "t5cli_run.json").write_text(json.dumps(record))
    r = t5("eval", "--checkpoint", bare)
    assert r.exit_code == 1
    assert "unknown task 'toy_ende'" in r.err and (
        f"; the run that made this model used --user-dir {user_dir}: pass --user-dir {user_dir}\n") in r.err, r.err

    r = t5("--user-dir", EXAMPLE_USER_DIR, "eval", "--checkpoint", toy_run, "--split", "test",
           "--num-examples", "16", "--feature-lengths", "inputs=32,targets=32", "--batch-size", "16")
    assert r.exit_code == 0, r.err
    assert "toy_ende/bleu" in r.out
