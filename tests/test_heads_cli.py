"""Encoder-only heads from the command line: train, resume, eval, infer, export, reload.

Tiny byte-level models (d_model 32, one layer) on the built-in head tasks: ``sst2``
(sequence classification, real SST-2 text from ../shared/data/sst2-alps),
``number_tags`` (token classification) and ``number_qa`` (extractive QA).
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from conftest import SHARED_DATA

TINY = ("{'num_encoder_layers': 1, 'num_decoder_layers': 1, 'emb_dim': 32, 'num_heads': 2, "
        "'head_dim': 16, 'mlp_dim': 64, 'dropout_rate': 0.0}")

needs_sst2 = pytest.mark.skipif(not (SHARED_DATA / "sst2-alps" / "dev.tsv").is_file(),
                                reason="../shared/data/sst2-alps is not here")


def _train_args(model_dir, head, task, length, steps, *extra):
    return ("train", "--head", head, "--task", task, "--model", "byt5_tiny", "--model-dir", model_dir,
            "--steps", steps, "--batch-size", 8, "--feature-lengths", f"inputs={length}",
            "--gin", f"train.model_overrides={TINY}", "--gin", "train.checkpoint_period=4",
            "--gin", "train.eval_period=4", "--gin", "train.eval_steps=1", "--gin", "train.log_period=2",
            "--gin", "constant_schedule.base_learning_rate=3e-3", "--gin", "train.infer_eval_period=0", *extra)


def _metrics_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _jsonl(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _head_weights(directory, name):
    from safetensors.numpy import load_file

    return load_file(str(directory / name))


@needs_sst2
def test_sequence_classification_end_to_end(t5, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    run = tmp_path / "sst2"
    r = t5(*_train_args(run, "sequence_classification", "sst2", 48, 4))
    assert r.exit_code == 0, r.err
    record = json.loads((run / "t5cli_run.json").read_text())
    assert record["train"]["head"]["label_names"] == ["negative", "positive"]
    assert "train.head = 'sequence_classification'" in (run / "config.gin").read_text()
    assert "train.optimizer = @adamw()" in (run / "config.gin").read_text()  # FAT5's default
    r = t5(*_train_args(run, "sequence_classification", "sst2", 48, 8))  # resumes at 4
    assert r.exit_code == 0, r.err
    assert "from step 4 to 8" in r.out
    assert sorted(p.name for p in run.glob("checkpoint_*")) == ["checkpoint_4", "checkpoint_8"]

    r = t5("eval", "--checkpoint", run, "--split", "test", "--num-examples", 40)
    assert r.exit_code == 0, r.err
    metrics = _metrics_lines(run / "inference_eval" / "sst2-metrics.jsonl")[-1]
    assert metrics["step"] == 8 and set(metrics) == {"step", "accuracy", "f1", "matthews_corrcoef"}
    assert 0 <= metrics["accuracy"] <= 100 and -100 <= metrics["matthews_corrcoef"] <= 100
    examples = _jsonl((run / "inference_eval" / "sst2-000008.jsonl").read_text())
    assert len(examples) == 40 and examples[0]["inputs"].startswith("it 's a charming")
    assert examples[0]["target"] == "positive"
    assert np.mean([e["label"] == e["target"] for e in examples]) * 100 == pytest.approx(metrics["accuracy"])

    texts = tmp_path / "in.txt"
    texts.write_text("a charming and often affecting journey .\nunflinchingly bleak and desperate\n")
    r = t5("infer", "--checkpoint", run, "--input", texts)
    assert r.exit_code == 0, r.err
    rows = _jsonl(r.out)
    assert [row["inputs"] for row in rows] == texts.read_text().splitlines()
    for row in rows:
        assert row["label"] in ("negative", "positive")
        assert row["probability"] == pytest.approx(max(row["probabilities"].values()))
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)

    out = tmp_path / "hf"
    r = t5("export", "--checkpoint", run, "-o", out)
    assert r.exit_code == 0, r.err
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["T5EncoderModel"]
    assert config["t5cli_head"]["head"] == "sequence_classification"
    # transformers' T5EncoderModel + the documented pooling and head = our logits
    encoder = transformers.T5EncoderModel.from_pretrained(out).eval()
    head = _head_weights(out, "head.safetensors")
    tokens = np.array([[ord(c) + 3 for c in text] + [1] + [0] * (48 - len(text) - 1)
                       for text in texts.read_text().splitlines()], np.int64)
    with torch.no_grad():
        hidden = encoder(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(tokens > 0)).last_hidden_state
    hidden = hidden.numpy()
    mask = (tokens > 0)[..., None]
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    theirs = pooled @ head["classifier.weight"].T + head["classifier.bias"]
    from t5cli.plugins import load_runtime
    from t5cli.runtime.head_checkpoints import load_head
    from t5cli.runtime.head_predict import head_logits

    loaded = load_head(load_runtime(), run)
    ours = head_logits(loaded.model, loaded.params, tokens.astype(np.int32))
    np.testing.assert_allclose(theirs, ours, atol=1e-4)
    # and t5 reads the export back: the same model and logits
    reread = load_head(load_runtime(), out)
    assert reread.model.label_names == ["negative", "positive"]
    np.testing.assert_allclose(head_logits(reread.model, reread.params, tokens.astype(np.int32)), ours, atol=1e-6)


@pytest.mark.slow
def test_token_classification_end_to_end(t5, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    run = tmp_path / "tags"
    r = t5(*_train_args(run, "token_classification", "number_tags", 64, 4))
    assert r.exit_code == 0, r.err
    r = t5(*_train_args(run, "token_classification", "number_tags", 64, 8))
    assert r.exit_code == 0 and "from step 4 to 8" in r.out, r.err

    r = t5("eval", "--checkpoint", run, "--split", "test", "--num-examples", 16)
    assert r.exit_code == 0, r.err
    metrics = _metrics_lines(run / "inference_eval" / "number_tags-metrics.jsonl")[-1]
    assert set(metrics) == {"step", "token_accuracy", "entity_precision", "entity_recall", "entity_f1"}
    examples = _jsonl((run / "inference_eval" / "number_tags-000008.jsonl").read_text())
    assert len(examples) == 16
    assert all(len(e["tags"]) == len(e["target"]) == len(e["inputs"]) for e in examples)

    r = t5("infer", "--checkpoint", run, "--task", "number_tags", "--split", "test", "--num-examples", 3,
           "-o", "-")
    assert r.exit_code == 0, r.err
    rows = _jsonl(r.out)
    assert len(rows) == 3 and all(len(row["tags"]) == len(row["inputs"]) for row in rows)
    for row in rows:
        for e in row["entities"]:
            assert e["text"] == row["inputs"][e["start"]:e["end"] + 1] and e["label"] in ("COUNT", "ORD", "YEAR")

    out = tmp_path / "hf"
    assert t5("export", "--checkpoint", run, "-o", out).exit_code == 0
    model = transformers.T5ForTokenClassification.from_pretrained(out).eval()
    assert model.config.id2label[1] == "B-COUNT"
    from t5cli.plugins import load_runtime
    from t5cli.runtime.head_checkpoints import load_head
    from t5cli.runtime.head_predict import head_logits

    loaded = load_head(load_runtime(), run)
    tokens = np.array([[ord(c) + 3 for c in "ann sold twelve apples"] + [1, 0, 0]], np.int32)
    with torch.no_grad():
        theirs = model(input_ids=torch.tensor(tokens, dtype=torch.long),
                       attention_mask=torch.tensor(tokens > 0)).logits.numpy()
    ours = head_logits(loaded.model, loaded.params, tokens)
    real = tokens[0] > 0
    np.testing.assert_allclose(theirs[0][real], ours[0][real], atol=1e-4)
    reread = load_head(load_runtime(), out)
    np.testing.assert_allclose(head_logits(reread.model, reread.params, tokens), ours, atol=1e-6)


@pytest.mark.slow
def test_question_answering_end_to_end(t5, tmp_path):
    run = tmp_path / "qa"
    r = t5(*_train_args(run, "question_answering", "number_qa", 128, 4))
    assert r.exit_code == 0, r.err
    r = t5(*_train_args(run, "question_answering", "number_qa", 128, 8))
    assert r.exit_code == 0 and "from step 4 to 8" in r.out, r.err
    r = t5("eval", "--checkpoint", run, "--split", "test", "--num-examples", 16)
    assert r.exit_code == 0, r.err
    metrics = _metrics_lines(run / "inference_eval" / "number_qa-metrics.jsonl")[-1]
    assert set(metrics) == {"step", "exact_match", "f1"}
    examples = _jsonl((run / "inference_eval" / "number_qa-000008.jsonl").read_text())
    assert all(e["inputs"][e["start"]:e["end"] + 1] == e["answer"] for e in examples)
    assert examples[0]["target"] in examples[0]["inputs"]

    question = tmp_path / "q.txt"
    question.write_text("question: how many pears? context: ann has three apples and nine pears.\n")
    r = t5("infer", "--checkpoint", run, "--input", question)
    assert r.exit_code == 0, r.err
    (row,) = _jsonl(r.out)
    assert row["inputs"][row["start"]:row["end"] + 1] == row["answer"] and row["end"] - row["start"] < 64
    out = tmp_path / "hf"
    assert t5("export", "--checkpoint", run, "-o", out).exit_code == 0
    assert set(_head_weights(out, "head.safetensors")) == {"qa_outputs.weight", "qa_outputs.bias"}
    from t5cli.plugins import load_runtime
    from t5cli.runtime.head_checkpoints import load_head
    from t5cli.runtime.head_predict import head_logits

    text = "question: how many pears? context: ann has three apples and nine pears."
    tokens = np.array([[ord(c) + 3 for c in text] + [1]], np.int32)
    a, b = (load_head(load_runtime(), p) for p in (run, out))
    for x, y in zip(head_logits(a.model, a.params, tokens), head_logits(b.model, b.params, tokens)):
        np.testing.assert_allclose(x, y, atol=1e-6)


def _hf_encoder_decoder(directory):
    """A random byte-level T5 (the TINY sizes) written as a Hugging Face directory."""
    from t5cli.models.configs import get_config
    from t5cli.models.hf import export_hf
    from t5cli.models.model import EncoderDecoderModel

    config = get_config("byt5_tiny").replace(num_encoder_layers=1, num_decoder_layers=1, emb_dim=32,
                                             num_heads=2, head_dim=16, mlp_dim=64)
    params = EncoderDecoderModel(config).init_params(jax.random.PRNGKey(0))
    export_hf(config, params, str(directory))
    return params


def test_bad_inputs_stop_with_one_line(t5, tmp_path):
    _hf_encoder_decoder(tmp_path / "hf")
    common = ("--model-dir", tmp_path / "run", "--steps", 2, "--batch-size", 4)
    r = t5("train", "--head", "sequence_classification", "--task", "number_words_en_de_999", "--model",
           "byt5_tiny", "--feature-lengths", "inputs=32", *common)
    assert r.exit_code != 0
    assert r.err.strip().splitlines()[-1].endswith(
        "task 'number_words_en_de_999' has no 'label' feature (its features: inputs, targets); a "
        "sequence_classification head needs inputs + label (see docs/plugins.md, 'Tasks for encoder-only heads')")
    r = t5("finetune", "--head", "token_classification", "--task", "number_tags", "--model", "byt5_tiny",
           "--init-checkpoint", tmp_path / "hf", "--feature-lengths", "inputs=32", *common)
    assert r.exit_code != 0
    line = r.err.strip().splitlines()[-1]
    assert "the encoder of" in line and "does not match model 'byt5_tiny'" in line and "drop --model" in line
    r = t5("train", "--head", "token_classification", "--task", "number_tags", "--model", "byt5_tiny",
           "--num-labels", 3, "--feature-lengths", "inputs=32", *common)
    assert r.exit_code != 0
    assert "--num-labels 3 does not match the 7 labels task 'number_tags' names" in r.err
    assert not (tmp_path / "run").exists()  # nothing written by a refused run


@pytest.mark.slow
def test_finetune_starts_from_the_hf_encoder(t5, tmp_path):
    params = _hf_encoder_decoder(tmp_path / "hf")
    run = tmp_path / "run"
    r = t5("finetune", "--head", "token_classification", "--task", "number_tags", "--init-checkpoint",
           tmp_path / "hf", "--model-dir", run, "--steps", 2, "--batch-size", 4, "--feature-lengths",
           "inputs=32", "--gin", "constant_schedule.base_learning_rate=0.0", "--gin", "train.eval_period=None",
           "--gin", "train.infer_eval_period=0", "--gin", "train.checkpoint_period=2")
    assert r.exit_code == 0, r.err
    from t5cli.models.heads import encoder_params
    from t5cli.plugins import load_runtime
    from t5cli.runtime.head_checkpoints import load_head

    loaded = load_head(load_runtime(), run)  # the model came from the checkpoint: no --model
    assert loaded.model.config.emb_dim == 32 and loaded.step == 2
    same = jax.tree_util.tree_map(lambda a, b: np.allclose(np.asarray(a), np.asarray(b)),
                                  encoder_params(loaded.params), encoder_params(params))
    assert all(jax.tree_util.tree_leaves(same))  # learning rate 0: still the HF encoder


HEAD_MESH_SCRIPT = """
import json, sys
import jax
from t5cli.runtime.train import train

tiny = dict(emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_encoder_layers=1, num_decoder_layers=1)
out = {"devices": jax.device_count()}
for partitions in [int(p) for p in sys.argv[2].split(",")]:
    r = train(model_dir=sys.argv[1] + f"/p{partitions}", mixture_or_task_name="number_tags",
              task_feature_lengths={"inputs": 32}, total_steps=3, batch_size=8, model_name="byt5_tiny",
              model_overrides=tiny, dropout_rate=0.0, head="token_classification", checkpoint_period=None,
              eval_period=None, infer_eval_period=0, log_period=1, num_partitions=partitions)
    out[str(partitions)] = r.losses
print("RESULT=" + json.dumps(out))
"""


@pytest.mark.slow
def test_head_training_on_a_mesh_matches_one_device(tmp_path):
    """The head's train step is the encoder-decoder's: 4 devices (data 4, or data 2 x model 2)
    give the losses of one."""
    import subprocess

    from conftest import PYTHON, REPO, python_env

    results = {}
    for devices in (1, 4):
        env = python_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
                         CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run([PYTHON, "-c", HEAD_MESH_SCRIPT, str(tmp_path / f"d{devices}"),
                               "1" if devices == 1 else "1,2"], capture_output=True,
                              text=True, env=env, cwd=REPO, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[devices] = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT=")][-1][7:])
    assert results[4]["devices"] == 4
    one = results[1]["1"]
    assert len(one) == 3
    np.testing.assert_allclose(results[4]["1"], one, rtol=2e-5)
    np.testing.assert_allclose(results[4]["2"], one, rtol=2e-5)
