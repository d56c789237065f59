"""Optimizers, learning-rate schedules, freezing and gradient accumulation (optax).

The learning rate is not baked into the optimizer's own step counter: the train step
computes it from the *global* step (which, when fine-tuning, starts at the initial
checkpoint's step, as in T5X) and hands it to ``update`` as the extra argument
``learning_rate``. So a fine-tuning run's schedule continues where pre-training stopped
while Adafactor's second-moment decay starts afresh with fresh statistics (what T5X's
``step_offset`` achieves).

Parameter paths are ``/``-joined dict keys, e.g. ``encoder/layers_0/mlp/wi_0/kernel``.
"""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from t5cli.errors import ConfigError
from t5cli.models.kernels import check as check_kernels, ops as kernel_ops

Schedule = Callable[[Any], Any]

#: parameters AdamW does not decay: layer-norm scales and the relative position bias
NO_DECAY_PATTERN = r"(^|/)(scale|[^/]*norm[^/]*/scale|rel_embedding)$|rel_embedding"


# --- schedules ---------------------------------------------------------------------------

def _warmup(step, warmup_steps: int):
    if not warmup_steps:
        return 1.0
    return jnp.minimum(1.0, (step + 1.0) / float(warmup_steps))


def constant_schedule(base_learning_rate: float = 1e-3, warmup_steps: int = 0) -> Schedule:
    """``base_learning_rate``, with an optional linear warmup (T5X fine-tuning: 1e-3, none)."""
    return lambda step: base_learning_rate * _warmup(jnp.asarray(step, jnp.float32), warmup_steps)


def rsqrt_schedule(base_learning_rate: float = 1.0, warmup_steps: int = 10_000) -> Schedule:
    """T5X's ``constant * rsqrt_decay``: ``base / sqrt(max(step, warmup_steps))``."""
    def fn(step):
        step = jnp.asarray(step, jnp.float32)
        return base_learning_rate / jnp.sqrt(jnp.maximum(step, float(max(warmup_steps, 1))))
    return fn


def linear_schedule(base_learning_rate: float = 1e-3, warmup_steps: int = 0,
                    decay_steps: int = 100_000, end_factor: float = 0.0) -> Schedule:
    """Linear warmup, then linear decay to ``end_factor * base`` at ``decay_steps``."""
    def fn(step):
        step = jnp.asarray(step, jnp.float32)
        frac = jnp.clip((step - warmup_steps) / max(decay_steps - warmup_steps, 1), 0.0, 1.0)
        return base_learning_rate * _warmup(step, warmup_steps) * (1.0 - (1.0 - end_factor) * frac)
    return fn


def cosine_schedule(base_learning_rate: float = 1e-3, warmup_steps: int = 0,
                    decay_steps: int = 100_000, alpha: float = 0.0) -> Schedule:
    """Linear warmup, then cosine decay to ``alpha * base`` at ``decay_steps``."""
    def fn(step):
        step = jnp.asarray(step, jnp.float32)
        frac = jnp.clip((step - warmup_steps) / max(decay_steps - warmup_steps, 1), 0.0, 1.0)
        cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
        return base_learning_rate * _warmup(step, warmup_steps) * (alpha + (1.0 - alpha) * cosine)
    return fn


# --- optimizers ----------------------------------------------------------------------------

def scale_by_learning_rate_arg() -> optax.GradientTransformationExtraArgs:
    """Multiply updates by the ``learning_rate`` passed to ``update`` (1.0 if absent)."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, *, learning_rate=1.0, **extra):
        del params, extra
        return jax.tree_util.tree_map(lambda u: u * learning_rate, updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _factored_dims(shape, factored: bool, min_dim_size_to_factor: int):
    """(second largest, largest) axis of ``shape`` if Adafactor factors it, else None (as optax)."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def _mean_square(x):
    # A sum of row sums: each level adds at most a few tens of thousands of float32 terms, so
    # the result keeps its accuracy without XLA's tree-reduction pass (see xla_flags).
    rows = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)
    return jnp.sum(jnp.sum(rows * rows, axis=-1)) / x.size


def scale_by_adafactor(decay_rate: float = 0.8, clipping_threshold: Optional[float] = 1.0,
                       multiply_by_parameter_scale: bool = True, factored: bool = True,
                       min_dim_size_to_factor: int = 128, epsilon1: float = 1e-30,
                       min_parameter_scale: float = 1e-3, kernels: str = "auto"
                       ) -> optax.GradientTransformationExtraArgs:
    """Adafactor's scaling in one pass per parameter.

    The same arithmetic as ``optax.chain(scale_by_factored_rms, clip_by_block_rms,
    <learning rate>, scale_by_param_block_rms)`` with the same state
    (``optax.FactoredState``), written as one function of each parameter so that XLA can
    fuse it: that chain issues ~10 kernels per parameter, most of them tiny. ``kernels``
    chooses the backend kernels for the factored means (``t5cli.models.kernels``; ``auto``
    is resolved when the update is traced).
    """
    check_kernels(kernels)
    base = optax.scale_by_factored_rms(factored, decay_rate, 0, min_dim_size_to_factor, epsilon1)

    def update_fn(grads, state, params=None, *, learning_rate=1.0, **extra):
        del extra
        if params is None:
            raise ValueError("scale_by_adafactor needs params")
        decay = 1.0 - jnp.asarray(state.count + 1, jnp.float32) ** (-decay_rate)
        mean_over_axis = kernel_ops(kernels).mean_over_axis

        def one(grad, v_row, v_col, v, param):
            grad_sqr = grad * grad + epsilon1
            dims = _factored_dims(param.shape, factored, min_dim_size_to_factor)
            if dims is not None:
                d1, d0 = dims
                v_row = decay * v_row + (1.0 - decay) * mean_over_axis(grad_sqr, d0)
                v_col = decay * v_col + (1.0 - decay) * mean_over_axis(grad_sqr, d1)
                row_axis = d1 - 1 if d1 > d0 else d1
                row_factor = jax.lax.rsqrt(v_row / jnp.mean(v_row, axis=row_axis, keepdims=True))
                update = (grad * jnp.expand_dims(row_factor, d0)
                          * jnp.expand_dims(jax.lax.rsqrt(v_col), d1))
            else:
                v = decay * v + (1.0 - decay) * grad_sqr
                update = grad * jax.lax.rsqrt(v)
            scale = learning_rate
            if clipping_threshold is not None:
                scale = scale / jnp.maximum(1.0, jnp.sqrt(_mean_square(update)) / clipping_threshold)
            if multiply_by_parameter_scale:
                scale = scale * jnp.sqrt(jnp.maximum(_mean_square(param), min_parameter_scale ** 2))
            return update * scale, v_row, v_col, v

        out = jax.tree_util.tree_map(one, grads, state.v_row, state.v_col, state.v, params)
        treedef = jax.tree_util.tree_structure(grads)
        parts = [treedef.unflatten(p) for p in zip(*treedef.flatten_up_to(out))]
        return parts[0], optax.FactoredState(optax.safe_increment(state.count), *parts[1:])

    return optax.GradientTransformationExtraArgs(base.init, update_fn)


def adafactor(decay_rate: float = 0.8, clipping_threshold: Optional[float] = 1.0,
              multiply_by_parameter_scale: bool = True, factored: bool = True,
              min_dim_size_to_factor: int = 128, epsilon1: float = 1e-30,
              momentum: Optional[float] = None, weight_decay_rate: Optional[float] = None,
              kernels: str = "auto") -> optax.GradientTransformationExtraArgs:
    """Adafactor with T5X's defaults (factored, update clipping 1.0, parameter scaling).

    The steps of ``optax.adafactor``; the learning rate comes from ``update``'s
    ``learning_rate`` argument. ``kernels``: ``auto``, ``plain`` or ``cpu``, as
    ``T5Config.kernels``.
    """
    parts = [scale_by_adafactor(decay_rate, clipping_threshold, multiply_by_parameter_scale,
                                factored, min_dim_size_to_factor, epsilon1, kernels=kernels)]
    if momentum is not None:
        parts.append(optax.ema(momentum, debias=False))
    if weight_decay_rate is not None:
        parts.append(optax.add_decayed_weights(weight_decay_rate))
    parts.append(optax.scale(-1.0))
    return optax.chain(*parts)


def decay_mask(params, exclude: str = NO_DECAY_PATTERN):
    """True for parameters weight decay applies to: all but norms' ``scale`` and relpos bias."""
    pattern = re.compile(exclude)
    return tree_map_with_path_str(lambda path, _: pattern.search(path) is None, params)


def adamw(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.01,
          no_decay_pattern: str = NO_DECAY_PATTERN) -> optax.GradientTransformationExtraArgs:
    """AdamW; weight decay (scaled by the learning rate) skips norms and the relative bias."""
    return optax.chain(
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        optax.add_decayed_weights(weight_decay, mask=lambda p: decay_mask(p, no_decay_pattern)),
        scale_by_learning_rate_arg(),
        optax.scale(-1.0),
    )


def freeze(tx: optax.GradientTransformation, patterns: Sequence[str], params
           ) -> optax.GradientTransformation:
    """Wrap ``tx`` so that parameters whose path matches any regex in ``patterns`` stay fixed.

    A pattern that matches no parameter is a ConfigError (it is almost always a typo).
    """
    if not patterns:
        return tx
    compiled = []
    paths = param_paths(params)
    for p in patterns:
        try:
            rx = re.compile(p)
        except re.error as exc:
            raise ConfigError(f"freeze pattern {p!r} is not a valid regular expression: {exc}") from None
        if not any(rx.search(path) for path in paths):
            raise ConfigError(
                f"freeze pattern {p!r} matches no parameter; parameter paths look like "
                f"{paths[0]!r} (see model-info.txt)"
            )
        compiled.append(rx)

    def labels(tree):
        return tree_map_with_path_str(
            lambda path, _: "frozen" if any(rx.search(path) for rx in compiled) else "train", tree)

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


# --- gradient accumulation -----------------------------------------------------------------

class Microbatched(NamedTuple):
    grads: Any
    sums: Any


def split_microbatches(batch, num_microbatches: int):
    """[B, ...] arrays → [M, B/M, ...]; microbatch m holds examples m, m+M, … so each
    device's shard of the batch contributes equally to every microbatch."""
    def split(x):
        b = x.shape[0]
        if b % num_microbatches:
            raise ConfigError(f"batch size {b} is not divisible by num_microbatches={num_microbatches}")
        return jnp.swapaxes(x.reshape((b // num_microbatches, num_microbatches) + x.shape[1:]), 0, 1)
    return jax.tree_util.tree_map(split, batch)


def accumulate_gradients(grad_fn: Callable, params, batch, num_microbatches: Optional[int],
                         rng=None) -> Microbatched:
    """Sum ``grad_fn(params, microbatch, rng) -> (grads, sums)`` over microbatches.

    ``sums`` is a dict of scalars added up over microbatches; the per-microbatch rng is
    ``fold_in(rng, m)``. With one microbatch this is one plain call (same rng).
    """
    if not num_microbatches or num_microbatches <= 1:
        grads, sums = grad_fn(params, batch, rng)
        return Microbatched(grads, sums)
    micro = split_microbatches(batch, num_microbatches)

    def body(carry, xs):
        index, mb = xs
        mb_rng = None if rng is None else jax.random.fold_in(rng, index)
        grads, sums = grad_fn(params, mb, mb_rng)
        acc_grads, acc_sums = carry
        return (jax.tree_util.tree_map(jnp.add, acc_grads, grads),
                jax.tree_util.tree_map(jnp.add, acc_sums, sums)), None

    zero_grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    first_mb = jax.tree_util.tree_map(lambda x: x[0], micro)
    sums_shape = jax.eval_shape(lambda p, b: grad_fn(p, b, rng)[1], params, first_mb)
    zero_sums = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), sums_shape)
    indices = jnp.arange(num_microbatches)
    (grads, sums), _ = jax.lax.scan(body, (zero_grads, zero_sums), (indices, micro))
    return Microbatched(grads, sums)


# --- paths -----------------------------------------------------------------------------------

def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def path_str(path) -> str:
    """``('encoder', 'layers_0', 'kernel')`` key path → ``encoder/layers_0/kernel``."""
    return "/".join(_key_name(k) for k in path)


def tree_map_with_path_str(fn: Callable[[str, Any], Any], tree):
    return jax.tree_util.tree_map_with_path(lambda p, x: fn(path_str(p), x), tree)


def param_paths(params) -> list:
    return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
