"""Batch inference: encode once, then decode with an incremental KV cache.

Glue between :class:`t5cli.models.model.EncoderDecoderModel` and the network-free
algorithms in :mod:`t5cli.models.decoding`. Each combination of model, method and shapes
is jit-compiled once and cached, so evaluating many batches of the same shape compiles
only on the first.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from t5cli.errors import ConfigError
from t5cli.models import decoding

METHODS = ("greedy", "sample", "beam")

# (id(model), method, shapes, static options) -> (model, compiled fn). The model is kept
# alive with its entry so that its id cannot be reused by another object.
_COMPILED: Dict[Tuple, Tuple[Any, Callable]] = {}
_LOCK = threading.Lock()


def _decode_fn(model, method: str, *, batch_size: int, max_decode_length: int,
               num_beams: int, top_k: int, top_p: float) -> Callable:
    """Build the jitted ``fn(params, encoder_input_tokens, rng, temperature, alpha)``."""
    eos_id = int(getattr(model, "eos_id", 1))
    pad_id = int(getattr(model, "pad_id", 0))
    common = dict(max_decode_length=max_decode_length, eos_id=eos_id, start_id=pad_id,
                  pad_id=pad_id)

    def fn(params, encoder_input_tokens, rng, temperature, alpha):
        encoded = model.encode(params, encoder_input_tokens)
        cache = model.init_cache(batch_size, max_decode_length)
        if method == "beam":
            encoded = decoding.repeat_for_beams(encoded, num_beams)
            encoder_input_tokens = decoding.repeat_for_beams(encoder_input_tokens, num_beams)

        def tokens_to_logits(token_ids, cache):
            return model.decode_step(params, cache, encoded, encoder_input_tokens, token_ids)

        if method == "greedy":
            return decoding.greedy_decode(tokens_to_logits, cache, batch_size=batch_size,
                                          **common)
        if method == "sample":
            return decoding.temperature_sample(
                tokens_to_logits, cache, batch_size=batch_size, rng=rng,
                temperature=temperature, top_k=top_k, top_p=top_p, **common)
        seqs, scores = decoding.beam_search(
            tokens_to_logits, cache, batch_size=batch_size, num_beams=num_beams,
            alpha=alpha, **common)
        return seqs[:, 0], scores[:, 0]

    return jax.jit(fn)


def get_decode_fn(model, method: str, *, batch_size: int, input_length: int,
                  max_decode_length: int, num_beams: int = 4, top_k: int = 0,
                  top_p: float = 1.0) -> Callable:
    """The cached jitted ``fn(params, encoder_input_tokens, rng, temperature, alpha)``.

    It returns ``(tokens int32[B, L], scores float32[B])`` (the best beam for ``beam``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown decoding method {method!r}; expected one of {METHODS}")
    if method != "beam":
        num_beams = 1
    if method != "sample":
        top_k, top_p = 0, 1.0
    key = (id(model), method, batch_size, input_length, max_decode_length, num_beams,
           int(top_k), float(top_p))
    with _LOCK:
        entry = _COMPILED.get(key)
        if entry is None or entry[0] is not model:
            fn = _decode_fn(model, method, batch_size=batch_size,
                            max_decode_length=max_decode_length, num_beams=num_beams,
                            top_k=int(top_k), top_p=float(top_p))
            entry = _COMPILED[key] = (model, fn)
    return entry[1]


def predict_batch(
    model,
    params,
    batch: Mapping[str, Any],
    *,
    method: str = "greedy",
    num_beams: int = 4,
    alpha: float = 0.6,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    rng: Optional[jax.Array] = None,
    max_decode_length: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Decode a batch; returns ``(tokens int32[B, L], scores float32[B])`` as numpy.

    ``batch["encoder_input_tokens"]`` is int[B, S]. The decode length is
    ``max_decode_length`` if given, else the length of ``batch["decoder_target_tokens"]``.
    ``method`` is ``greedy``, ``sample`` (``temperature``, ``top_k``, ``top_p``, ``rng``;
    a missing ``rng`` means ``PRNGKey(0)``) or ``beam`` (``num_beams``, brevity penalty
    ``alpha``; the best beam is returned). Tokens after EOS are pad (0); scores are
    summed log-probs (length-normalised for beam search).
    """
    inputs = jnp.asarray(np.asarray(batch["encoder_input_tokens"]), jnp.int32)
    if inputs.ndim != 2:
        raise ValueError(f"encoder_input_tokens must be [batch, length], got {inputs.shape}")
    if max_decode_length is None:
        if "decoder_target_tokens" not in batch:
            raise ValueError("pass max_decode_length or a batch with decoder_target_tokens")
        max_decode_length = int(np.shape(batch["decoder_target_tokens"])[1])
    if max_decode_length < 1:
        raise ValueError(f"max_decode_length must be positive, got {max_decode_length}")
    batch_size, input_length = inputs.shape
    fn = get_decode_fn(model, method, batch_size=batch_size, input_length=input_length,
                       max_decode_length=int(max_decode_length), num_beams=num_beams,
                       top_k=top_k, top_p=top_p)
    if rng is None:
        rng = jax.random.PRNGKey(0)
    tokens, scores = fn(params, inputs, rng, jnp.float32(temperature), jnp.float32(alpha))
    return np.asarray(tokens, np.int32), np.asarray(scores, np.float32)


# ---- decoding options, and decoding many rows at fixed shapes ------------------------------

@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """How to decode. ``beam_size`` > 1: beam search (brevity penalty ``alpha``);
    ``temperature`` > 0 (or ``top_k``/``top_p`` set): sampling; otherwise greedy."""

    beam_size: int = 1
    temperature: Optional[float] = None
    top_k: int = 0
    top_p: float = 1.0
    alpha: float = 0.6
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.beam_size, int) or self.beam_size < 1:
            raise ConfigError(f"--beam-size must be a positive integer, got {self.beam_size!r}")
        if self.temperature is not None and self.temperature < 0:
            raise ConfigError(f"--temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"--top-k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.beam_size > 1 and self.method_is_sampling():
            raise ConfigError("--beam-size cannot be combined with --temperature/--top-k/--top-p; "
                              "pick beam search or sampling")

    def method_is_sampling(self) -> bool:
        return bool(self.temperature) or self.top_k > 0 or self.top_p < 1.0

    @property
    def method(self) -> str:
        if self.beam_size > 1:
            return "beam"
        return "sample" if self.method_is_sampling() else "greedy"

    def describe(self) -> str:
        if self.method == "beam":
            return f"beam search (beams={self.beam_size}, alpha={self.alpha})"
        if self.method == "sample":
            return (f"sampling (temperature={self.temperature or 1.0}, top_k={self.top_k}, "
                    f"top_p={self.top_p}, seed={self.seed})")
        return "greedy"


def decode_tokens(model, params, encoder_inputs: np.ndarray, *, max_decode_length: int,
                  batch_size: int, options: DecodeOptions = DecodeOptions()
                  ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Decode ``encoder_inputs`` int[N, S] in batches of ``batch_size`` rows.

    Yields ``(tokens int32[n, max_decode_length], scores float32[n])`` per batch; the last
    batch is padded with empty rows to ``batch_size`` (and trimmed again), so every batch
    has the same shape and the decoder compiles once.
    """
    encoder_inputs = np.asarray(encoder_inputs, np.int32)
    base_rng = jax.random.PRNGKey(options.seed)
    for b, start in enumerate(range(0, len(encoder_inputs), batch_size)):
        rows = encoder_inputs[start:start + batch_size]
        n = len(rows)
        if n < batch_size:
            rows = np.concatenate([rows, np.zeros((batch_size - n, rows.shape[1]), np.int32)])
        tokens, scores = predict_batch(
            model, params, {"encoder_input_tokens": rows}, method=options.method,
            num_beams=options.beam_size, alpha=options.alpha,
            temperature=float(options.temperature or 1.0), top_k=options.top_k,
            top_p=options.top_p, rng=jax.random.fold_in(base_rng, b),
            max_decode_length=int(max_decode_length))
        yield tokens[:n], scores[:n]
