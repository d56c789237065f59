"""Token cross entropy with z-loss and label smoothing, and the sums training logs.

Semantics follow T5X's ``cross_entropy_with_logits`` / ``compute_weighted_cross_entropy``:
the smoothed loss has the entropy of the smoothed target distribution subtracted (so a
perfect prediction scores 0), and the z-loss ``z_loss * log(Z)**2`` is added per token.

Everything here returns *sums* over tokens together with their denominators, so that
microbatches and devices can be added up before anything is divided. The loss a step
minimises is ``loss_sum / normalizer`` where the normalizer follows
``LOSS_NORMALIZING_FACTOR``:

- ``None``: 1 (the loss is the sum over target tokens, T5X's default);
- a number: that constant (e.g. pretraining batch size × target length);
- ``"NUM_REAL_TARGET_TOKENS"``: non-padding target tokens of the batch;
- ``"NUM_TOTAL_TARGET_TOKENS"``: batch size × target length, padding included;
- ``"AVERAGE_PER_SEQUENCE"``: each target sequence (packed segments count separately)
  weighs the same; the normalizer is the number of sequences.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Dict, Mapping, Optional, Union

import jax
import jax.numpy as jnp

from t5cli.errors import ConfigError

SPECIAL_NORMALIZERS = ("NUM_REAL_TARGET_TOKENS", "NUM_TOTAL_TARGET_TOKENS", "AVERAGE_PER_SEQUENCE")

LossNormalizingFactor = Union[None, float, int, str]


def check_loss_normalizing_factor(value: LossNormalizingFactor) -> LossNormalizingFactor:
    """Return ``value`` if it is valid, else raise ConfigError naming the choices."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
        return value
    if isinstance(value, str):
        name = value.upper()
        if name.startswith("SPECIALLOSSNORMALIZINGFACTOR."):  # T5X's enum spelling
            name = name.split(".", 1)[1]
        if name in SPECIAL_NORMALIZERS:
            return name
    raise ConfigError(
        f"LOSS_NORMALIZING_FACTOR={value!r} is not valid; use None, a positive number or one of "
        + ", ".join(repr(s) for s in SPECIAL_NORMALIZERS)
    )


def cross_entropy_with_logits(logits: jnp.ndarray, soft_targets: jnp.ndarray,
                              z_loss: float = 0.0):
    """Per-token cross entropy of ``soft_targets`` under ``logits``, plus the z-loss.

    Returns ``(loss, z_loss_part)``, both shaped like ``logits[..., 0]``; ``loss`` already
    contains ``z_loss_part``.
    """
    log_z = jax.nn.logsumexp(logits, axis=-1)
    log_softmax = logits - log_z[..., None]
    loss = -jnp.sum(soft_targets * log_softmax, axis=-1)
    z_part = z_loss * jnp.square(log_z)
    return loss + z_part, z_part


def token_losses(logits: jnp.ndarray, targets: jnp.ndarray, *, label_smoothing: float = 0.0,
                 z_loss: float = 0.0):
    """Per-token ``(loss, z_loss_part, correct)`` for integer ``targets`` [B, L].

    With label smoothing the target distribution puts ``1 - label_smoothing`` on the true
    token and spreads the rest evenly; its entropy is subtracted, as in T5X. A token is
    correct when no logit exceeds the true token's (argmax's answer but for exact ties),
    which needs a max over the vocabulary rather than a slower arg-max pass.
    """
    logits = logits.astype(jnp.float32)
    targets = targets.astype(jnp.int32)
    loss, z_part = _token_xent(logits, targets, float(z_loss), float(label_smoothing))
    true_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    correct = true_logit >= jnp.max(logits, axis=-1)
    return loss, z_part, correct


def _xent_forward(logits, targets, z_loss, label_smoothing):
    vocab = logits.shape[-1]
    log_z = jax.nn.logsumexp(logits, axis=-1)
    # A gather of the true-token logit instead of a one-hot [B, L, V] product.
    true_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    if label_smoothing:
        confidence = 1.0 - label_smoothing
        low = label_smoothing / (vocab - 1)
        mean_logit = jnp.mean(logits, axis=-1)
        # sum_v q_v * log p_v with q = low everywhere except confidence on the target
        expected_logp = (confidence - low) * true_logit + low * vocab * mean_logit - log_z
        entropy = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
        loss = -expected_logp - entropy
    else:
        loss = log_z - true_logit
    z_part = z_loss * jnp.square(log_z)
    return (loss + z_part, z_part), log_z


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _token_xent(logits, targets, z_loss, label_smoothing):
    """``(loss incl. z-loss, z_loss part)`` per token; the gradient is written by hand.

    Autodiff of the gather scatters into a [B, L, V] zero tensor and takes several passes
    over the logits; the hand-written gradient ``p * (1 + 2 z log Z) - q`` is one fused
    pass, which matters on CPU where the logits are the largest tensor of a step.
    """
    return _xent_forward(logits, targets, z_loss, label_smoothing)[0]


def _token_xent_fwd(logits, targets, z_loss, label_smoothing):
    out, log_z = _xent_forward(logits, targets, z_loss, label_smoothing)
    return out, (logits, targets, log_z)


def _token_xent_bwd(z_loss, label_smoothing, residuals, cotangents):
    logits, targets, log_z = residuals
    g_loss, g_z = cotangents
    vocab = logits.shape[-1]
    probs = jnp.exp(logits - log_z[..., None])
    on_target = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1) == targets[..., None]
    low = label_smoothing / (vocab - 1) if label_smoothing else 0.0
    soft_targets = jnp.where(on_target, 1.0 - label_smoothing, low)
    z_scale = (2.0 * z_loss * log_z * (g_loss + g_z))[..., None]
    grad = g_loss[..., None] * (probs - soft_targets) + z_scale * probs
    return grad.astype(logits.dtype), None


_token_xent.defvjp(_token_xent_fwd, _token_xent_bwd)


def _per_sequence_weights(weights: jnp.ndarray, segment_ids: Optional[jnp.ndarray]) -> jnp.ndarray:
    """Scale ``weights`` so that each sequence (packed segment) sums to 1."""
    if segment_ids is None:
        counts = jnp.sum(weights, axis=-1, keepdims=True)
    else:
        # tokens of the same segment in the same row: [B, L, L] mask is fine for T5 lengths
        same = segment_ids[:, :, None] == segment_ids[:, None, :]
        counts = jnp.einsum("bij,bj->bi", same.astype(weights.dtype), weights)
    return jnp.where(counts > 0, weights / jnp.where(counts > 0, counts, 1.0), 0.0)


def _target_weights(batch: Mapping[str, jnp.ndarray]):
    """``(targets, weights)``: the target tokens and the float32 weight of each (its
    ``decoder_loss_weights``, else 1 for every non-padding token)."""
    targets = batch["decoder_target_tokens"]
    weights = batch.get("decoder_loss_weights")
    if weights is None:
        weights = (targets > 0)
    return targets, weights.astype(jnp.float32)


def _loss_weights_and_normalizer(mode: LossNormalizingFactor, targets, weights, batch):
    """The per-token weights of the ``loss`` sum and its normalizer (module docstring)."""
    if mode == "AVERAGE_PER_SEQUENCE":
        loss_weights = _per_sequence_weights(weights, batch.get("decoder_segment_ids"))
        return loss_weights, jnp.sum(loss_weights)
    if mode == "NUM_REAL_TARGET_TOKENS":
        return weights, jnp.sum(weights)
    if mode == "NUM_TOTAL_TARGET_TOKENS":
        return weights, jnp.asarray(targets.size, jnp.float32)
    # constant modes: see batch_normalizer
    return weights, jnp.asarray(1.0 if mode is None else float(mode), jnp.float32)


def _token_sums(loss, z_part, correct, weights, loss_weights) -> Dict[str, jnp.ndarray]:
    """The sums of :func:`loss_sums` that add up per token."""
    return {
        "loss": jnp.sum(loss * loss_weights),
        "z_loss": jnp.sum(z_part * weights),
        "cross_ent_loss": jnp.sum((loss - z_part) * weights),
        "unweighted_loss": jnp.sum(loss * weights),
        "correct": jnp.sum(correct * weights),
    }


def loss_sums(logits: jnp.ndarray, batch: Mapping[str, jnp.ndarray], *,
              label_smoothing: float = 0.0, z_loss: float = 0.0,
              loss_normalizing_factor: LossNormalizingFactor = None) -> Dict[str, jnp.ndarray]:
    """Sums over one (micro)batch: ``loss`` (to be divided by ``normalizer``) and metrics.

    Keys: ``loss``, ``normalizer``, ``z_loss``, ``cross_ent_loss``, ``weight_sum`` (real
    target tokens), ``correct``, ``total_tokens``, ``unweighted_loss`` (cross entropy + z
    over real tokens, whatever the normalizing mode).
    """
    targets, weights = _target_weights(batch)
    loss_weights, normalizer = _loss_weights_and_normalizer(loss_normalizing_factor, targets, weights, batch)
    loss, z_part, correct = token_losses(logits, targets, label_smoothing=label_smoothing,
                                         z_loss=z_loss)
    return dict(_token_sums(loss, z_part, correct, weights, loss_weights), normalizer=normalizer,
                weight_sum=jnp.sum(weights), total_tokens=jnp.asarray(targets.size, jnp.float32))


#: float32 bytes of logits one chunk of :func:`projected_loss_sums` may make
LOGITS_CHUNK_BYTES = 32 << 20


@contextlib.contextmanager
def whole_logits():
    """Within it, :func:`projected_loss_sums` traces the whole logits in one piece: for
    counting FLOPs (XLA's cost analysis counts a loop's body once, not once per chunk)."""
    global LOGITS_CHUNK_BYTES
    saved, LOGITS_CHUNK_BYTES = LOGITS_CHUNK_BYTES, 1 << 62
    try:
        yield
    finally:
        LOGITS_CHUNK_BYTES = saved


def projected_loss_sums(project: Callable, projection, hidden: jnp.ndarray, batch: Mapping[str, jnp.ndarray], *,
                        label_smoothing: float = 0.0, z_loss: float = 0.0,
                        loss_normalizing_factor: LossNormalizingFactor = None,
                        chunk_bytes: Optional[int] = None) -> Dict[str, jnp.ndarray]:
    """:func:`loss_sums` of ``project(projection, hidden)`` (float32 logits [B, L, V] from the
    last hidden states [B, L, D]), computed a chunk of positions at a time so that neither
    the whole logits nor their whole gradient is ever held: with a 32k vocabulary they are
    the largest tensors of a training step.

    The gradient of the ``loss`` sum with respect to ``projection`` and ``hidden`` is made in
    the forward pass, chunk by chunk, and scaled by the incoming cotangent in the backward
    pass: the same products as autodiff of the whole logits, and no second pass over them.
    Only ``loss`` is differentiable (the other sums are metrics). When the logits fit in
    ``chunk_bytes`` (default :data:`LOGITS_CHUNK_BYTES`) this is :func:`loss_sums` of the
    whole logits.
    """
    targets, weights = _target_weights(batch)
    loss_weights, normalizer = _loss_weights_and_normalizer(loss_normalizing_factor, targets, weights, batch)
    batch_size, length = targets.shape
    vocab = jax.eval_shape(project, projection, hidden[:1, :1]).shape[-1]
    num_chunks = _num_chunks(length, batch_size * length * vocab * 4,
                             LOGITS_CHUNK_BYTES if chunk_bytes is None else chunk_bytes)
    if num_chunks == 1:
        return loss_sums(project(projection, hidden), batch, label_smoothing=label_smoothing, z_loss=z_loss,
                         loss_normalizing_factor=loss_normalizing_factor)
    sums_fn = _chunked_token_sums(project, num_chunks, float(z_loss), float(label_smoothing))
    sums = sums_fn(projection, hidden, targets.astype(jnp.int32), weights, loss_weights)
    return dict(sums, normalizer=normalizer, weight_sum=jnp.sum(weights),
                total_tokens=jnp.asarray(targets.size, jnp.float32))


#: at most this many chunks: more would make each chunk's products too small to run well
MAX_LOGITS_CHUNKS = 8


def _num_chunks(length: int, logits_bytes: int, chunk_bytes: int) -> int:
    """The fewest chunks of whole positions (a divisor of ``length``, at most
    :data:`MAX_LOGITS_CHUNKS`) whose logits fit in ``chunk_bytes``, else the most there can be."""
    wanted = -(-logits_bytes // max(chunk_bytes, 1))
    divisors = [n for n in range(1, min(length, MAX_LOGITS_CHUNKS) + 1) if length % n == 0]
    return next((n for n in divisors if n >= wanted), divisors[-1])


def _chunked_token_sums(project: Callable, num_chunks: int, z_loss: float, label_smoothing: float):
    """``sums(projection, hidden, targets, weights, loss_weights)`` -> :func:`_token_sums`,
    a ``lax.scan`` over ``num_chunks`` chunks of positions, with a hand-made gradient for
    ``loss`` (see :func:`projected_loss_sums`)."""

    def split(x):  # [B, L, ...] -> [chunks, B, L / chunks, ...]: the batch axis stays whole
        b, l = x.shape[:2]
        return jnp.moveaxis(x.reshape(b, num_chunks, l // num_chunks, *x.shape[2:]), 1, 0)

    def merge(x):  # the inverse of split
        n, b, c = x.shape[:3]
        return jnp.moveaxis(x, 0, 1).reshape(b, n * c, *x.shape[3:])

    def chunk_sums(logits, targets, weights, loss_weights):
        loss, z_part, correct = token_losses(logits, targets, label_smoothing=label_smoothing, z_loss=z_loss)
        sums = _token_sums(loss, z_part, correct, weights, loss_weights)
        return sums["loss"], sums

    def run(projection, hidden, targets, weights, loss_weights, with_grad: bool):
        zero_sums = {k: jnp.zeros((), jnp.float32) for k in ("loss", "z_loss", "cross_ent_loss",
                                                            "unweighted_loss", "correct")}
        carry = (zero_sums, jax.tree_util.tree_map(jnp.zeros_like, projection) if with_grad else None)

        def step(carry, chunk):
            totals, projection_grad = carry
            h, t, w, lw = chunk
            if not with_grad:
                _, sums = chunk_sums(project(projection, h), t, w, lw)
                return (jax.tree_util.tree_map(jnp.add, totals, sums), None), None
            logits, project_vjp = jax.vjp(project, projection, h)
            _, sums_vjp, sums = jax.vjp(lambda x: chunk_sums(x, t, w, lw), logits, has_aux=True)
            (logits_grad,) = sums_vjp(jnp.ones((), jnp.float32))
            g_projection, g_hidden = project_vjp(logits_grad)
            projection_grad = jax.tree_util.tree_map(jnp.add, projection_grad, g_projection)
            return (jax.tree_util.tree_map(jnp.add, totals, sums), projection_grad), g_hidden

        chunks = tuple(split(x) for x in (hidden, targets, weights, loss_weights))
        (totals, projection_grad), hidden_grads = jax.lax.scan(step, carry, chunks)
        grads = (projection_grad, merge(hidden_grads)) if with_grad else None
        return totals, grads

    @jax.custom_vjp
    def sums(projection, hidden, targets, weights, loss_weights):
        return run(projection, hidden, targets, weights, loss_weights, with_grad=False)[0]

    def sums_fwd(projection, hidden, targets, weights, loss_weights):
        return run(projection, hidden, targets, weights, loss_weights, with_grad=True)

    def sums_bwd(grads, cotangents):
        projection_grad, hidden_grad = grads
        scale = cotangents["loss"]
        projection_grad = jax.tree_util.tree_map(lambda g: (g * scale).astype(g.dtype), projection_grad)
        return projection_grad, (hidden_grad * scale).astype(hidden_grad.dtype), None, None, None

    sums.defvjp(sums_fwd, sums_bwd)
    return sums


def batch_normalizer(mode: LossNormalizingFactor, sums: Mapping[str, jnp.ndarray]):
    """The divisor of a whole batch's ``loss`` sum, from sums added over its microbatches.

    Constant modes do not depend on the batch, so they are not taken from the (added) sums.
    """
    if mode is None:
        return jnp.asarray(1.0, jnp.float32)
    if isinstance(mode, (int, float)):
        return jnp.asarray(float(mode), jnp.float32)
    return sums["normalizer"]


def summarize(sums: Mapping[str, float], num_steps: int = 1) -> Dict[str, float]:
    """Scalars written to TensorBoard from metric sums accumulated over ``num_steps`` steps.

    ``loss`` is the per-step loss the optimiser saw (averaged over the steps), the others
    are per-token means.
    """
    steps = max(num_steps, 1)
    tokens = max(float(sums["weight_sum"]), 1.0)
    all_tokens = max(float(sums["total_tokens"]), 1.0)
    out = {
        "loss": float(sums["loss_normalized"]) / steps,
        "z_loss": float(sums["z_loss"]) / steps,
        "cross_ent_loss": float(sums["cross_ent_loss"]) / steps,
        "loss_per_nonpadding_target_token": float(sums["unweighted_loss"]) / tokens,
        "loss_per_all_target_tokens": float(sums["unweighted_loss"]) / all_tokens,
        "cross_ent_loss_per_nonpadding_target_token": float(sums["cross_ent_loss"]) / tokens,
        "z_loss_per_nonpadding_target_token": float(sums["z_loss"]) / tokens,
        "accuracy": float(sums["correct"]) / tokens,
        "nonpadding_fraction": float(sums["weight_sum"]) / all_tokens,
    }
    return out
