"""Encoder-only T5 models: hidden states, sequence/token classification, extractive QA.

Each module reuses ``network.Encoder`` under the same names as the encoder-decoder
(``token_embedder/...``, ``encoder/...``), so the encoder half of any T5 checkpoint (ours,
or ``hf.import_hf(dir, encoder_only=True)``) loads into it with ``with_encoder_params``.
Head weights (``classifier``, ``qa_outputs``) have a bias and replicate their label axis.
Token id 0 is padding.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5cli.models.configs import T5Config
from t5cli.models.network import NEG_INF, Dropout, Embed, Encoder, _dtype


class _Linear(nn.Module):
    """Dense layer with bias for task heads (the label axis is not sharded)."""

    features: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.with_logical_partitioning(
            nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"), ("embed", None)),
            (x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
                          (self.features,), jnp.float32)
        return jnp.dot(x.astype(jnp.float32), kernel) + bias


class EncoderModel(nn.Module):
    """The T5 encoder alone: returns hidden states [B, L, emb]."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.token_embedder = Embed(cfg.vocab_size, cfg.emb_dim, _dtype(cfg))
        self.encoder = Encoder(cfg, self.token_embedder)

    def encode(self, encoder_input_tokens, encoder_segment_ids=None, encoder_positions=None,
               enable_dropout=False):
        return self.encoder(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                            deterministic=not enable_dropout)

    def __call__(self, encoder_input_tokens, encoder_segment_ids=None, encoder_positions=None,
                 enable_dropout=False):
        return self.encode(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                           enable_dropout)


class SequenceClassifier(EncoderModel):
    """Mean of the non-pad hidden states -> dropout -> dense: logits [B, num_labels]."""

    num_labels: int = 2

    def setup(self):
        super().setup()
        self.dropout = Dropout(self.config.dropout_rate, self.config.kernels)
        self.classifier = _Linear(self.num_labels)

    def __call__(self, encoder_input_tokens, encoder_segment_ids=None, encoder_positions=None,
                 enable_dropout=False):
        hidden = self.encode(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                             enable_dropout).astype(jnp.float32)
        valid = (encoder_input_tokens > 0).astype(jnp.float32)[..., None]
        pooled = (hidden * valid).sum(axis=1) / jnp.maximum(valid.sum(axis=1), 1.0)
        pooled = self.dropout(pooled, deterministic=not enable_dropout)
        return self.classifier(pooled)


class TokenClassifier(EncoderModel):
    """Per-token logits [B, L, num_labels]."""

    num_labels: int = 2

    def setup(self):
        super().setup()
        self.dropout = Dropout(self.config.dropout_rate, self.config.kernels)
        self.classifier = _Linear(self.num_labels)

    def __call__(self, encoder_input_tokens, encoder_segment_ids=None, encoder_positions=None,
                 enable_dropout=False):
        hidden = self.encode(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                             enable_dropout)
        hidden = self.dropout(hidden, deterministic=not enable_dropout)
        return self.classifier(hidden)


class QuestionAnswerer(EncoderModel):
    """Extractive QA: ``(start_logits, end_logits)``, each [B, L], pad positions at -1e10."""

    def setup(self):
        super().setup()
        self.qa_outputs = _Linear(2)

    def __call__(self, encoder_input_tokens, encoder_segment_ids=None, encoder_positions=None,
                 enable_dropout=False):
        hidden = self.encode(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                             enable_dropout)
        logits = self.qa_outputs(hidden)
        logits = jnp.where((encoder_input_tokens > 0)[..., None], logits, NEG_INF)
        return logits[..., 0], logits[..., 1]


HEADS = {
    "encoder": EncoderModel,
    "sequence_classification": SequenceClassifier,
    "token_classification": TokenClassifier,
    "question_answering": QuestionAnswerer,
}


def make_head(kind: str, config: T5Config, num_labels: Optional[int] = None) -> nn.Module:
    """Build the head called ``kind`` (a key of ``HEADS``)."""
    try:
        cls = HEADS[kind]
    except KeyError:
        raise ValueError(f"unknown head {kind!r}; choose from {sorted(HEADS)}") from None
    if cls in (SequenceClassifier, TokenClassifier):
        return cls(config, num_labels=num_labels or 2)
    return cls(config)


def init_head_params(module: nn.Module, rng, length: int = 8) -> Dict[str, Any]:
    """Random float32 params for a head module (unboxed)."""
    tokens = jnp.ones((1, length), jnp.int32)
    return nn.unbox(jax.jit(module.init)({"params": rng}, tokens)["params"])


def head_logical_axes(module: nn.Module) -> Dict[str, Any]:
    """Logical-axis ``PartitionSpec`` per parameter of a head module."""
    tokens = jnp.ones((1, 1), jnp.int32)
    shapes = jax.eval_shape(lambda: module.init({"params": jax.random.PRNGKey(0)}, tokens))
    return nn.get_partition_spec(shapes["params"])


def encoder_params(params: Dict[str, Any]) -> Dict[str, Any]:
    """The ``token_embedder`` and ``encoder`` subtrees of a full (or encoder) param tree."""
    return {"token_embedder": params["token_embedder"], "encoder": params["encoder"]}


def with_encoder_params(head_params: Dict[str, Any], pretrained: Dict[str, Any]) -> Dict[str, Any]:
    """``head_params`` with the embedder and encoder replaced by ``pretrained``'s."""
    out = dict(head_params)
    for key, value in encoder_params(pretrained).items():
        mine = jax.tree_util.tree_structure(out[key])
        theirs = jax.tree_util.tree_structure(value)
        if mine != theirs:
            raise ValueError(f"pretrained {key!r} params do not match the head's config")
        out[key] = value
    return out
