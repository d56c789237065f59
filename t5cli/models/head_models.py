"""Encoder-only head models with the interface the training code uses (like
``EncoderDecoderModel``: ``init_params``, ``param_axes``, ``compute_logits``), plus the
loss each head trains with (``loss_sums``, the sums :func:`t5cli.runtime.losses.loss_sums`
returns, so the train step, the summaries and the training eval stay one code path).

Losses, as in FAT5 / Hugging Face: cross-entropy over examples (sequence classification),
over tokens whose label is not negative (token classification), and the mean of the
start and end cross-entropies (question answering). ``weight_sum`` counts examples (or
labelled tokens), ``correct`` the right predictions (for QA: both ends right).
"""

from __future__ import annotations

import functools
from typing import Any, Dict, List, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5cli.models import heads
from t5cli.models.configs import T5Config
from t5cli.models.model import ParameterShapes

Params = Any


class HeadModel(ParameterShapes):
    """A T5 encoder with a task head: config, linen module, label names, pure functions."""

    pad_id = 0

    def __init__(self, config: T5Config, head: str, num_labels: Optional[int] = None,
                 label_names: Optional[Sequence[str]] = None):
        if head not in heads.HEADS or head == "encoder":
            raise ValueError(f"unknown head {head!r}")
        self.config = config
        self.head = head
        if head == "question_answering":
            num_labels = 2
        self.label_names: List[str] = [str(n) for n in (label_names or [])]
        self.num_labels = int(num_labels or len(self.label_names) or 2)
        if not self.label_names:
            self.label_names = [str(i) for i in range(self.num_labels)]
        self.module = heads.make_head(head, config, self.num_labels)
        self._vocabulary = None

    def __repr__(self) -> str:
        return f"HeadModel({self.config.name}, {self.head}, num_labels={self.num_labels})"

    def describe(self) -> Dict[str, Any]:
        """What the run record keeps to rebuild this model (:func:`from_record`)."""
        return {"head": self.head, "num_labels": self.num_labels, "label_names": self.label_names,
                "model_config": self.config.to_dict()}

    @property
    def vocabulary(self):
        if self._vocabulary is None:
            self._vocabulary = self.config.build_vocabulary()
        return self._vocabulary

    # ---------------------------------------------------------------- parameters
    def _init_fn(self, batch_size: int, input_length: int):
        tokens = jnp.ones((batch_size, input_length), jnp.int32)
        return lambda rng: self.module.init({"params": rng}, tokens)["params"]

    def init_params(self, rng, batch_size: int = 1, input_length: int = 8) -> Params:
        """Randomly initialised float32 params (plain arrays)."""
        return nn.unbox(jax.jit(self._init_fn(batch_size, input_length))(rng))

    def boxed_param_shapes(self) -> Params:
        return jax.eval_shape(self._init_fn(1, 1), jax.random.PRNGKey(0))


    # ---------------------------------------------------------------- forward and loss
    def compute_logits(self, params: Params, batch: Mapping[str, jnp.ndarray], dropout_rng=None):
        """The head's float32 logits ([B, labels], [B, L, labels] or (start, end) [B, L])."""
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
        return self.module.apply({"params": params}, batch["encoder_input_tokens"],
                                 enable_dropout=dropout_rng is not None, rngs=rngs)

    def loss_sums(self, params: Params, batch: Mapping[str, jnp.ndarray], dropout_rng=None, *,
                  label_smoothing: float = 0.0, z_loss: float = 0.0,
                  loss_normalizing_factor=None) -> Dict[str, jnp.ndarray]:
        """The keys of :func:`t5cli.runtime.losses.loss_sums` for this head's loss.

        Label smoothing and z-loss apply as for the encoder-decoder; the normalizer is the
        number of examples (or labelled tokens) unless ``loss_normalizing_factor`` is a
        number or None (then the train step divides by that constant).
        """
        from t5cli.runtime.losses import token_losses

        logits = self.compute_logits(params, batch, dropout_rng)
        real = jnp.any(batch["encoder_input_tokens"] > 0, axis=-1)
        if self.head == "question_answering":
            parts = []
            for name, lg in zip(("start_position", "end_position"), logits):
                parts.append(token_losses(lg, jnp.clip(batch[name], 0, lg.shape[-1] - 1),
                                          label_smoothing=label_smoothing, z_loss=z_loss))
            loss = (parts[0][0] + parts[1][0]) / 2
            z_part = (parts[0][1] + parts[1][1]) / 2
            correct = parts[0][2] & parts[1][2]
            weights = real.astype(jnp.float32)
        else:
            if self.head == "sequence_classification":
                targets, weights = batch["label"], real.astype(jnp.float32)
            else:
                targets = batch["labels"]
                weights = ((targets >= 0) & (batch["encoder_input_tokens"] > 0)).astype(jnp.float32)
            loss, z_part, correct = token_losses(logits, jnp.clip(targets, 0, self.num_labels - 1),
                                                 label_smoothing=label_smoothing, z_loss=z_loss)
        if isinstance(loss_normalizing_factor, (int, float)) or loss_normalizing_factor is None:
            normalizer = jnp.asarray(1.0 if loss_normalizing_factor is None else float(loss_normalizing_factor))
        elif loss_normalizing_factor == "NUM_TOTAL_TARGET_TOKENS":
            normalizer = jnp.asarray(weights.size, jnp.float32)
        else:  # NUM_REAL_TARGET_TOKENS, AVERAGE_PER_SEQUENCE: per example (or labelled token)
            normalizer = jnp.sum(weights)
        return {
            "loss": jnp.sum(loss * weights),
            "normalizer": normalizer,
            "z_loss": jnp.sum(z_part * weights),
            "cross_ent_loss": jnp.sum((loss - z_part) * weights),
            "unweighted_loss": jnp.sum(loss * weights),
            "weight_sum": jnp.sum(weights),
            "correct": jnp.sum(correct * weights),
            "total_tokens": jnp.asarray(weights.size, jnp.float32),
        }


def from_record(head_record: Mapping[str, Any]) -> HeadModel:
    """The :class:`HeadModel` a run record's ``head`` entry describes."""
    return head_model_for(T5Config.from_dict(dict(head_record["model_config"])), head_record["head"],
                          int(head_record["num_labels"]), tuple(head_record.get("label_names") or ()))


@functools.lru_cache(maxsize=None)
def head_model_for(config: T5Config, head: str, num_labels: int, label_names: tuple = ()) -> HeadModel:
    """A shared HeadModel per (config, head, labels): compiled functions are reused."""
    return HeadModel(config, head, num_labels, list(label_names))


__all__ = ["HeadModel", "from_record", "head_model_for"]
