"""`t5 infer --input` tokenizes with the run's recorded vocabularies, without TensorFlow,
exactly as seqio's vocabularies do."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import SHARED_DATA, python_env

TOY = SHARED_DATA / "toy-ende" / "src-train.txt"
TEXTS = ["three hundred and twelve", "drei­hundert zwölf — ü €", "", "a <extra_id_0> b", "  spaces  "]


def _ids_cases(size):
    return [[5, 6, 7], [5, 1, 9, 9], [250, 258, 259, 300, 7], [0, 0, 4], [size - 1, size + 5, 3, 1]]


def test_byte_vocab_matches_seqio():
    import seqio

    from t5cli.models import light_vocab

    for extra in (0, 10):
        ours = light_vocab.build(light_vocab.describe(seqio.ByteVocabulary(extra_ids=extra)))
        theirs = seqio.ByteVocabulary(extra_ids=extra)
        for text in TEXTS:
            assert ours.encode(text) == list(theirs.encode(text))
        for ids in _ids_cases(theirs.vocab_size) + [list(theirs.encode(t)) for t in TEXTS]:
            assert ours.decode(ids) == theirs.decode(ids), ids


@pytest.mark.skipif(not TOY.is_file(), reason="../shared/data/toy-ende is absent")
def test_sentencepiece_vocab_matches_seqio(tmp_path):
    import seqio
    import sentencepiece

    from t5cli.models import light_vocab

    sentencepiece.SentencePieceTrainer.train(
        input=str(TOY), model_prefix=str(tmp_path / "sp"), vocab_size=300, pad_id=0, eos_id=1,
        unk_id=2, bos_id=-1, input_sentence_size=2000, minloglevel=2)
    model_file = str(tmp_path / "sp.model")
    for extra, reverse in ((0, True), (5, True), (5, False)):
        theirs = seqio.SentencePieceVocabulary(model_file, extra_ids=extra, reverse_extra_ids=reverse)
        spec = light_vocab.describe(theirs)
        assert spec["kind"] == "sentencepiece"
        ours = light_vocab.build(json.loads(json.dumps(spec)))
        assert ours.vocab_size == theirs.vocab_size
        for text in TEXTS + ["a <extra_id_1> b <extra_id_4>"]:
            assert ours.encode(text) == list(theirs.encode(text)), text
        for ids in _ids_cases(theirs.vocab_size) + [list(theirs.encode(t)) for t in TEXTS]:
            assert ours.decode(ids) == theirs.decode(ids), ids
    # a vocabulary it cannot rebuild is not described
    assert light_vocab.describe(seqio.PassThroughVocabulary(size=10)) is None
    assert light_vocab.build({"kind": "sentencepiece", "path": str(tmp_path / "gone.model")}) is None


def test_text_infer_without_tensorflow(tmp_path):
    """A run records its vocabularies; `t5 infer --input -` then never imports TensorFlow
    and decodes exactly as with the task's seqio vocabularies."""
    from t5cli.plugins import load_runtime
    from t5cli.runtime.infer import infer
    from t5cli.runtime.train import train

    model_dir = tmp_path / "m"
    train(model_dir=str(model_dir), mixture_or_task_name="number_words_en_de_999", model_name="byt5_tiny",
          model_overrides=dict(emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_encoder_layers=1,
                               num_decoder_layers=1),
          task_feature_lengths={"inputs": 32, "targets": 32}, total_steps=2, batch_size=8,
          checkpoint_period=2, eval_period=None, infer_eval_period=0, runtime=load_runtime())
    record = json.loads((model_dir / "t5cli_run.json").read_text())
    assert record["train"]["vocabularies"]["targets"] == {"kind": "byte", "extra_ids": 0}

    texts = ["three hundred and twelve", "forty-two"]
    script = ("import sys\nfrom t5cli.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
              "    code = e.code\nprint('TF', 'tensorflow' in sys.modules, 'seqio' in sys.modules, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", script, "infer", "--checkpoint", str(model_dir), "--input", "-",
                        "--feature-lengths", "targets=8"],
                       input="\n".join(texts) + "\n", capture_output=True, text=True, timeout=300,
                       env=python_env(T5CLI_CACHE_DIR=str(tmp_path / "cache")))
    assert r.returncode == 0, r.stderr
    assert "TF False False" in r.stderr, r.stderr
    light = [json.loads(line) for line in r.stdout.splitlines()]
    # the same decode through the task's seqio vocabularies
    seqio_rows = infer(checkpoint_path=str(model_dir), inputs=texts, mixture_or_task_name="number_words_en_de_999",
                       task_feature_lengths={"targets": 8}, output=str(tmp_path / "o.jsonl")).records
    assert [(x["inputs"], x["prediction"]) for x in light] == [(x["inputs"], x["prediction"]) for x in seqio_rows]
    assert [x["score"] for x in light] == pytest.approx([x["score"] for x in seqio_rows], rel=1e-5)
