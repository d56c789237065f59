"""`t5 export`: an HF directory transformers loads (same logits), Flax params, and a
jax.export decoder that decodes like the model; the HF export runs in `t5 infer` too."""

from __future__ import annotations

import json

import numpy as np
import pytest

TASK = "number_words_en_de_999"
TINY = dict(emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_encoder_layers=1,
            num_decoder_layers=1)
LENGTHS = {"inputs": 16, "targets": 12}
WORDS = ["seven", "forty-two"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from t5cli.runtime import optim
    from t5cli.runtime.train import train

    model_dir = tmp_path_factory.mktemp("run") / "model"
    train(model_dir=str(model_dir), mixture_or_task_name=TASK, model_name="byt5_tiny",
          model_overrides=TINY, task_feature_lengths=LENGTHS, total_steps=6, batch_size=8,
          dropout_rate=0.0, learning_rate_schedule=optim.constant_schedule(base_learning_rate=0.01),
          checkpoint_period=None, eval_period=None, log_period=6)
    return model_dir


@pytest.fixture(scope="module")
def loaded(trained):
    from t5cli.runtime.model_loading import load_model
    from t5cli.plugins import load_runtime

    return load_model(load_runtime(), str(trained))


def encoded(length=LENGTHS["inputs"]):
    import seqio

    from t5cli.runtime.infer import encode_texts

    return encode_texts(WORDS, seqio.ByteVocabulary(), length=length)


def test_hf_export_loads_in_transformers_with_equal_logits(trained, loaded, tmp_path, t5):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "hf"
    r = t5("export", "--checkpoint", trained, "-o", out)
    assert r.exit_code == 0, r.err
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors"}
    assert json.loads((out / "config.json").read_text())["d_model"] == TINY["emb_dim"]
    hf = transformers.T5ForConditionalGeneration.from_pretrained(str(out)).eval()

    enc = encoded()
    dec_target = np.array([[30, 40, 50, 1, 0, 0], [60, 70, 1, 0, 0, 0]], np.int32)
    dec_input = np.concatenate([np.zeros((2, 1), np.int32), dec_target[:, :-1]], axis=1)
    ours = np.asarray(loaded.model.compute_logits(loaded.params, {
        "encoder_input_tokens": enc, "decoder_input_tokens": dec_input,
        "decoder_target_tokens": dec_target}))
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(enc).long(), attention_mask=torch.tensor(enc > 0).long(),
                    decoder_input_ids=torch.tensor(dec_input).long()).logits.numpy()
    mask = dec_target > 0  # positions after EOS differ only by padding conventions
    np.testing.assert_allclose(ours[mask], theirs[mask], atol=2e-4, rtol=1e-4)

    # the HF directory is a checkpoint for `t5 infer` too (no run record: lengths given)
    words = tmp_path / "words.txt"
    words.write_text("\n".join(WORDS) + "\n")
    r_hf = t5("infer", "--checkpoint", out, "--input", words, "--feature-lengths", "targets=12")
    r_own = t5("infer", "--checkpoint", trained, "--input", words, "--feature-lengths", "targets=12")
    assert r_hf.exit_code == 0 and r_own.exit_code == 0, r_hf.err + r_own.err
    preds = lambda r: [json.loads(x)["prediction"] for x in r.out.splitlines() if x.startswith("{")]
    assert preds(r_hf) == preds(r_own) and len(preds(r_own)) == 2


def test_flax_and_jax_exports_roundtrip(trained, loaded, tmp_path, t5):
    import jax

    from t5cli.models.flax_dir import read_flax_dir
    from t5cli.runtime.export import load_exported
    from t5cli.models.generate import predict_batch

    out = tmp_path / "exports"
    r = t5("export", "--checkpoint", trained, "-o", out, "--format", "flax", "--format", "jax",
           "--batch-size", "2")
    assert r.exit_code == 0, r.err
    config, params = read_flax_dir(str(out / "flax"))
    assert config == loaded.model.config
    flat_a = jax.tree_util.tree_leaves(params)
    flat_b = jax.tree_util.tree_leaves(loaded.params)
    assert len(flat_a) == len(flat_b) and all(np.array_equal(a, b) for a, b in zip(flat_a, flat_b))

    decoder = load_exported(out / "jax")
    assert decoder.signature["input_length"] == LENGTHS["inputs"]
    tokens, scores = decoder(encoded())
    want_tokens, want_scores = predict_batch(loaded.model, loaded.params,
                                             {"encoder_input_tokens": encoded()},
                                             max_decode_length=LENGTHS["targets"])
    np.testing.assert_array_equal(tokens, want_tokens)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="int32"):
        decoder(np.zeros((3, LENGTHS["inputs"]), np.int32))


def test_export_refuses_a_model_dir_as_output(trained, t5):
    r = t5("export", "--checkpoint", trained, "-o", trained)
    assert r.exit_code == 1 and "holds checkpoints" in r.err
