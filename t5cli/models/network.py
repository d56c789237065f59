"""The T5 encoder-decoder (T5 1.0, 1.1, mT5, ByT5) as a Flax linen module.

Why linen rather than NNX: the parameter tree and the logical-axis tooling we rely on
(``nn.with_logical_partitioning``, ``nn.get_partition_spec``,
``nn.logical_to_mesh_sharding``) are linen-native, the tree matches T5X checkpoints
name for name, and ``Module.apply`` is a pure function that drops straight into jit'd,
pure train and decode steps.

Architecture: pre-norm RMSNorm (no bias, eps 1e-6, float32), no biases anywhere, no
1/sqrt(d_k) attention scaling (folded into the query initialiser), one relative-position
bias table per stack shared by all its layers (bidirectional in the encoder, causal in the
decoder), T5 1.0 ReLU MLP with logits from the tied embedding (decoder output scaled by
emb_dim**-0.5), or gated-GELU with an untied ``logits_dense``. Parameters are float32;
activations use ``config.dtype``; logits are float32.

Written once in plain JAX. The few computations a backend may do its own way (dense
products, the embedding lookup, the MLP's gated activation, the norm scale, attention
scores and bias, how attention covers the batch, dropout's random bits) go through ``kernel_ops(config.kernels)``, the kernel set that
:mod:`t5cli.models.kernels` chooses; every module takes that choice as its ``kernels``
field. Kernel sets agree in value (dropout masks aside: each set draws its own), so the
choice changes neither the parameter tree nor what a checkpoint means.

Parameter tree (T5X names)::

  token_embedder/embedding                          [vocab, embed]
  encoder/relpos_bias/rel_embedding                 [heads, relpos_buckets]
  encoder/layers_N/pre_attention_layer_norm/scale   [embed]
  encoder/layers_N/attention/{query,key,value}/kernel [embed, joined_kv]
  encoder/layers_N/attention/out/kernel             [joined_kv, embed]
  encoder/layers_N/pre_mlp_layer_norm/scale
  encoder/layers_N/mlp/{wi_0,wi_1}/kernel           [embed, mlp]   (T5 1.0: mlp/wi)
  encoder/layers_N/mlp/wo/kernel                    [mlp, embed]
  encoder/encoder_norm/scale
  decoder/relpos_bias/rel_embedding
  decoder/layers_N/{pre_self_attention_layer_norm, self_attention,
                    pre_cross_attention_layer_norm, encoder_decoder_attention,
                    pre_mlp_layer_norm, mlp}
  decoder/decoder_norm/scale
  decoder/logits_dense/kernel                       [embed, vocab]  (untied only)

Every parameter is boxed with ``nn.with_logical_partitioning`` using the logical names
shown in brackets (``joined_kv`` is heads*head_dim).

DECODE API (the contract decoding.py / generate.py rely on)
-----------------------------------------------------------
``Transformer(config)`` methods (call through ``module.apply(..., method=...)``):

* ``encode(encoder_input_tokens, encoder_segment_ids=None, encoder_positions=None,
  enable_dropout=False) -> encoded [B, L_in, emb]`` (activation dtype).
* ``decode(encoded, encoder_input_tokens, decoder_input_tokens,
  decoder_target_tokens=None, encoder_segment_ids=None, decoder_segment_ids=None,
  decoder_positions=None, enable_dropout=False, decode=False, max_decode_length=None,
  project=True) -> logits [B, L, V] float32``; ``project=False`` gives the last hidden
  states instead, from which ``vocab_logits(config, vocab_projection(config, params), x)``
  makes the same logits (training computes its loss that way, a chunk at a time).
* ``__call__(encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
  encoder_segment_ids=None, decoder_segment_ids=None, encoder_positions=None,
  decoder_positions=None, enable_dropout=True, decode=False, max_decode_length=None)``.

Token id 0 is padding (and the decoder start token); masks derive from ``tokens > 0``
(encoder) and ``decoder_target_tokens > 0`` (decoder queries; all valid when omitted).
Packed batches (seqio's EncDecFeatureConverter with pack=True) pass ``*_segment_ids``
and ``*_positions``; attention never crosses segments and relative positions come from
the given positions.

KV cache (collection ``"cache"``), for one token per call:

* Create it by calling ``init``/``apply`` with ``decode=True`` and
  ``decoder_input_tokens`` of shape ``[B, max_decode_length]``: this makes zero caches of
  that length (``EncoderDecoderModel.init_cache`` does it via ``jax.eval_shape``).
* Then each ``decode(..., decoder_input_tokens=[B, 1], decode=True)`` with
  ``mutable=["cache"]`` writes the step's key/value at each example's cache index,
  attends to positions ``<= index``, uses relative position ``index`` for the query, and
  increments the index. The encoder-decoder attention recomputes keys/values from
  ``encoded`` every step (no cross-attention cache).
* Every cache leaf has a leading batch dimension: ``decoder/cache_index`` is int32 [B];
  ``decoder/layers_N/self_attention/cached_{key,value}`` are [B, max_len, heads, head_dim].
  Beam search can therefore repeat or gather the cache along axis 0 with a plain
  ``jax.tree_util.tree_map``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5cli.models.configs import T5Config
from t5cli.models.kernels import ops as kernel_ops

NEG_INF = -1e10  # added to masked attention logits (float32)

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": functools.partial(jax.nn.gelu, approximate=True),  # T5X / HF "gelu_new"
    "gelu_exact": functools.partial(jax.nn.gelu, approximate=False),
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "linear": lambda x: x,
}

_fan_in_normal = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
_fan_in_truncated = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def _boxed(init, axes):
    return nn.with_logical_partitioning(init, axes)


# --------------------------------------------------------------------------- layers
class Embed(nn.Module):
    """Token embedding looked up by gather (the tied logits use it too: :func:`vocab_logits`)."""

    num_embeddings: int
    features: int
    dtype: Any = jnp.float32
    kernels: str = "auto"

    def setup(self):
        self.embedding = self.param(
            "embedding", _boxed(nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
            (self.num_embeddings, self.features), jnp.float32)

    def __call__(self, ids):
        return kernel_ops(self.kernels).lookup(self.embedding, ids).astype(self.dtype)


class Dense(nn.Module):
    """Bias-free dense layer with a float32, logically-partitioned kernel."""

    features: int
    axes: tuple
    dtype: Any = jnp.float32
    kernel_init: Any = _fan_in_truncated
    kernels: str = "auto"

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", _boxed(self.kernel_init, self.axes),
                            (x.shape[-1], self.features), jnp.float32)
        return kernel_ops(self.kernels).dense(x.astype(self.dtype), kernel.astype(self.dtype))


class LogitsKernel(nn.Module):
    """The untied output projection ``logits_dense/kernel`` [embed, vocab] of T5 1.1 (the
    products are :func:`vocab_logits`'s)."""

    features: int

    @nn.compact
    def __call__(self, in_features: int):
        return self.param("kernel", _boxed(_fan_in_truncated, ("embed", "vocab")),
                          (in_features, self.features), jnp.float32)


def vocab_projection(config: T5Config, params) -> jnp.ndarray:
    """The parameter the logits are made with: the tied token embedding [vocab, embed]
    (``logits_via_embedding``) or the untied ``decoder/logits_dense/kernel`` [embed, vocab]."""
    if config.logits_via_embedding:
        return params["token_embedder"]["embedding"]
    return params["decoder"]["logits_dense"]["kernel"]


def vocab_logits(config: T5Config, projection: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """Float32 logits [..., vocab] of the decoder's last hidden states ``x`` against
    :func:`vocab_projection`; the tied embedding's logits are scaled by emb_dim**-0.5."""
    dtype = _dtype(config)
    if config.logits_via_embedding:
        logits = jnp.einsum("...d,vd->...v", x.astype(dtype), projection.astype(dtype),
                            preferred_element_type=jnp.float32).astype(dtype)
        logits = logits / math.sqrt(x.shape[-1])
    else:
        logits = kernel_ops(config.kernels).dense(x.astype(dtype), projection.astype(dtype))
    return logits.astype(jnp.float32)


class LayerNorm(nn.Module):
    """T5's RMSNorm: no mean subtraction, no bias, computed in float32."""

    epsilon: float = 1e-6
    dtype: Any = jnp.float32
    kernels: str = "auto"

    @nn.compact
    def __call__(self, x):
        x = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        scale = self.param("scale", _boxed(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), jnp.float32)
        normed = x * jax.lax.rsqrt(var + self.epsilon)
        return kernel_ops(self.kernels).scale_features(normed, scale).astype(self.dtype)


class Dropout(nn.Module):
    """Inverted dropout whose keep mask compares random bits to a threshold.

    The bits come from the kernel set's ``random_bits``, keyed from the ``dropout`` rng
    collection as in flax, so masks differ per layer and per step and a resumed run draws
    the same ones.
    """

    rate: float
    kernels: str = "auto"

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        if deterministic or self.rate == 0.0:
            return x
        if self.rate >= 1.0:
            return jnp.zeros_like(x)
        threshold = jnp.uint32(min(round(self.rate * 2.0 ** 32), 2 ** 32 - 1))
        bits = kernel_ops(self.kernels).random_bits(self.make_rng("dropout"), x.shape)
        return jnp.where(bits >= threshold, x / (1.0 - self.rate), 0.0).astype(x.dtype)


def relative_position_bucket(relative_position, bidirectional=True, num_buckets=32,
                             max_distance=128):
    """Bucket ``key_pos - query_pos`` the Mesh-TF T5 way (exact near 0, log-spaced far)."""
    ret = 0
    n = -relative_position
    if bidirectional:
        num_buckets //= 2
        ret += (n < 0).astype(jnp.int32) * num_buckets
        n = jnp.abs(n)
    else:
        n = jnp.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # log(0) would be -inf; those entries take the is_small branch anyway.
    scaled = (jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact)
              / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    large = jnp.minimum(max_exact + scaled.astype(jnp.int32), num_buckets - 1)
    return ret + jnp.where(is_small, n, large)


class RelativePositionBias(nn.Module):
    """One [heads, buckets] table; returns the additive bias [B|1, heads, Lq, Lk]."""

    num_heads: int
    num_buckets: int = 32
    max_distance: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, query_positions, key_positions, bidirectional: bool):
        table = self.param(
            "rel_embedding",
            _boxed(nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                   ("heads", "relpos_buckets")),
            (self.num_heads, self.num_buckets), jnp.float32)
        rel = key_positions[:, None, :] - query_positions[:, :, None]
        buckets = relative_position_bucket(rel, bidirectional, self.num_buckets, self.max_distance)
        bias = jnp.take(table.T, buckets, axis=0)  # [B, Lq, Lk, H]
        return jnp.transpose(bias, (0, 3, 1, 2))


def make_attention_mask(query_valid, key_valid, query_segments=None, key_segments=None):
    """Boolean mask [B, 1, Lq, Lk]: both ends valid and, if given, in the same segment."""
    mask = query_valid[:, None, :, None] & key_valid[:, None, None, :]
    if query_segments is not None and key_segments is not None:
        mask &= query_segments[:, None, :, None] == key_segments[:, None, None, :]
    return mask


class MultiHeadAttention(nn.Module):
    """Unscaled dot-product attention with an optional single-step KV cache."""

    num_heads: int
    head_dim: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    kernels: str = "auto"

    @nn.compact
    def __call__(self, inputs_q, inputs_kv, mask=None, bias=None, deterministic=True,
                 decode=False, decode_index=None):
        inner = self.num_heads * self.head_dim
        depth_scaling = math.sqrt(self.head_dim)

        def query_init(key, shape, dtype=jnp.float32):
            return _fan_in_normal(key, shape, dtype) / depth_scaling

        proj = functools.partial(Dense, inner, ("embed", "joined_kv"), self.dtype,
                                 kernels=self.kernels)
        query = proj(kernel_init=query_init, name="query")(inputs_q)
        key = proj(kernel_init=_fan_in_normal, name="key")(inputs_kv)
        value = proj(kernel_init=_fan_in_normal, name="value")(inputs_kv)
        split = lambda t: t.reshape(t.shape[:2] + (self.num_heads, self.head_dim))
        query, key, value = split(query), split(key), split(value)

        if decode:
            cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
            cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape,
                                         value.dtype)
            if decode_index is not None:  # one step: write this token at each example's index
                if query.shape[1] != 1:
                    raise ValueError(f"decode=True takes one token per call, got {query.shape[1]}")
                rows = jnp.arange(key.shape[0])
                key = cached_key.value.at[rows, decode_index].set(key[:, 0])
                value = cached_value.value.at[rows, decode_index].set(value[:, 0])
                cached_key.value, cached_value.value = key, value

        ops = kernel_ops(self.kernels)
        dropout = Dropout(self.dropout_rate, self.kernels)

        def attention(query, key, value, mask, bias):
            logits = ops.attention_scores(query, key)
            if bias is not None:
                logits = ops.add_bias(logits, bias.astype(jnp.float32),
                                      bias.shape[0] == 1 and logits.shape[0] != 1)
            if mask is not None:
                # Added, as T5X does, rather than selected: the mask then takes no part
                # in the backward pass.
                logits = logits + jnp.where(mask, 0.0, NEG_INF).astype(logits.dtype)
            weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
            weights = dropout(weights, deterministic=deterministic)
            return jnp.einsum("bhqk,bkhd->bqhd", weights, value,
                              preferred_element_type=jnp.float32).astype(value.dtype)

        out = ops.attend(attention, query, key, value, mask, bias)
        out = out.reshape(out.shape[:2] + (inner,))
        return Dense(inputs_q.shape[-1], ("joined_kv", "embed"), self.dtype,
                     kernel_init=_fan_in_normal, kernels=self.kernels, name="out")(out)


class MlpBlock(nn.Module):
    """Feed-forward block: one ``wi`` per activation (multiplied together), then ``wo``."""

    mlp_dim: int
    activations: tuple = ("relu",)
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    kernels: str = "auto"

    @nn.compact
    def __call__(self, x, deterministic=True):
        hidden = []
        for i, act in enumerate(self.activations):
            name = "wi" if len(self.activations) == 1 else f"wi_{i}"
            hidden.append(Dense(self.mlp_dim, ("embed", "mlp"), self.dtype, kernels=self.kernels,
                                name=name)(x))
        functions = tuple(ACTIVATIONS[act] for act in self.activations)
        h = kernel_ops(self.kernels).gate(tuple(hidden), functions)
        h = Dropout(self.dropout_rate, self.kernels)(h, deterministic=deterministic)
        return Dense(x.shape[-1], ("mlp", "embed"), self.dtype, kernels=self.kernels,
                     name="wo")(h)


def _dtype(config: T5Config):
    return jnp.dtype(config.dtype)


def _norm(config, name):
    return LayerNorm(config.layer_norm_epsilon, _dtype(config), config.kernels, name=name)


def _attention(config, name):
    return MultiHeadAttention(config.num_heads, config.head_dim, config.dropout_rate,
                              _dtype(config), config.kernels, name=name)


def _mlp(config):
    return MlpBlock(config.mlp_dim, config.mlp_activations, config.dropout_rate,
                    _dtype(config), config.kernels, name="mlp")


def _relpos(config):
    return RelativePositionBias(config.num_heads, config.relpos_num_buckets,
                                config.relpos_max_distance, _dtype(config), name="relpos_bias")


# --------------------------------------------------------------------------- stacks
class EncoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x, mask, bias, deterministic=True):
        cfg = self.config
        drop = Dropout(cfg.dropout_rate, cfg.kernels)
        h = _norm(cfg, "pre_attention_layer_norm")(x)
        h = _attention(cfg, "attention")(h, h, mask, bias, deterministic)
        x = x + drop(h, deterministic=deterministic)
        h = _norm(cfg, "pre_mlp_layer_norm")(x)
        h = _mlp(cfg)(h, deterministic)
        return x + drop(h, deterministic=deterministic)


class DecoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x, encoded, self_mask, self_bias, cross_mask, deterministic=True,
                 decode=False, decode_index=None):
        cfg = self.config
        drop = Dropout(cfg.dropout_rate, cfg.kernels)
        h = _norm(cfg, "pre_self_attention_layer_norm")(x)
        h = _attention(cfg, "self_attention")(h, h, self_mask, self_bias, deterministic,
                                              decode=decode, decode_index=decode_index)
        x = x + drop(h, deterministic=deterministic)
        h = _norm(cfg, "pre_cross_attention_layer_norm")(x)
        h = _attention(cfg, "encoder_decoder_attention")(h, encoded, cross_mask, None,
                                                         deterministic)
        x = x + drop(h, deterministic=deterministic)
        h = _norm(cfg, "pre_mlp_layer_norm")(x)
        h = _mlp(cfg)(h, deterministic)
        return x + drop(h, deterministic=deterministic)


def _default_positions(tokens):
    return jnp.arange(tokens.shape[1], dtype=jnp.int32)[None, :]


class Encoder(nn.Module):
    """The encoder stack; ``shared_embedding`` is owned by the parent (``token_embedder``)."""

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, encoder_input_tokens, encoder_segment_ids=None, encoder_positions=None,
                 deterministic=True):
        cfg = self.config
        tokens = encoder_input_tokens.astype(jnp.int32)
        drop = Dropout(cfg.dropout_rate, cfg.kernels)
        x = drop(self.shared_embedding(tokens), deterministic=deterministic)
        positions = _default_positions(tokens) if encoder_positions is None else encoder_positions
        bias = _relpos(cfg)(positions, positions, bidirectional=True)
        valid = tokens > 0
        mask = make_attention_mask(valid, valid, encoder_segment_ids, encoder_segment_ids)
        for i in range(cfg.num_encoder_layers):
            x = EncoderLayer(cfg, name=f"layers_{i}")(x, mask, bias, deterministic)
        x = _norm(cfg, "encoder_norm")(x)
        return drop(x, deterministic=deterministic)


class Decoder(nn.Module):
    """The decoder stack, with logits; see the module docstring for the cache."""

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, encoded, encoder_input_tokens, decoder_input_tokens,
                 decoder_target_tokens=None, encoder_segment_ids=None, decoder_segment_ids=None,
                 decoder_positions=None, deterministic=True, decode=False, project=True):
        cfg = self.config
        tokens = decoder_input_tokens.astype(jnp.int32)
        batch, length = tokens.shape
        enc_valid = encoder_input_tokens > 0

        decode_index = None
        if decode:
            initialized = self.has_variable("cache", "cache_index")
            index_var = self.variable("cache", "cache_index", jnp.zeros, (batch,), jnp.int32)
            if initialized:
                decode_index = index_var.value
                index_var.value = decode_index + 1

        relpos = _relpos(cfg)
        if decode_index is not None:
            # All layers' caches share one length; read it from layer 0's.
            cache_len = self.variables["cache"]["layers_0"]["self_attention"]["cached_key"].shape[1]
            key_pos = jnp.arange(cache_len, dtype=jnp.int32)[None, :]
            self_bias = relpos(decode_index[:, None], key_pos, bidirectional=False)
            self_mask = (key_pos <= decode_index[:, None])[:, None, None, :]
            cross_mask = enc_valid[:, None, None, :]
        else:
            positions = _default_positions(tokens) if decoder_positions is None else decoder_positions
            self_bias = relpos(positions, positions, bidirectional=False)
            if decoder_target_tokens is None:
                query_valid = jnp.ones((batch, length), bool)
            else:
                query_valid = decoder_target_tokens > 0
            causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
            self_mask = causal & make_attention_mask(query_valid, query_valid,
                                                     decoder_segment_ids, decoder_segment_ids)
            cross_mask = make_attention_mask(query_valid, enc_valid, decoder_segment_ids,
                                             encoder_segment_ids)

        drop = Dropout(cfg.dropout_rate, cfg.kernels)
        x = drop(self.shared_embedding(tokens), deterministic=deterministic)
        for i in range(cfg.num_decoder_layers):
            x = DecoderLayer(cfg, name=f"layers_{i}")(
                x, encoded, self_mask, self_bias, cross_mask, deterministic,
                decode=decode, decode_index=decode_index)
        x = _norm(cfg, "decoder_norm")(x)
        x = drop(x, deterministic=deterministic)
        if cfg.logits_via_embedding:
            projection = self.shared_embedding.embedding
        else:
            projection = LogitsKernel(cfg.vocab_size, name="logits_dense")(x.shape[-1])
        return vocab_logits(cfg, projection, x) if project else x


# --------------------------------------------------------------------------- model
class Transformer(nn.Module):
    """T5 encoder-decoder with T5X's method signatures (see the module docstring)."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.token_embedder = Embed(cfg.vocab_size, cfg.emb_dim, _dtype(cfg), cfg.kernels)
        self.encoder = Encoder(cfg, self.token_embedder)
        self.decoder = Decoder(cfg, self.token_embedder)

    def encode(self, encoder_input_tokens, encoder_segment_ids=None, encoder_positions=None,
               enable_dropout=False):
        """Encoder hidden states [B, L_in, emb]."""
        return self.encoder(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                            deterministic=not enable_dropout)

    def decode(self, encoded, encoder_input_tokens, decoder_input_tokens,
               decoder_target_tokens=None, encoder_segment_ids=None, decoder_segment_ids=None,
               decoder_positions=None, enable_dropout=False, decode=False,
               max_decode_length=None, project=True):
        """Float32 logits [B, L, V]; ``decode=True`` runs one cached step (see docstring).
        ``project=False`` stops before the logits: the last hidden states [B, L, emb]."""
        del max_decode_length  # the cache length is fixed when the cache is created
        return self.decoder(encoded, encoder_input_tokens, decoder_input_tokens,
                            decoder_target_tokens, encoder_segment_ids, decoder_segment_ids,
                            decoder_positions, deterministic=not enable_dropout, decode=decode,
                            project=project)

    def __call__(self, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
                 encoder_segment_ids=None, decoder_segment_ids=None, encoder_positions=None,
                 decoder_positions=None, enable_dropout=True, decode=False,
                 max_decode_length=None, project=True):
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                              enable_dropout)
        return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                           decoder_target_tokens, encoder_segment_ids, decoder_segment_ids,
                           decoder_positions, enable_dropout, decode, max_decode_length, project)
