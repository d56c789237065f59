"""`t5 export --format saved_model`: a TF SavedModel (T5X export_lib style) that a process
with TensorFlow alone loads and serves, decoding like `t5 infer` (greedy and beam, any batch
size, text or token ids in)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import python_env
import test_export
from test_export import LENGTHS, TASK, TINY  # noqa: F401  (the same tiny model)

trained = test_export.trained  # the same fixture: a tiny model trained a few steps

# a long input (cut to 16 bytes with EOS, as `t5 infer` cuts it) and a non-ASCII one
TEXTS = ["seven", "one hundred and twenty-three", "fünf"]
LENGTH_FLAGS = ("--feature-lengths", f"inputs={LENGTHS['inputs']},targets={LENGTHS['targets']}")

# Runs in a fresh interpreter that cannot import JAX, flax, seqio or t5cli: TensorFlow's
# tflite module imports jax when it can, so blocking it is what shows the model needs none.
SERVE = r'''
import json, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("jax", "jaxlib", "flax", "seqio", "t5cli"):
            raise ModuleNotFoundError("blocked: " + name, name=name)

sys.meta_path.insert(0, Block())
import tensorflow as tf

jobs = json.loads(sys.argv[1])
out = {}
for name, (path, batches) in jobs.items():
    serve = tf.saved_model.load(path).signatures["serving_default"]
    out[name] = []
    for batch in batches:
        x = tf.constant(batch, tf.int32) if isinstance(batch[0], list) else tf.constant(batch)
        r = serve(text_batch=x)
        out[name].append([[o.decode("utf-8"), float(s)]
                          for o, s in zip(r["output"].numpy(), r["scores"].numpy())])
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"jax", "jaxlib", "flax", "seqio", "t5cli"})
assert "jax" not in sys.modules, loaded
print(json.dumps({"results": out, "loaded": loaded}))
'''


def serve_in_tensorflow_only(jobs, cwd):
    proc = subprocess.run([sys.executable, "-c", SERVE, json.dumps(jobs)], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env=python_env(TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["loaded"] == []
    return answer["results"]


def infer_rows(t5, checkpoint, tmp_path, *flags):
    words = tmp_path / "words.txt"
    words.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    r = t5("infer", "--checkpoint", checkpoint, "--input", words, *LENGTH_FLAGS, *flags)
    assert r.exit_code == 0, r.err
    return [json.loads(x) for x in r.out.splitlines() if x.startswith("{")]


def assert_same(served, rows):
    assert [p for p, _ in served] == [r["prediction"] for r in rows]
    np.testing.assert_allclose([s for _, s in served], [r["score"] for r in rows],
                               rtol=1e-5, atol=1e-5)


def export_saved_model(t5, trained, out, *flags):
    r = t5("export", "--checkpoint", trained, "-o", out, "--format", "saved_model", *flags)
    assert r.exit_code == 0, r.err
    assert [p.name for p in out.iterdir()] == ["6"]  # DIR/<step>/, nothing else left behind
    return out / "6"


def test_saved_model_serves_like_t5_infer_greedy_and_beam(trained, tmp_path, t5):
    greedy = export_saved_model(t5, trained, tmp_path / "greedy")
    beam = export_saved_model(t5, trained, tmp_path / "beam", "--beam-size", "3")
    assert (greedy / "saved_model.pb").is_file() and (greedy / "variables").is_dir()
    info = json.loads((beam / "assets.extra" / "t5cli_export.json").read_text())
    assert info["decoding"] == "beam" and info["input_length"] == LENGTHS["inputs"]

    served = serve_in_tensorflow_only({"greedy": [str(greedy), [TEXTS[:1], TEXTS]],
                                       "beam": [str(beam), [TEXTS[:1], TEXTS]]}, cwd=tmp_path)
    for name, flags in (("greedy", ()), ("beam", ("--beam-size", "3"))):
        rows = infer_rows(t5, trained, tmp_path, *flags)
        assert len(rows) == 3
        assert_same(served[name][0], rows[:1])  # batch size 1
        assert_same(served[name][1], rows)  # batch size 3

    # the signature, as the README documents it
    cli = subprocess.run([str(Path(sys.executable).parent / "saved_model_cli"), "show",
                          "--dir", str(greedy), "--all"], capture_output=True, text=True,
                         timeout=120, env=python_env(TF_CPP_MIN_LOG_LEVEL="3"))
    assert cli.returncode == 0, cli.stderr[-2000:]
    show = cli.stdout
    serving = show[show.index("signature_def['serving_default']"):]
    for line in ("inputs['text_batch'] tensor_info:", "dtype: DT_STRING", "shape: (-1)",
                 "name: serving_default_text_batch:0",
                 "outputs['output'] tensor_info:", "outputs['scores'] tensor_info:",
                 "dtype: DT_FLOAT", "Method name is: tensorflow/serving/predict"):
        assert line in serving, show


@pytest.mark.slow
def test_saved_model_tokenized_inputs_and_reexport(trained, tmp_path, t5):
    import seqio

    from t5cli.runtime.infer import encode_texts

    # token ids in: exactly the encoder inputs `t5 infer` builds
    out = tmp_path / "tokenized"
    tok = export_saved_model(t5, trained, out, "--tokenized-inputs")
    ids = encode_texts(TEXTS, seqio.ByteVocabulary(), length=LENGTHS["inputs"]).tolist()
    served = serve_in_tensorflow_only({"ids": [str(tok), [ids[:1], ids]]}, cwd=tmp_path)
    rows = infer_rows(t5, trained, tmp_path)
    assert_same(served["ids"][0], rows[:1])
    assert_same(served["ids"][1], rows)

    # a second export of the same step replaces the version directory whole
    export_saved_model(t5, trained, out)
    info = json.loads((tok / "assets.extra" / "t5cli_export.json").read_text())
    assert info["inputs"] == "text"


def test_saved_model_refuses_a_bad_beam_size(trained, tmp_path, t5):
    r = t5("export", "--checkpoint", trained, "-o", tmp_path / "x", "--format", "saved_model",
           "--beam-size", "0")
    assert r.exit_code == 1 and "--beam-size" in r.err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


SERVE_SENTENCEPIECE = r'''
import json, sys
import tensorflow as tf
import tensorflow_text  # registers the SentencePiece ops the graph uses

serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
r = serve(text_batch=tf.constant(json.loads(sys.argv[2])))
assert "t5cli" not in sys.modules and "seqio" not in sys.modules
print(json.dumps([[o.decode("utf-8"), float(s)]
                  for o, s in zip(r["output"].numpy(), r["scores"].numpy())]))
'''


@pytest.mark.slow
def test_saved_model_carries_a_sentencepiece_vocabulary(tmp_path):
    """The SentencePiece model travels inside the graph; serving needs tensorflow_text."""
    pytest.importorskip("tensorflow_text")
    import jax
    import seqio

    from t5cli.models.configs import T5Config
    from t5cli.models.generate import predict_batch
    from t5cli.models.model import EncoderDecoderModel
    from t5cli.runtime.infer import encode_texts
    from t5cli.runtime.saved_model import write_saved_model

    sp_model = Path(seqio.__file__).parent / "test_data" / "sentencepiece" / "sentencepiece.model"
    if not sp_model.is_file():
        pytest.skip("seqio's test SentencePiece model is not installed")
    vocab = seqio.SentencePieceVocabulary(str(sp_model))
    config = T5Config(vocab_size=vocab.vocab_size, vocabulary=str(sp_model), dropout_rate=0.0,
                      **{k: v for k, v in TINY.items()})
    model = EncoderDecoderModel(config)
    params = model.init_params(jax.random.PRNGKey(1))
    texts = ["this is a test", "hello world"]
    tokens, scores = predict_batch(
        model, params, {"encoder_input_tokens": encode_texts(texts, model.vocabulary, length=12)},
        max_decode_length=8)
    want = [model.vocabulary.decode([int(x) for x in t]) for t in tokens]
    version = write_saved_model(model, params, tmp_path / "sp", version=0, input_length=12,
                                max_decode_length=8)
    proc = subprocess.run([sys.executable, "-c", SERVE_SENTENCEPIECE, str(version),
                           json.dumps(texts)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=python_env(TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [o for o, _ in served] == want
    np.testing.assert_allclose([s for _, s in served], scores, rtol=1e-5, atol=1e-5)
