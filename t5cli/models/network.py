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
  decoder_positions=None, enable_dropout=False, decode=False, max_decode_length=None)
  -> logits [B, L, V] float32``.
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
import operator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5cli.models.configs import T5Config
from t5cli.reductions import sum_leading_axes

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
    """Token embedding looked up by gather; ``attend`` gives logits against it."""

    num_embeddings: int
    features: int
    dtype: Any = jnp.float32

    def setup(self):
        self.embedding = self.param(
            "embedding", _boxed(nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
            (self.num_embeddings, self.features), jnp.float32)

    def __call__(self, ids):
        return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

    def attend(self, x):
        return jnp.einsum("...d,vd->...v", x.astype(self.dtype), self.embedding.astype(self.dtype),
                          preferred_element_type=jnp.float32).astype(self.dtype)


def _dot(a, b):
    """``a @ b`` accumulated in float32 and returned in ``a``'s dtype. With bfloat16 inputs
    XLA on CPU then uses the native bfloat16 dot-product instructions, about twice the
    float32 rate; a bfloat16-typed result instead makes it convert and multiply in float32."""
    return jnp.dot(a, b, preferred_element_type=jnp.float32).astype(a.dtype)


@jax.custom_vjp
def dense_product(x, kernel):
    """``x @ kernel`` whose kernel gradient is a plain row-major matrix product.

    Autodiff writes the kernel gradient as a contraction over ``x``'s leading axes, which
    XLA on CPU hands to its generic (Eigen) dot with two transposed operands. Here ``x`` is
    transposed into its own buffer first (the barrier stops XLA folding the transpose
    back into the dot), so the gradient runs on XLA's faster YNNPACK kernels: ~13% of a
    T5 training step on a 2-core CPU. Values are those of autodiff, up to summation order.
    """
    return _dot(x, kernel)


def _dense_product_fwd(x, kernel):
    # The barrier keeps ``x`` as a stored array: without it XLA fuses whatever computed
    # ``x`` (the MLP's activation and dropout) into the backward transpose and recomputes
    # it there in transposed order, ~10x slower than copying the stored values.
    return _dot(x, kernel), (jax.lax.optimization_barrier(x), kernel)


def _dense_product_bwd(residuals, grad):
    x, kernel = residuals
    x_t = jax.lax.optimization_barrier(x.reshape(-1, x.shape[-1]).T)
    grad_kernel = _dot(x_t, grad.reshape(-1, grad.shape[-1]))
    return _dot(grad, kernel.T), grad_kernel.astype(kernel.dtype)


dense_product.defvjp(_dense_product_fwd, _dense_product_bwd)


class Dense(nn.Module):
    """Bias-free dense layer with a float32, logically-partitioned kernel."""

    features: int
    axes: tuple
    dtype: Any = jnp.float32
    kernel_init: Any = _fan_in_truncated

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", _boxed(self.kernel_init, self.axes),
                            (x.shape[-1], self.features), jnp.float32)
        return dense_product(x.astype(self.dtype), kernel.astype(self.dtype))


@jax.custom_vjp
def _scale_features(x, scale):
    """``x * scale`` for a per-feature ``scale``, whose gradient sums rows with a product
    (see :func:`t5cli.reductions.sum_leading_axes`)."""
    return x * scale


def _scale_features_fwd(x, scale):
    return x * scale, (x, scale)


def _scale_features_bwd(residuals, grad):
    x, scale = residuals
    return grad * scale, sum_leading_axes(grad * x, x.ndim - 1)


_scale_features.defvjp(_scale_features_fwd, _scale_features_bwd)


class LayerNorm(nn.Module):
    """T5's RMSNorm: no mean subtraction, no bias, computed in float32."""

    epsilon: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        scale = self.param("scale", _boxed(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), jnp.float32)
        return _scale_features(x * jax.lax.rsqrt(var + self.epsilon), scale).astype(self.dtype)


def _mix32(x):
    """murmur3's 32-bit finaliser: a bijection of uint32 in which every input bit flips
    each output bit with probability ~1/2."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def keyed_random_bits(key, shape):
    """32 random bits per element of ``shape``: element ``i`` gets ``mix(mix(i + k0) ^ k1)``
    for the two words ``k0, k1`` of the JAX PRNG ``key``.

    A counter-based generator like JAX's threefry, but a dozen integer operations per element
    that XLA fuses into the consumer, where JAX's threefry runs on CPU as a loop of separate
    kernels. Statistically fine for dropout masks; not for anything that needs a strong
    generator. The element index is global, so a sharded array gets the same bits as an
    unsharded one.
    """
    words = key if jnp.issubdtype(key.dtype, jnp.unsignedinteger) else jax.random.key_data(key)
    words = words.reshape(-1).astype(jnp.uint32)
    index = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    return _mix32(_mix32(index + words[0]) ^ words[-1])


class Dropout(nn.Module):
    """Inverted dropout whose keep mask compares cheap keyed random bits to a threshold.

    flax's ``nn.Dropout`` draws its mask with ``jax.random``, whose threefry rounds run on
    CPU as a loop of separate kernels: with dropout in every layer that was ~3% of a T5
    training step. :func:`keyed_random_bits` is fused into the dropout itself. The key
    comes from the ``dropout`` rng collection, as in flax, so masks differ per layer and
    per step and a resumed run draws the same ones.
    """

    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        if deterministic or self.rate == 0.0:
            return x
        if self.rate >= 1.0:
            return jnp.zeros_like(x)
        threshold = jnp.uint32(min(round(self.rate * 2.0 ** 32), 2 ** 32 - 1))
        keep = keyed_random_bits(self.make_rng("dropout"), x.shape) >= threshold
        return jnp.where(keep, x / (1.0 - self.rate), 0.0).astype(x.dtype)


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _add_bias(logits, bias, shared_by_batch):
    """``logits + bias``; with ``shared_by_batch`` the bias has batch size 1 and its gradient
    is the batch sum of the logits' gradient. Autodiff leaves XLA a reduction that it fuses
    with the softmax gradient of every layer sharing the bias, recomputing them all on one
    thread (~30 ms a step for T5 small on CPU)."""
    return logits + bias


def _add_bias_fwd(logits, bias, shared_by_batch):
    return logits + bias, None


def _add_bias_bwd(shared_by_batch, _, grad):
    grad_bias = sum_leading_axes(grad, 1)[None] if shared_by_batch else grad
    return grad, grad_bias


_add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


@jax.custom_vjp
def _attention_scores(query, key):
    """``einsum("bqhd,bkhd->bhqk")`` in float32 whose key gradient is a plain batched
    product: autodiff contracts the scores' gradient over its query axis, a transposed
    operand that XLA on CPU hands to its slower generic dot."""
    return jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)


def _attention_scores_fwd(query, key):
    return _attention_scores(query, key), (query, key)


def _attention_scores_bwd(residuals, grad):
    query, key = residuals
    grad = grad.astype(query.dtype)
    grad_query = jnp.einsum("bhqk,bkhd->bqhd", grad, key, preferred_element_type=jnp.float32)
    query_t = jax.lax.optimization_barrier(jnp.transpose(query, (0, 2, 3, 1)))  # [b, h, d, q]
    grad_key_t = jnp.einsum("bhdq,bhqk->bhdk", query_t, grad, preferred_element_type=jnp.float32)
    return (grad_query.astype(query.dtype),
            jnp.transpose(grad_key_t, (0, 3, 1, 2)).astype(key.dtype))


_attention_scores.defvjp(_attention_scores_fwd, _attention_scores_bwd)


def _split_attention_batch(batch_size: int) -> bool:
    """Whether attention runs as two batch halves: on CPU, for an even batch.

    XLA on CPU runs a batched matrix product (attention's [B·H, Lq, Lk] by [B·H, Lk, D])
    on one thread, ~100 GFLOP/s against ~210 for the model's dense products on two cores.
    Two halves with no data between them let XLA's executor run them side by side. For T5
    1.1 small at batch 8 × 128 that took the attention products from ~210 to ~165 ms of a
    2.2 s training step. Other backends parallelise batched products themselves, and
    slicing a sharded batch would move data between devices there.
    """
    return batch_size >= 2 and batch_size % 2 == 0 and jax.default_backend() == "cpu"


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

    @nn.compact
    def __call__(self, inputs_q, inputs_kv, mask=None, bias=None, deterministic=True,
                 decode=False, decode_index=None):
        inner = self.num_heads * self.head_dim
        depth_scaling = math.sqrt(self.head_dim)

        def query_init(key, shape, dtype=jnp.float32):
            return _fan_in_normal(key, shape, dtype) / depth_scaling

        proj = functools.partial(Dense, inner, ("embed", "joined_kv"), self.dtype)
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

        dropout = Dropout(self.dropout_rate)

        def attend(query, key, value, mask, bias):
            logits = _attention_scores(query, key)
            if bias is not None:
                logits = _add_bias(logits, bias.astype(jnp.float32),
                                   bias.shape[0] == 1 and logits.shape[0] != 1)
            if mask is not None:
                # Added, as T5X does, rather than selected: the mask then has no part
                # in the backward pass, where a select made XLA rebuild it (and the
                # dropout bits) in a slow fused loop, ~40 ms of a T5 1.1 small step on CPU.
                logits = logits + jnp.where(mask, 0.0, NEG_INF).astype(logits.dtype)
            weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
            weights = dropout(weights, deterministic=deterministic)
            return jnp.einsum("bhqk,bkhd->bqhd", weights, value,
                              preferred_element_type=jnp.float32).astype(value.dtype)

        if decode or not _split_attention_batch(query.shape[0]):
            out = attend(query, key, value, mask, bias)
        else:
            # Two independent halves (each with its own dropout draw) that XLA can run
            # on two cores at once; see _split_attention_batch.
            half = query.shape[0] // 2
            part = lambda t, i: t if t is None or t.shape[0] == 1 else t[i * half:(i + 1) * half]
            out = jnp.concatenate([attend(part(query, i), part(key, i), part(value, i),
                                          part(mask, i), part(bias, i)) for i in range(2)])
        out = out.reshape(out.shape[:2] + (inner,))
        return Dense(inputs_q.shape[-1], ("joined_kv", "embed"), self.dtype,
                     kernel_init=_fan_in_normal, name="out")(out)


class MlpBlock(nn.Module):
    """Feed-forward block: one ``wi`` per activation (multiplied together), then ``wo``."""

    mlp_dim: int
    activations: tuple = ("relu",)
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic=True):
        hidden = []
        for i, act in enumerate(self.activations):
            name = "wi" if len(self.activations) == 1 else f"wi_{i}"
            h = Dense(self.mlp_dim, ("embed", "mlp"), self.dtype, name=name)(x)
            hidden.append(ACTIVATIONS[act](h))
        h = functools.reduce(operator.mul, hidden)
        h = Dropout(self.dropout_rate)(h, deterministic=deterministic)
        return Dense(x.shape[-1], ("mlp", "embed"), self.dtype, name="wo")(h)


def _dtype(config: T5Config):
    return jnp.dtype(config.dtype)


def _norm(config, name):
    return LayerNorm(config.layer_norm_epsilon, _dtype(config), name=name)


def _attention(config, name):
    return MultiHeadAttention(config.num_heads, config.head_dim, config.dropout_rate,
                              _dtype(config), name=name)


def _mlp(config):
    return MlpBlock(config.mlp_dim, config.mlp_activations, config.dropout_rate,
                    _dtype(config), name="mlp")


def _relpos(config):
    return RelativePositionBias(config.num_heads, config.relpos_num_buckets,
                                config.relpos_max_distance, _dtype(config), name="relpos_bias")


# --------------------------------------------------------------------------- stacks
class EncoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x, mask, bias, deterministic=True):
        cfg = self.config
        drop = Dropout(cfg.dropout_rate)
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
        drop = Dropout(cfg.dropout_rate)
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
        drop = Dropout(cfg.dropout_rate)
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
                 decoder_positions=None, deterministic=True, decode=False):
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

        drop = Dropout(cfg.dropout_rate)
        x = drop(self.shared_embedding(tokens), deterministic=deterministic)
        for i in range(cfg.num_decoder_layers):
            x = DecoderLayer(cfg, name=f"layers_{i}")(
                x, encoded, self_mask, self_bias, cross_mask, deterministic,
                decode=decode, decode_index=decode_index)
        x = _norm(cfg, "decoder_norm")(x)
        x = drop(x, deterministic=deterministic)
        if cfg.logits_via_embedding:
            logits = self.shared_embedding.attend(x) / math.sqrt(x.shape[-1])
        else:
            logits = Dense(cfg.vocab_size, ("embed", "vocab"), _dtype(cfg),
                           name="logits_dense")(x)
        return logits.astype(jnp.float32)


# --------------------------------------------------------------------------- model
class Transformer(nn.Module):
    """T5 encoder-decoder with T5X's method signatures (see the module docstring)."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.token_embedder = Embed(cfg.vocab_size, cfg.emb_dim, _dtype(cfg))
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
               max_decode_length=None):
        """Float32 logits [B, L, V]; ``decode=True`` runs one cached step (see docstring)."""
        del max_decode_length  # the cache length is fixed when the cache is created
        return self.decoder(encoded, encoder_input_tokens, decoder_input_tokens,
                            decoder_target_tokens, encoder_segment_ids, decoder_segment_ids,
                            decoder_positions, deterministic=not enable_dropout, decode=decode)

    def __call__(self, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
                 encoder_segment_ids=None, decoder_segment_ids=None, encoder_positions=None,
                 decoder_positions=None, enable_dropout=True, decode=False,
                 max_decode_length=None):
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                              enable_dropout)
        return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                           decoder_target_tokens, encoder_segment_ids, decoder_segment_ids,
                           decoder_positions, enable_dropout, decode, max_decode_length)
