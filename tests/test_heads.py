"""Encoder-only heads: shapes, pad masking, and loading the encoder of a full model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5cli.models import heads
from t5cli.models.configs import get_config
from t5cli.models.model import EncoderDecoderModel

CONFIG = get_config("t5_1_1_tiny").replace(vocab_size=64, dropout_rate=0.0)
TOKENS = jnp.array([[5, 6, 7, 8, 1, 0, 0, 0], [9, 10, 1, 0, 0, 0, 0, 0]], jnp.int32)


@pytest.fixture(scope="module")
def full_params():
    return EncoderDecoderModel(CONFIG).init_params(jax.random.PRNGKey(0))


def _params(kind, num_labels=3):
    module = heads.make_head(kind, CONFIG, num_labels)
    return module, heads.init_head_params(module, jax.random.PRNGKey(1))


def test_encoder_tree_matches_encoder_decoder(full_params):
    module, params = _params("encoder")
    assert set(params) == {"token_embedder", "encoder"}
    same = jax.tree_util.tree_map(lambda a, b: a.shape == b.shape, params,
                                  heads.encoder_params(full_params))
    assert all(jax.tree_util.tree_leaves(same))
    assert sum(x.size for x in jax.tree_util.tree_leaves(params)) == CONFIG.encoder_param_count()


def test_loaded_encoder_gives_the_encoder_decoders_hidden_states(full_params):
    module, params = _params("encoder")
    params = heads.with_encoder_params(params, full_params)
    ours = module.apply({"params": params}, TOKENS)
    reference = EncoderDecoderModel(CONFIG).encode(full_params, TOKENS)
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_sequence_classifier_shape_and_pad_invariance(full_params):
    module, params = _params("sequence_classification")
    params = heads.with_encoder_params(params, full_params)
    logits = module.apply({"params": params}, TOKENS)
    assert logits.shape == (2, 3)
    # extra padding must not change the pooled logits
    padded = jnp.pad(TOKENS, ((0, 0), (0, 4)))
    np.testing.assert_allclose(module.apply({"params": params}, padded), logits, atol=1e-5)
    axes = heads.head_logical_axes(module)
    assert tuple(axes["classifier"]["kernel"]) == ("embed", None)


def test_token_classifier_and_dropout():
    module, params = _params("token_classification", num_labels=5)
    assert module.apply({"params": params}, TOKENS).shape == (2, 8, 5)
    drop = heads.make_head("token_classification", CONFIG.replace(dropout_rate=0.5), 5)
    a = drop.apply({"params": params}, TOKENS, enable_dropout=True,
                   rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(a, module.apply({"params": params}, TOKENS))


def test_question_answering_masks_padding():
    module, params = _params("question_answering")
    start, end = module.apply({"params": params}, TOKENS)
    assert start.shape == end.shape == (2, 8)
    assert np.all(np.asarray(start)[np.asarray(TOKENS) == 0] < -1e9)
    assert np.argmax(np.asarray(end)[1]) < 3


def test_mismatched_pretrained_params_and_unknown_head(full_params):
    _, params = _params("encoder")
    other = EncoderDecoderModel(CONFIG.replace(num_encoder_layers=1)).param_shapes()
    with pytest.raises(ValueError, match="encoder"):
        heads.with_encoder_params(params, other)
    with pytest.raises(ValueError, match="unknown head"):
        heads.make_head("nope", CONFIG)


# ---- head models, their losses, metrics and checks (t5cli.models.head_models, runtime.head_*) ----

def _batch(**extra):
    return dict({"encoder_input_tokens": TOKENS}, **extra)


def test_head_model_losses_match_hand_computed_cross_entropy():
    from t5cli.models.head_models import HeadModel

    model = HeadModel(CONFIG, "sequence_classification", 3)
    params = model.init_params(jax.random.PRNGKey(3))
    batch = _batch(label=jnp.array([2, 0]))
    sums = model.loss_sums(params, batch, loss_normalizing_factor="NUM_REAL_TARGET_TOKENS")
    logp = jax.nn.log_softmax(model.compute_logits(params, batch))
    assert float(sums["loss"] / sums["normalizer"]) == pytest.approx(-float(logp[0, 2] + logp[1, 0]) / 2, rel=1e-5)
    assert float(sums["weight_sum"]) == 2 and float(sums["correct"]) == float(
        (np.argmax(logp, -1) == np.array([2, 0])).sum())

    tagger = HeadModel(CONFIG, "token_classification", 4)
    tparams = tagger.init_params(jax.random.PRNGKey(4))
    labels = jnp.where(TOKENS > 0, 1, -100).at[0, 0].set(-100)  # an ignored real token
    sums = tagger.loss_sums(tparams, _batch(labels=labels))
    logp = jax.nn.log_softmax(tagger.compute_logits(tparams, _batch()))
    mask = np.asarray(labels) >= 0
    assert float(sums["weight_sum"]) == mask.sum() == 7
    assert float(sums["cross_ent_loss"]) == pytest.approx(-float(np.asarray(logp)[..., 1][mask].sum()), rel=1e-5)

    qa = HeadModel(CONFIG, "question_answering")
    qparams = qa.init_params(jax.random.PRNGKey(5))
    batch = _batch(start_position=jnp.array([1, 0]), end_position=jnp.array([2, 1]))
    sums = qa.loss_sums(qparams, batch)
    start, end = (jax.nn.log_softmax(x) for x in qa.compute_logits(qparams, batch))
    want = -(start[0, 1] + end[0, 2] + start[1, 0] + end[1, 1]) / 2
    assert float(sums["cross_ent_loss"]) == pytest.approx(float(want), rel=1e-5)


def test_classification_metrics_numbers():
    from t5cli.runtime.head_eval import classification_metrics

    m = classification_metrics([0, 1, 1, 0], [0, 1, 0, 0], 2)
    assert m["accuracy"] == 75.0
    assert m["f1"] == pytest.approx(200 / 3)  # label 1: precision 1, recall 1/2
    assert m["matthews_corrcoef"] == pytest.approx(100 * 2 / np.sqrt(12))
    three = classification_metrics([0, 1, 2, 2], [0, 1, 2, 2], 3)
    assert three == pytest.approx({"accuracy": 100.0, "f1": 100.0, "matthews_corrcoef": 100.0})


def test_entities_token_and_qa_metrics():
    from t5cli.runtime.head_eval import entity_metrics, qa_metrics
    from t5cli.runtime.head_predict import best_span, entities

    tags = ["O", "B-COUNT", "I-COUNT", "B-COUNT", "O", "I-YEAR"]
    assert entities(tags) == [(1, 2, "COUNT"), (3, 3, "COUNT"), (5, 5, "YEAR")]
    assert entities(["O", "PER", "PER", "LOC"]) == [(1, 2, "PER"), (3, 3, "LOC")]
    m = entity_metrics([tags], [["O", "B-COUNT", "I-COUNT", "O", "O", "O"]])
    assert m["token_accuracy"] == pytest.approx(100 * 4 / 6)
    assert (m["entity_precision"], m["entity_recall"]) == (100.0, pytest.approx(100 / 3))
    assert m["entity_f1"] == pytest.approx(50.0)
    q = qa_metrics(["three hundred", "The nine"], ["three hundred", "nine pears"])
    assert q["exact_match"] == 50.0 and q["f1"] == pytest.approx((100 + 100 * 2 / 3) / 2)
    start, end = np.array([0.0, 5.0, 1.0, 9.0]), np.array([7.0, 0.0, 3.0, -10.0])
    assert best_span(start, end, 4)[:2] == (1, 2)  # end may not precede start
    assert best_span(start, end, 4, max_tokens=1)[:2] == (0, 0)


def test_label_and_task_checks_are_one_line():
    from t5cli.errors import ConfigError, DataError
    from t5cli.runtime import head_data

    batch = {"encoder_input_tokens": np.asarray(TOKENS), "label": np.array([1, 5])}
    with pytest.raises(DataError, match=r"has label 5, outside --num-labels 2 .*pass --num-labels 6"):
        head_data.check_batch(batch, "sequence_classification", 2, "t", 8)
    head_data.check_batch({**batch, "label": np.array([1, 0])}, "sequence_classification", 2, "t", 8)
    tags = {"encoder_input_tokens": np.asarray(TOKENS), "labels": np.array([[0, 3, -100, 0, 0, 0, 0, 0]] * 2)}
    with pytest.raises(DataError, match="has label 3"):
        head_data.check_batch(tags, "token_classification", 3, "t", 8)
    spans = {"encoder_input_tokens": np.asarray(TOKENS), "start_position": np.array([0, 1]),
             "end_position": np.array([9, 1])}
    with pytest.raises(DataError, match="answer position 9 outside the 8 input tokens"):
        head_data.check_batch(spans, "question_answering", 2, "t", 8)

    class Task:
        name = "translate"
        output_features = {"inputs": None, "targets": None}

    with pytest.raises(ConfigError, match=r"task 'translate' has no 'label' feature \(its features: "
                                          r"inputs, targets\); a sequence_classification head needs"):
        head_data.check_head_task(Task, "sequence_classification")
    assert head_data.task_head(Task) is None and head_data.length_features(Task) == ["inputs", "targets"]


def test_encoder_of_hf_directories_and_mismatch(tmp_path, full_params):
    from t5cli.errors import CheckpointError
    from t5cli.models.hf import export_hf
    from t5cli.runtime.head_checkpoints import check_encoder, load_encoder

    byte_config = CONFIG.replace(vocab_size=384, vocabulary="byte", family="byt5")
    params = EncoderDecoderModel(byte_config).init_params(jax.random.PRNGKey(7))
    export_hf(byte_config, params, str(tmp_path / "full"))
    init = load_encoder(None, tmp_path / "full")
    same = jax.tree_util.tree_map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                                  init.params, heads.encoder_params(params))
    assert all(jax.tree_util.tree_leaves(same))
    check_encoder(init, init.config)
    with pytest.raises(CheckpointError, match=r"the encoder of .*full does not match model 'x': .*layers_2"):
        check_encoder(init, init.config.replace(num_encoder_layers=3, name="x"))


def test_documented_head_task_example_builds_a_head_task():
    import re

    from conftest import REPO
    from t5cli.runtime import head_data

    doc = (REPO / "docs" / "plugins.md").read_text()
    section = re.search(r"^## Tasks for encoder-only heads\n(.*?)(?=^## |\Z)", doc, re.S | re.M).group(1)
    namespace = {}
    exec(re.search(r"```python\n(.*?)```", section, re.S).group(1), namespace)
    task = namespace["build_sentiment_task"]()
    assert head_data.task_head(task) == "sequence_classification"
    assert head_data.label_names(task, "sequence_classification", None) == ["negative", "positive"]
    assert head_data.length_features(task) == ["inputs"]
