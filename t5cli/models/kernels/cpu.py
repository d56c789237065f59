"""Kernels for XLA on CPU: the plain kernels' values, written the way XLA's CPU backend
runs them fastest.

Each function equals its namesake in :mod:`t5cli.models.kernels.plain` (values and
gradients, up to summation order; dropout bits excepted, which are a different but equally
uniform draw) and says what it saves. The figures were measured on a 2-core AVX-512 CPU,
training T5 1.1 small at batch 8 x 128/128 (``bench/bench_train.py``), a ~2.2 s step.

Sums over leading axes: XLA's CPU backend reduces over a leading (non-contiguous) axis with
a strided loop, and fuses whatever computed the operand into that loop. ``jnp.sum(x * x,
axis=0)`` of a [32128, 512] float32 array took ~50 ms, about 1.3 GB/s. The same sum written
as a product with a row of ones runs on XLA's matrix kernels at memory speed (~8 ms, writing
``x * x`` out included); see :func:`sum_leading_axes`. Sums over the last axis are fast
either way and stay plain reductions.
"""

from __future__ import annotations

import functools
import math
import operator

import jax
import jax.numpy as jnp


# --------------------------------------------------------------------------- reductions
def sum_leading_axes(x, num_axes: int = 1):
    """Sum of ``x`` over its first ``num_axes`` axes, as a matrix-vector product."""
    rows = math.prod(x.shape[:num_axes])
    flat = x.reshape(rows, -1)
    return jnp.dot(jnp.ones((1, rows), x.dtype), flat).reshape(x.shape[num_axes:])


def mean_over_axis(x, axis: int):
    """``jnp.mean(x, axis)``, with a leading ``axis`` summed by :func:`sum_leading_axes`
    (Adafactor's factored second moments)."""
    axis = axis % x.ndim
    if axis == 0 and x.ndim > 1:
        return sum_leading_axes(x, 1) / x.shape[0]
    return jnp.mean(x, axis=axis)


# --------------------------------------------------------------------------- dense
def _dot(a, b):
    """``a @ b`` accumulated in float32 and returned in ``a``'s dtype. With bfloat16 inputs
    XLA on CPU then uses the native bfloat16 dot-product instructions, about twice the
    float32 rate; a bfloat16-typed result instead makes it convert and multiply in float32."""
    return jnp.dot(a, b, preferred_element_type=jnp.float32).astype(a.dtype)


def _after(x, grad):
    """``x``, computed from a scalar of ``grad`` as well, so that a backward-pass copy made
    from it (a transpose) is made when the gradient reaches it. XLA on CPU drops
    optimization barriers before it schedules, and otherwise makes such copies as soon as
    ``x`` exists, at the end of the forward pass, where each layer's copy then lives beside
    the stored ``x`` until the backward pass gets there: ~120 MB at the memory peak of a T5
    1.1 small step at batch 8 x 128/128. Adding ``0 * grad[0]`` changes no finite value."""
    return x + (grad.reshape(-1)[0] * 0).astype(x.dtype)


@jax.custom_vjp
def dense(x, kernel):
    """``x @ kernel`` whose kernel gradient is a plain row-major matrix product.

    Autodiff writes the kernel gradient as a contraction over ``x``'s leading axes, which
    XLA on CPU hands to its generic (Eigen) dot with two transposed operands. Here ``x`` is
    transposed into its own buffer first (the barrier stops XLA folding the transpose
    back into the dot), so the gradient runs on XLA's faster YNNPACK kernels: ~13% of a
    T5 training step on a 2-core CPU. Values are those of autodiff, up to summation order.
    """
    return _dot(x, kernel)


def _dense_fwd(x, kernel):
    # The barrier keeps ``x`` as a stored array: without it XLA fuses whatever computed
    # ``x`` (the MLP's activation and dropout) into the backward transpose and recomputes
    # it there in transposed order, ~10x slower than copying the stored values.
    return _dot(x, kernel), (jax.lax.optimization_barrier(x), kernel)


def _dense_bwd(residuals, grad):
    x, kernel = residuals
    x_t = jax.lax.optimization_barrier(_after(x, grad).reshape(-1, x.shape[-1]).T)
    grad_kernel = _dot(x_t, grad.reshape(-1, grad.shape[-1]))
    return _dot(grad, kernel.T), grad_kernel.astype(kernel.dtype)


dense.defvjp(_dense_fwd, _dense_bwd)


# --------------------------------------------------------------------------- embedding
@jax.custom_vjp
def lookup(table, ids):
    """Rows ``ids`` of ``table``, whose gradient's zeros are made when the gradient comes.

    Autodiff scatters the rows' gradient into a table of zeros, and XLA on CPU made those
    zeros (the whole [vocab, embed] table: 66 MB for T5 1.1 small) early in the step, so
    they sat through the step's memory peak. Tied to the gradient (see :func:`_after`),
    they are made when the backward pass reaches the embedding.
    """
    return jnp.take(table, ids, axis=0)


def _lookup_fwd(table, ids):
    return jnp.take(table, ids, axis=0), (ids, table)  # the table is a parameter: kept anyway


def _lookup_bwd(residuals, grad):
    ids, table = residuals
    zeros = _after(jnp.zeros(table.shape, grad.dtype), grad)
    grad_table = zeros.at[ids.reshape(-1)].add(grad.reshape(-1, table.shape[-1]))
    return grad_table.astype(table.dtype), None


lookup.defvjp(_lookup_fwd, _lookup_bwd)


# --------------------------------------------------------------------------- MLP gate
@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def gate(hidden, functions):
    """The product of ``functions[i](hidden[i])``, whose backward pass recomputes the
    activations from the stored ``hidden`` instead of keeping them.

    Autodiff stores ``gelu(h0)`` beside ``h0`` and ``h1`` for the backward pass: 4 MB per
    layer for T5 1.1 small at batch 8 x 128, 64 MB at the step's memory peak. Recomputing
    it is one more element-wise pass that XLA fuses into the gradient's.
    """
    return functools.reduce(operator.mul, [f(h) for f, h in zip(functions, hidden)])


def _gate_fwd(hidden, functions):
    return gate(hidden, functions), hidden


def _gate_bwd(functions, hidden, grad):
    # tied to ``grad`` so that XLA does not compute the activations again at the forward
    # pass's end (see :func:`_after`)
    outs, vjps = zip(*(jax.vjp(f, _after(h, grad)) for f, h in zip(functions, hidden)))
    grads = []
    for i, vjp in enumerate(vjps):
        others = [o for j, o in enumerate(outs) if j != i]
        g = functools.reduce(operator.mul, others, grad)
        grads.append(vjp(g.astype(outs[i].dtype))[0])
    return (tuple(grads),)


gate.defvjp(_gate_fwd, _gate_bwd)


# --------------------------------------------------------------------------- norm scale
@jax.custom_vjp
def scale_features(x, scale):
    """``x * scale`` for a per-feature ``scale``, whose gradient sums rows with a product
    (see :func:`sum_leading_axes`): the RMSNorm scales' gradients."""
    return x * scale


def _scale_features_fwd(x, scale):
    return x * scale, (x, scale)


def _scale_features_bwd(residuals, grad):
    x, scale = residuals
    return grad * scale, sum_leading_axes(grad * x, x.ndim - 1)


scale_features.defvjp(_scale_features_fwd, _scale_features_bwd)


# --------------------------------------------------------------------------- attention
@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def add_bias(logits, bias, shared_by_batch):
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


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


@jax.custom_vjp
def attention_scores(query, key):
    """``einsum("bqhd,bkhd->bhqk")`` in float32 whose key gradient is a plain batched
    product: autodiff contracts the scores' gradient over its query axis, a transposed
    operand that XLA on CPU hands to its slower generic dot."""
    return jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)


def _attention_scores_fwd(query, key):
    return attention_scores(query, key), (query, key)


def _attention_scores_bwd(residuals, grad):
    query, key = residuals
    grad = grad.astype(query.dtype)
    grad_query = jnp.einsum("bhqk,bkhd->bqhd", grad, key, preferred_element_type=jnp.float32)
    query_t = jax.lax.optimization_barrier(jnp.transpose(_after(query, grad), (0, 2, 3, 1)))  # [b, h, d, q]
    grad_key_t = jnp.einsum("bhdq,bhqk->bhdk", query_t, grad, preferred_element_type=jnp.float32)
    return (grad_query.astype(query.dtype),
            jnp.transpose(grad_key_t, (0, 3, 1, 2)).astype(key.dtype))


attention_scores.defvjp(_attention_scores_fwd, _attention_scores_bwd)


def attend(attention, query, key, value, mask=None, bias=None):
    """``attention(query, key, value, mask, bias)`` run as two batch halves, for an even
    batch of more than one query position (a decoding step stays whole).

    XLA on CPU runs a batched matrix product (attention's [B·H, Lq, Lk] by [B·H, Lk, D])
    on one thread, ~100 GFLOP/s against ~210 for the model's dense products on two cores.
    Two halves with no data between them let XLA's executor run them side by side. For T5
    1.1 small at batch 8 x 128 that took the attention products from ~210 to ~165 ms of a
    2.2 s training step. Other backends parallelise batched products themselves, and
    slicing a sharded batch would move data between devices there. Each half calls
    ``attention`` separately, so it draws its own dropout mask.
    """
    batch = query.shape[0]
    if batch < 2 or batch % 2 or query.shape[1] == 1:
        return attention(query, key, value, mask, bias)
    half = batch // 2

    def part(t, i):
        return t if t is None or t.shape[0] == 1 else t[i * half:(i + 1) * half]

    return jnp.concatenate([attention(*(part(t, i) for t in (query, key, value, mask, bias)))
                            for i in range(2)])


# --------------------------------------------------------------------------- dropout bits
def _mix32(x):
    """murmur3's 32-bit finaliser: a bijection of uint32 in which every input bit flips
    each output bit with probability ~1/2."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def random_bits(key, shape):
    """32 random bits per element of ``shape``: element ``i`` gets ``mix(mix(i + k0) ^ k1)``
    for the two words ``k0, k1`` of the JAX PRNG ``key``.

    A counter-based generator like JAX's threefry, but a dozen integer operations per element
    that XLA fuses into the consumer, where JAX's threefry runs on CPU as a loop of separate
    kernels: with dropout in every layer that was ~3% of a T5 training step. Statistically
    fine for dropout masks; not for anything that needs a strong generator. The element
    index is global, so a sharded array gets the same bits as an unsharded one.
    """
    words = key if jnp.issubdtype(key.dtype, jnp.unsignedinteger) else jax.random.key_data(key)
    words = words.reshape(-1).astype(jnp.uint32)
    index = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    return _mix32(_mix32(index + words[0]) ^ words[-1])
