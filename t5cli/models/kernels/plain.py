"""Plain-JAX kernels: the reference every other kernel set is tested against.

Nothing here is tuned for a backend: autodiff writes the gradients and XLA chooses how to
run them. Products take bfloat16 (or float32) operands and accumulate in float32.
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp


def dense(x, kernel):
    """``x @ kernel`` over ``x``'s last axis, accumulated in float32, in ``x``'s dtype."""
    return jnp.dot(x, kernel, preferred_element_type=jnp.float32).astype(x.dtype)


def gate(hidden, functions):
    """The product of ``functions[i](hidden[i])``: the MLP's gated activation (one term
    for T5 1.0's ReLU MLP, two for T5 1.1's gated GELU)."""
    return functools.reduce(operator.mul, [f(h) for f, h in zip(functions, hidden)])


def lookup(table, ids):
    """Rows ``ids`` of ``table`` (the token embedding)."""
    return jnp.take(table, ids, axis=0)


def scale_features(x, scale):
    """``x * scale`` for a per-feature (last-axis) ``scale``."""
    return x * scale


def add_bias(logits, bias, shared_by_batch: bool):
    """``logits + bias``; ``shared_by_batch``: ``bias`` has batch size 1 (broadcast)."""
    del shared_by_batch  # broadcasting handles it; the cpu kernel uses it for its gradient
    return logits + bias


def attention_scores(query, key):
    """Float32 attention logits [B, H, Lq, Lk] of ``query`` [B, Lq, H, D] and ``key``
    [B, Lk, H, D]."""
    return jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)


def attend(attention, query, key, value, mask=None, bias=None):
    """``attention(query, key, value, mask, bias)`` over the whole batch at once.

    Kernel sets may instead run it over parts of the batch; arrays with batch size 1
    (a shared bias) and ``None`` are passed to every part unchanged.
    """
    return attention(query, key, value, mask, bias)


def random_bits(key, shape):
    """32 random bits (uint32) per element of ``shape`` from the JAX PRNG ``key``."""
    return jax.random.bits(key, shape, jnp.uint32)


def mean_over_axis(x, axis: int):
    """``jnp.mean(x, axis)``."""
    return jnp.mean(x, axis=axis)
