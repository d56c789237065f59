"""The model wrapper: what training, evaluation and decoding call (T5X's model/network split).

All methods are pure functions of their arguments (params, cache, batch) and can be
wrapped in ``jax.jit`` by the caller; none of them jit internally except ``init_params``.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5cli.models.configs import T5Config
from t5cli.models.network import Transformer, vocab_logits, vocab_projection

PAD_ID = 0
EOS_ID = 1
DECODER_START_ID = 0

Params = Any


class ParameterShapes:
    """Shapes and logical axes of a model's parameters, from its ``boxed_param_shapes()``
    (abstract params still wrapped in ``nn.LogicallyPartitioned``)."""

    def boxed_param_shapes(self) -> Params:
        raise NotImplementedError

    def param_shapes(self) -> Params:
        """``jax.ShapeDtypeStruct`` per parameter, without materialising them."""
        return nn.unbox(self.boxed_param_shapes())

    def logical_axes(self) -> Params:
        """A ``PartitionSpec`` of logical axis names per parameter (e.g. ('vocab', 'embed'))."""
        return nn.get_partition_spec(self.boxed_param_shapes())

    def param_axes(self, params: Optional[Params] = None) -> Params:
        """Same as ``logical_axes``; ``params`` is accepted for T5X-style call sites."""
        del params
        return self.logical_axes()


class EncoderDecoderModel(ParameterShapes):
    """A T5 encoder-decoder: config, linen module, vocabulary and pure apply functions."""

    pad_id = PAD_ID
    eos_id = EOS_ID
    decoder_start_token_id = DECODER_START_ID

    def __init__(self, config: T5Config):
        self.config = config
        self.module = Transformer(config)
        self._vocabulary = None

    def __repr__(self) -> str:
        return f"EncoderDecoderModel({self.config.name})"

    @property
    def vocabulary(self):
        """The seqio vocabulary (built on first use; imports seqio)."""
        if self._vocabulary is None:
            self._vocabulary = self.config.build_vocabulary()
        return self._vocabulary

    # ---------------------------------------------------------------- parameters
    def _init_fn(self, batch_size: int, input_length: int, target_length: int):
        enc = jnp.ones((batch_size, input_length), jnp.int32)
        dec = jnp.ones((batch_size, target_length), jnp.int32)

        def init(rng):
            return self.module.init({"params": rng}, enc, dec, dec, enable_dropout=False)["params"]

        return init

    def init_params(self, rng, batch_size: int = 1, input_length: int = 8,
                    target_length: int = 8) -> Params:
        """Randomly initialised float32 params (plain arrays, no partitioning boxes)."""
        return nn.unbox(jax.jit(self._init_fn(batch_size, input_length, target_length))(rng))

    def boxed_param_shapes(self) -> Params:
        """Abstract params still wrapped in ``nn.LogicallyPartitioned`` (no memory used)."""
        return jax.eval_shape(self._init_fn(1, 1, 1), jax.random.PRNGKey(0))


    # ---------------------------------------------------------------- training / scoring
    def compute_logits(self, params: Params, batch: Mapping[str, jnp.ndarray],
                       dropout_rng=None) -> jnp.ndarray:
        """Float32 logits [B, L, V] for an EncDecFeatureConverter batch; dropout iff rng."""
        return self._forward(params, batch, dropout_rng, project=True)

    def _forward(self, params: Params, batch: Mapping[str, jnp.ndarray], dropout_rng, project: bool):
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
        return self.module.apply(
            {"params": params},
            batch["encoder_input_tokens"],
            batch["decoder_input_tokens"],
            batch["decoder_target_tokens"],
            encoder_segment_ids=batch.get("encoder_segment_ids"),
            decoder_segment_ids=batch.get("decoder_segment_ids"),
            encoder_positions=batch.get("encoder_positions"),
            decoder_positions=batch.get("decoder_positions"),
            enable_dropout=dropout_rng is not None,
            project=project,
            rngs=rngs,
        )

    def loss_sums(self, params: Params, batch: Mapping[str, jnp.ndarray], dropout_rng=None,
                  **loss_args) -> Mapping[str, jnp.ndarray]:
        """:func:`t5cli.runtime.losses.loss_sums` of this model's logits on ``batch``,
        computed from the decoder's last hidden states a chunk of positions at a time
        (:func:`t5cli.runtime.losses.projected_loss_sums`): the whole [B, L, V] logits and
        their gradient never exist. ``loss_args`` are ``loss_sums``'s keywords."""
        from t5cli.runtime.losses import projected_loss_sums

        hidden = self._forward(params, batch, dropout_rng, project=False)
        project = functools.partial(vocab_logits, self.config)
        return projected_loss_sums(project, vocab_projection(self.config, params), hidden, batch, **loss_args)

    # ---------------------------------------------------------------- decoding
    def encode(self, params: Params, encoder_input_tokens, encoder_segment_ids=None,
               encoder_positions=None) -> jnp.ndarray:
        """Encoder hidden states [B, L_in, emb] (no dropout)."""
        return self.module.apply({"params": params}, encoder_input_tokens, encoder_segment_ids,
                                 encoder_positions, enable_dropout=False,
                                 method=Transformer.encode)

    def init_cache(self, batch_size: int, max_decode_length: int) -> Params:
        """A zero KV cache for ``max_decode_length`` steps; every leaf leads with batch."""
        enc = jnp.ones((batch_size, 1), jnp.int32)
        dec = jnp.ones((batch_size, max_decode_length), jnp.int32)

        def init():
            return self.module.init({"params": jax.random.PRNGKey(0)}, enc, dec, dec,
                                    enable_dropout=False, decode=True)["cache"]

        shapes = jax.eval_shape(init)
        return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def decode_step(self, params: Params, cache: Params, encoded, encoder_input_tokens,
                    token_ids) -> Tuple[jnp.ndarray, Params]:
        """One decoder step: ``token_ids`` [B, 1] -> (float32 logits [B, V], new cache)."""
        logits, mutated = self.module.apply(
            {"params": params, "cache": cache}, encoded, encoder_input_tokens, token_ids,
            enable_dropout=False, decode=True, mutable=["cache"], method=Transformer.decode)
        return logits[:, 0, :], mutated["cache"]

    def decode_full(self, params: Params, encoded, encoder_input_tokens, decoder_input_tokens,
                    decoder_target_tokens=None) -> jnp.ndarray:
        """Teacher-forced decoder logits [B, L, V] without a cache (no dropout)."""
        return self.module.apply({"params": params}, encoded, encoder_input_tokens,
                                 decoder_input_tokens, decoder_target_tokens,
                                 enable_dropout=False, method=Transformer.decode)


@functools.lru_cache(maxsize=None)
def model_for(config: T5Config) -> EncoderDecoderModel:
    """A shared ``EncoderDecoderModel`` per config (configs are frozen, hence hashable)."""
    return EncoderDecoderModel(config)
