"""``t5x.decoding``: the parameters of beam search and temperature sampling.

A gin file binds them (``decoding.beam_search.alpha = 0.6``,
``decoding.temperature_sample.temperature = 0.5``) and passes the function as
``models.EncoderDecoderModel.decode_fn``; :meth:`options` turns that into t5cli's
decoding options.
"""

from __future__ import annotations

from typing import Any, Dict


def beam_search(*args, alpha: float = 0.6, max_decode_len=None, decode_rng=None, num_decodes: int = 4,
                eos_id: int = 1, **kwargs):
    """Bound in gin only; t5cli's decoder runs the search."""
    raise NotImplementedError("decoding.beam_search is run by t5cli's decoder")


def temperature_sample(*args, temperature: float = 1.0, topk: int = 1, topp: float = 0.0,
                       num_decodes: int = 1, max_decode_steps=None, **kwargs):
    """Bound in gin only; t5cli's decoder samples."""
    raise NotImplementedError("decoding.temperature_sample is run by t5cli's decoder")


def options(decode_fn: Any) -> Dict[str, Any]:
    """t5cli decode options for ``decode_fn`` and its gin bindings: ``alpha`` for beam
    search; ``temperature``, ``top_k``, ``top_p`` for sampling."""
    from t5cli.t5x_compat import query

    base = "t5x.decoding."
    name = getattr(decode_fn, "__name__", "")
    if name == "beam_search":
        return {"alpha": query(base + "beam_search.alpha", 0.6)}
    if name == "temperature_sample":
        topk = query(base + "temperature_sample.topk", 1)
        topp = query(base + "temperature_sample.topp", 0.0)
        temperature = query(base + "temperature_sample.temperature", 1.0)
        out: Dict[str, Any] = {"temperature": float(temperature), "top_k": int(topk or 0)}
        if topp:
            out["top_p"] = float(topp)
        if topk == 1 and not topp:  # T5X's default: greedy
            out = {"temperature": None}
        return out
    return {}
