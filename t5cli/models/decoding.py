"""Decoding algorithms over a step function: greedy, temperature sampling, beam search.

The algorithms know nothing about the network. They drive a *step function*

    tokens_to_logits(token_ids: int32[B', 1], cache) -> (logits: float32[B', V], new_cache)

which consumes the previously generated token of every row and returns the logits of
the next one, carrying whatever state it needs (e.g. the attention key/value cache) in
``cache``. Every leaf of ``cache`` has a leading batch dimension ``B'``. Greedy decoding
and sampling use ``B' = batch_size``; beam search flattens ``[batch, beams]`` into
``B' = batch_size * num_beams`` and repeats / reorders the cache leaves along axis 0.

Every loop is a ``jax.lax.while_loop`` that stops as soon as every row has finished,
so all functions are jit-compatible: callers normally jit the whole decode together
with the closure over the model parameters. Generated sequences do not include the
start token; positions after the end-of-sequence (EOS) token hold ``pad_id``.
"""

from __future__ import annotations

from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

StepFn = Callable[[jax.Array, Any], Tuple[jax.Array, Any]]

NEG_INF = -np.inf

__all__ = [
    "StepFn",
    "brevity_penalty",
    "greedy_decode",
    "temperature_sample",
    "beam_search",
    "repeat_for_beams",
    "filter_logits",
]


# --------------------------------------------------------------------------- helpers


def brevity_penalty(length, alpha):
    """T5X's length normalisation ``((5 + length) / 6) ** alpha``."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def repeat_for_beams(tree, num_beams: int):
    """Repeat every leaf ``num_beams`` times along axis 0: ``[B, ...] -> [B * num_beams, ...]``.

    Row ``b * num_beams + k`` is beam ``k`` of batch element ``b``.
    """
    return jax.tree_util.tree_map(lambda x: jnp.repeat(x, num_beams, axis=0), tree)


def _gather_rows(tree, rows: jax.Array, num_rows: int):
    """Select rows ``rows`` (int32[num_rows]) along axis 0 of every batched leaf."""

    def take(x):
        if getattr(x, "ndim", 0) >= 1 and x.shape[0] == num_rows:
            return jnp.take(x, rows, axis=0)
        return x  # a leaf without the batch dimension: leave it alone

    return jax.tree_util.tree_map(take, tree)


def _argmax(x: jax.Array) -> jax.Array:
    """``jnp.argmax`` over the last axis (first index among ties), as two plain reductions.

    XLA:CPU lowers ``argmax`` to a slow variadic (value, index) reduce; a max followed by
    a min over matching indices is several times faster on vocabulary-sized rows.
    """
    top = jnp.max(x, axis=-1, keepdims=True)
    iota = lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    first = jnp.min(jnp.where(x == top, iota, x.shape[-1]), axis=-1)
    return jnp.minimum(first, x.shape[-1] - 1)  # a NaN row still yields a valid id


def filter_logits(logits: jax.Array, *, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Set logits outside the top-k tokens / the top-p nucleus to -inf.

    ``top_k`` and ``top_p`` are static: ``top_k <= 0`` and ``top_p >= 1`` disable the
    filter. The most likely token always survives, so ``top_k=1`` or a tiny ``top_p``
    leaves exactly the argmax.
    """
    vocab = logits.shape[-1]
    if top_k and 0 < top_k < vocab:
        kth = lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, NEG_INF, logits)
    if top_p < 1.0:
        sorted_logits = -jnp.sort(-logits, axis=-1)  # descending
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        keep = mass_before < top_p
        keep = keep.at[..., 0].set(True)  # the argmax always stays
        threshold = jnp.min(jnp.where(keep, sorted_logits, np.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, NEG_INF, logits)
    return logits


# ------------------------------------------------------------- greedy and sampling


def _ancestral_loop(
    tokens_to_logits: StepFn,
    cache,
    choose: Callable[[jax.Array, jax.Array], jax.Array],
    *,
    batch_size: int,
    max_decode_length: int,
    eos_id: int,
    start_id: int,
    pad_id: int,
):
    """One token per row per step, chosen by ``choose(step, logits) -> int32[B]``."""
    b, length = batch_size, max_decode_length

    def cond(state):
        i, _, _, _, _, done = state
        return (i < length) & ~jnp.all(done)

    def body(state):
        i, tokens, cache, seqs, scores, done = state
        logits, cache = tokens_to_logits(tokens, cache)
        logits = logits.astype(jnp.float32)
        next_tokens = jnp.where(done, pad_id, choose(i, logits).astype(jnp.int32))
        chosen = jnp.take_along_axis(logits, next_tokens[:, None], axis=-1)[:, 0]
        token_lp = chosen - jax.nn.logsumexp(logits, axis=-1)
        scores = scores + jnp.where(done, 0.0, token_lp)
        seqs = lax.dynamic_update_slice(seqs, next_tokens[:, None], (0, i))
        done = done | (next_tokens == eos_id)
        return i + 1, next_tokens[:, None], cache, seqs, scores, done

    init = (
        jnp.int32(0),
        jnp.full((b, 1), start_id, jnp.int32),
        cache,
        jnp.full((b, length), pad_id, jnp.int32),
        jnp.zeros((b,), jnp.float32),
        jnp.zeros((b,), jnp.bool_),
    )
    _, _, _, seqs, scores, _ = lax.while_loop(cond, body, init)
    return seqs, scores


def greedy_decode(
    tokens_to_logits: StepFn,
    cache,
    *,
    batch_size: int,
    max_decode_length: int,
    eos_id: int = 1,
    start_id: int = 0,
    pad_id: int = 0,
) -> Tuple[jax.Array, jax.Array]:
    """Pick the argmax token each step until EOS or ``max_decode_length``.

    Returns ``(sequences int32[B, L], scores float32[B])`` where a score is the sum of
    the log-probabilities of the generated tokens up to and including EOS.
    """
    return _ancestral_loop(
        tokens_to_logits,
        cache,
        lambda i, logits: _argmax(logits),
        batch_size=batch_size,
        max_decode_length=max_decode_length,
        eos_id=eos_id,
        start_id=start_id,
        pad_id=pad_id,
    )


def temperature_sample(
    tokens_to_logits: StepFn,
    cache,
    *,
    batch_size: int,
    max_decode_length: int,
    rng: jax.Array,
    temperature=1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: int = 1,
    start_id: int = 0,
    pad_id: int = 0,
) -> Tuple[jax.Array, jax.Array]:
    """Sample from ``softmax(logits / temperature)`` restricted to top-k / top-p.

    ``temperature`` may be traced; ``0`` gives exactly :func:`greedy_decode`. ``top_k``
    and ``top_p`` are static (see :func:`filter_logits`). The same ``rng`` reproduces
    the same samples. Scores are sums of the model's unmodified log-probabilities
    (before temperature and filtering) of the generated tokens, up to and including EOS.
    Returns ``(sequences int32[B, L], scores float32[B])``.
    """
    temperature = jnp.asarray(temperature, jnp.float32)

    def choose(i, logits):
        safe_t = jnp.where(temperature > 0, temperature, 1.0)
        filtered = filter_logits(logits / safe_t, top_k=top_k, top_p=top_p)
        # Gumbel-max: argmax(logits + Gumbel noise) is a sample of softmax(logits).
        noise = jax.random.gumbel(jax.random.fold_in(rng, i), logits.shape, jnp.float32)
        noise = jnp.where(temperature > 0, noise, 0.0)  # no noise: exactly greedy
        return _argmax(jnp.where(temperature > 0, filtered, logits) + noise)

    return _ancestral_loop(
        tokens_to_logits,
        cache,
        choose,
        batch_size=batch_size,
        max_decode_length=max_decode_length,
        eos_id=eos_id,
        start_id=start_id,
        pad_id=pad_id,
    )


# --------------------------------------------------------------------- beam search


def beam_search(
    tokens_to_logits: StepFn,
    cache,
    *,
    batch_size: int,
    max_decode_length: int,
    num_beams: int = 4,
    alpha: float = 0.6,
    eos_id: int = 1,
    start_id: int = 0,
    pad_id: int = 0,
) -> Tuple[jax.Array, jax.Array]:
    """Beam search with T5X's brevity penalty.

    ``cache`` has batch dimension ``batch_size``; it is repeated to
    ``batch_size * num_beams`` rows (see :func:`repeat_for_beams`), so a step function
    that closes over per-example data (e.g. the encoder output) must already see it
    repeated the same way.

    A finished hypothesis of ``n`` generated tokens (EOS included) with log-probability
    ``lp`` scores ``lp / ((5 + n) / 6) ** alpha``. Hypotheses still alive at
    ``max_decode_length`` finish there, scored the same way with ``n = L``. Each step
    every live beam's EOS extension is offered to the finished set and the best
    ``num_beams`` non-EOS extensions stay live; the loop stops once no live beam can beat
    the worst kept finished hypothesis. Returns ``(sequences int32[B, num_beams, L],
    scores float32[B, num_beams])`` best first; when fewer than ``num_beams``
    hypotheses exist the extra rows score ``-inf``.
    """
    b, k, length = batch_size, num_beams, max_decode_length
    rows = b * k
    cache = repeat_for_beams(cache, k)
    alpha = jnp.asarray(alpha, jnp.float32)
    batch_offsets = (jnp.arange(b, dtype=jnp.int32) * k)[:, None]

    def set_column(seqs, i, tokens):  # seqs [b, n, L], tokens [b, n]
        return lax.dynamic_update_slice(seqs, tokens[:, :, None], (0, 0, i))

    def cond(state):
        return (state["i"] < length) & ~jnp.all(state["done"])

    def body(state):
        i = state["i"]
        n_generated = i + 1
        logits, new_cache = tokens_to_logits(state["tokens"].reshape(rows, 1), state["cache"])
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        vocab = log_probs.shape[-1]
        cand = state["live_lp"][:, :, None] + log_probs.reshape(b, k, vocab)  # [b, k, V]

        # Every live beam ending here with EOS is a finished candidate.
        has_eos = 0 <= eos_id < vocab  # static; a negative eos_id disables EOS
        if has_eos:
            eos_scores = cand[:, :, eos_id] / brevity_penalty(n_generated, alpha)
            cand = cand.at[:, :, eos_id].set(NEG_INF)
        else:
            eos_scores = jnp.full((b, k), NEG_INF, jnp.float32)
        eos_seqs = set_column(state["live_seqs"], i, jnp.full((b, k), eos_id, jnp.int32))

        # The best k non-EOS extensions stay live.
        flat = cand.reshape(b, k * vocab)
        live_lp, flat_idx = lax.top_k(flat, k)
        parent = (flat_idx // vocab).astype(jnp.int32)
        tokens = (flat_idx % vocab).astype(jnp.int32)
        live_seqs = jnp.take_along_axis(state["live_seqs"], parent[:, :, None], axis=1)
        live_seqs = set_column(live_seqs, i, tokens)

        # At the last position the live beams finish too (cut at max length).
        is_last = n_generated >= length
        cut_scores = jnp.where(is_last, live_lp / brevity_penalty(length, alpha), NEG_INF)

        all_scores = jnp.concatenate([state["fin_scores"], eos_scores, cut_scores], axis=1)
        all_seqs = jnp.concatenate([state["fin_seqs"], eos_seqs, live_seqs], axis=1)
        fin_scores, pick = lax.top_k(all_scores, k)
        fin_seqs = jnp.take_along_axis(all_seqs, pick[:, :, None], axis=1)

        # Log-probs only fall, so a live beam's best possible final score is its current
        # log-prob under the most favourable penalty among the lengths still reachable.
        next_len = jnp.minimum(n_generated + 1, length)
        bound = jnp.maximum(
            live_lp / brevity_penalty(next_len, alpha), live_lp / brevity_penalty(length, alpha)
        )
        done = is_last | (jnp.min(fin_scores, axis=1) >= jnp.max(bound, axis=1))

        new_cache = _gather_rows(new_cache, (batch_offsets + parent).reshape(rows), rows)
        return dict(
            i=i + 1,
            tokens=tokens,
            cache=new_cache,
            live_seqs=live_seqs,
            live_lp=live_lp,
            fin_seqs=fin_seqs,
            fin_scores=fin_scores,
            done=done,
        )

    init = dict(
        i=jnp.int32(0),
        tokens=jnp.full((b, k), start_id, jnp.int32),
        cache=cache,
        live_seqs=jnp.full((b, k, length), pad_id, jnp.int32),
        # Only beam 0 is alive at the start so that the k copies do not duplicate.
        live_lp=jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (b, 1)),
        fin_seqs=jnp.full((b, k, length), pad_id, jnp.int32),
        fin_scores=jnp.full((b, k), NEG_INF, jnp.float32),
        done=jnp.zeros((b,), jnp.bool_),
    )
    final = lax.while_loop(cond, body, init)
    return final["fin_seqs"], final["fin_scores"]
