"""The pure training and evaluation steps, and their compilation over a mesh.

``train_step(state, batch, dropout_rng) -> (state, metrics)`` and
``eval_step(params, batch) -> sums`` are plain functions of arrays; :func:`compile_steps`
jit-compiles them once with explicit shardings and donates the train state.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from t5cli.runtime import losses, optim


def make_eval_step(model, *, z_loss: float = 1e-4, label_smoothing: float = 0.0,
                   loss_normalizing_factor=None) -> Callable:
    """``eval_step(params, batch) -> sums`` (see :func:`t5cli.runtime.losses.loss_sums`), no dropout."""

    def eval_step(params, batch):
        return model_loss_sums(model, params, batch, None, label_smoothing=label_smoothing, z_loss=z_loss,
                               loss_normalizing_factor=loss_normalizing_factor)

    return eval_step


def model_loss_sums(model, params, batch, dropout_rng, **loss_args):
    """The loss sums of ``model`` on ``batch``: a model with its own ``loss_sums`` computes
    them (the encoder-decoder's takes its logits a chunk of positions at a time, the
    encoder-only heads of :mod:`t5cli.models.head_models` have losses of their own), else
    the token cross entropy of :func:`t5cli.runtime.losses.loss_sums` on ``compute_logits``."""
    if hasattr(model, "loss_sums"):
        return model.loss_sums(params, batch, dropout_rng, **loss_args)
    logits = model.compute_logits(params, batch, dropout_rng=dropout_rng)
    return losses.loss_sums(logits, batch, **loss_args)


def make_train_step(model, tx, schedule: Callable, *, z_loss: float = 1e-4,
                    label_smoothing: float = 0.0, loss_normalizing_factor=None,
                    num_microbatches: Optional[int] = None, use_dropout: bool = True) -> Callable:
    """The pure ``train_step(state, batch, dropout_rng) -> (state, metrics)``.

    ``state`` is ``{"params", "opt_state", "step"}``; the dropout rng of a step is
    ``fold_in(dropout_rng, step)``, so a resumed run draws the same masks. ``tx.update``
    receives ``learning_rate=schedule(step)``. ``metrics`` are sums (see
    :func:`t5cli.runtime.losses.loss_sums`) plus ``loss_normalized``, ``learning_rate`` and
    ``finite`` (1 when the loss and the gradient norm are finite, else 0).
    """

    def grad_fn(params, batch, rng):
        def f(p):
            sums = model_loss_sums(model, p, batch, rng, label_smoothing=label_smoothing, z_loss=z_loss,
                                   loss_normalizing_factor=loss_normalizing_factor)
            return sums["loss"], sums
        return jax.grad(f, has_aux=True)(params)

    def train_step(state, batch, dropout_rng):
        params, step = state["params"], state["step"]
        rng = jax.random.fold_in(dropout_rng, step) if use_dropout else None
        grads, sums = optim.accumulate_gradients(grad_fn, params, batch, num_microbatches, rng)
        norm = losses.batch_normalizer(loss_normalizing_factor, sums)
        grads = jax.tree_util.tree_map(lambda g: g / norm, grads)
        lr = schedule(step)
        updates, opt_state = tx.update(grads, state["opt_state"], params, learning_rate=lr)
        new_state = {"params": optax.apply_updates(params, updates), "opt_state": opt_state,
                     "step": step + 1}
        # checked by the loop where it reads the metrics anyway: no extra wait per step
        finite = jnp.isfinite(sums["loss"]) & jnp.isfinite(optax.global_norm(grads))
        return new_state, dict(sums, loss_normalized=sums["loss"] / norm, learning_rate=lr,
                               finite=finite.astype(jnp.int32))

    return train_step


def compile_steps(model, layout, schedule: Callable, *, z_loss: float, label_smoothing: float,
                  loss_normalizing_factor, num_microbatches: Optional[int]) -> Tuple[Callable, Callable]:
    """``(train_step, eval_step)`` jit-compiled with the shardings of ``layout``
    (a :class:`t5cli.runtime.train_state.Layout`); the train state is donated. Dropout is
    on when the model's config has a non-zero ``dropout_rate``."""
    use_dropout = bool(getattr(model.config, "dropout_rate", 0.0))
    train_step = make_train_step(model, layout.tx, schedule, z_loss=z_loss, label_smoothing=label_smoothing,
                                 loss_normalizing_factor=loss_normalizing_factor,
                                 num_microbatches=num_microbatches, use_dropout=use_dropout)
    eval_step = make_eval_step(model, z_loss=z_loss, label_smoothing=label_smoothing,
                               loss_normalizing_factor=loss_normalizing_factor)
    replicated, batch = layout.replicated, layout.batch_sharding
    compiled_train = jax.jit(train_step, in_shardings=(layout.state_shardings, batch, replicated),
                             out_shardings=(layout.state_shardings, replicated), donate_argnums=(0,))
    compiled_eval = jax.jit(eval_step, in_shardings=(layout.param_shardings, batch), out_shardings=replicated)
    return compiled_train, compiled_eval


__all__ = ["make_train_step", "make_eval_step", "model_loss_sums", "compile_steps"]
