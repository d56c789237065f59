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
