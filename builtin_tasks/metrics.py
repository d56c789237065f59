"""Metric functions in seqio's form: ``fn(targets, predictions) -> {name: value}``.

BLEU and chrF come from sacrebleu, the reference implementation.
"""

from __future__ import annotations

from typing import Dict, Sequence


def sequence_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
    """Percentage of predictions equal to their target after stripping whitespace."""
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
    if not targets:
        return {"sequence_accuracy": 0.0}
    hits = sum(str(t).strip() == str(p).strip() for t, p in zip(targets, predictions))
    return {"sequence_accuracy": 100.0 * hits / len(targets)}


def bleu(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
    """Corpus BLEU with sacrebleu's defaults (13a tokenisation), as T5 reports it."""
    import sacrebleu

    score = sacrebleu.corpus_bleu(list(predictions), [list(targets)],
                                  smooth_method="exp", tokenize="13a")
    return {"bleu": score.score}


def chrf(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
    """Corpus chrF (character n-gram F-score) from sacrebleu."""
    import sacrebleu

    return {"chrf": sacrebleu.corpus_chrf(list(predictions), [list(targets)]).score}
