"""What an encoder-only head predicts, one JSON-ready dict per example (``t5 eval`` and
``t5 infer`` both use it).

- ``sequence_classification``: ``label`` (name), ``label_id``, ``probability`` (of that
  label) and ``probabilities`` (name -> probability);
- ``token_classification``: ``tags`` (one label name per input token, EOS excluded) and
  ``entities`` (``{"text", "label", "start", "end"}``: runs of B-/I- tags of one type, or of
  one non-``O`` label when the names are not BIO);
- ``question_answering``: ``answer`` (text), ``start``, ``end`` (token indices, inclusive)
  and ``score`` (start + end logit of the best span of at most ``max_answer_tokens``).
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np

EOS_ID = 1
MAX_ANSWER_TOKENS = 64


@functools.lru_cache(maxsize=None)
def logits_fn(model):
    """``jit(compute_logits)`` of a head model (no dropout), compiled once per model."""
    import jax

    return jax.jit(lambda params, tokens: model.compute_logits(params, {"encoder_input_tokens": tokens}))


def head_logits(model, params, tokens: np.ndarray):
    """The head's logits as NumPy arrays for int32 ``tokens`` [B, L]."""
    import jax

    out = logits_fn(model)(params, np.asarray(tokens, np.int32))
    return jax.tree_util.tree_map(np.asarray, jax.device_get(out))


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def _decode(vocabulary, ids: Sequence[int]) -> str:
    ids = [int(i) for i in ids if int(i) > EOS_ID]
    return vocabulary.decode(ids) if ids else ""


def best_span(start: np.ndarray, end: np.ndarray, length: int,
              max_tokens: int = MAX_ANSWER_TOKENS) -> Tuple[int, int, float]:
    """``(i, j, start[i] + end[j])`` maximal over ``i <= j < i + max_tokens``, ``j < length``."""
    s, e = start[:length], end[:length]
    scores = s[:, None] + e[None, :]
    i, j = np.indices(scores.shape)
    scores = np.where((j >= i) & (j - i < max_tokens), scores, -np.inf)
    flat = int(np.argmax(scores))
    a, b = divmod(flat, scores.shape[1])
    return a, b, float(scores[a, b])


def entities(tags: Sequence[str]) -> List[Tuple[int, int, str]]:
    """``(start, end, type)`` spans (end inclusive) of BIO tags, or of runs of one non-``O`` tag."""
    bio = any(t[:2] in ("B-", "I-") for t in tags)
    out: List[Tuple[int, int, str]] = []
    cur = None
    for i, tag in enumerate(list(tags) + ["O"]):
        kind = tag[2:] if bio and tag[:2] in ("B-", "I-") else (None if tag == "O" or bio else tag)
        begins = kind is not None and (cur is None or kind != cur[2] or (bio and tag.startswith("B-")))
        if cur is not None and (kind is None or begins):
            out.append((cur[0], i - 1, cur[2]))
            cur = None
        if begins:
            cur = (i, i, kind)
    return out


def predict_rows(model, params, tokens: np.ndarray, vocabulary) -> List[Dict[str, Any]]:
    """One prediction dict per row of ``tokens`` (see the module docstring)."""
    logits = head_logits(model, params, tokens)
    names = model.label_names
    rows: List[Dict[str, Any]] = []
    for r, ids in enumerate(tokens):
        length = int((ids > 0).sum())
        if model.head == "sequence_classification":
            probs = _softmax(logits[r])
            k = int(np.argmax(probs))
            rows.append({"label": names[k], "label_id": k, "probability": float(probs[k]),
                         "probabilities": {n: float(p) for n, p in zip(names, probs)}})
        elif model.head == "token_classification":
            n = length - int(length and ids[length - 1] == EOS_ID)
            pred = np.argmax(logits[r][:n], axis=-1)
            tags = [names[int(k)] for k in pred]
            ents = [{"text": _decode(vocabulary, ids[a:b + 1]), "label": kind, "start": a, "end": b}
                    for a, b, kind in entities(tags)]
            rows.append({"tags": tags, "entities": ents})
        else:
            start, end = logits
            a, b, score = best_span(start[r], end[r], max(length, 1))
            rows.append({"answer": _decode(vocabulary, ids[a:b + 1]), "start": a, "end": b, "score": score})
    return rows


def predict_batches(model, params, batches: Iterable[Tuple[Mapping[str, np.ndarray], np.ndarray]],
                    vocabulary) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """``(example, prediction)`` for the real rows of ``(batch, mask)`` pairs, in order;
    ``example`` holds the row's ``encoder_input_tokens`` and label features. In a
    multi-process job each process predicts its share of the batches and every process
    gets all the pairs."""
    from t5cli.runtime import distributed

    batches = list(batches)
    params = distributed.host_local(params)  # a multi-process job's sharded parameters, whole
    mine = []
    for batch, mask in batches[distributed.process_slice(len(batches))]:
        preds = predict_rows(model, params, batch["encoder_input_tokens"], vocabulary)
        mine += [({k: np.asarray(v[r]) for k, v in batch.items()}, preds[r]) for r in np.flatnonzero(mask)]
    return distributed.gather_slices(mine)


__all__ = ["predict_rows", "predict_batches", "head_logits", "best_span", "entities"]


def infer_checkpoint(runtime, *, checkpoint_path=None, model_dir=None, mixture_or_task_name=None,
                     split: str = "test", texts=None, output=None, output_dir=None,
                     task_feature_lengths=None, batch_size: int = 32, num_examples=None, step=None,
                     use_cached_tasks: bool = False, stream=None):
    """``t5 infer`` of a head checkpoint: predictions of ``texts`` (or of a task split) as
    JSONL rows ``{"inputs", <prediction>}`` (plus ``target`` for a split); an ``InferResult``."""
    import sys

    from t5cli.errors import ConfigError, DataError
    from t5cli.runtime import distributed
    from t5cli.runtime.head_checkpoints import load_head
    from t5cli.runtime.infer import InferResult, encode_texts, output_path, write_jsonl

    loaded = load_head(runtime, checkpoint_path or model_dir, step=step)
    model = loaded.model
    lengths = dict(loaded.train_feature_lengths or {})
    lengths.update(task_feature_lengths or {})
    task_name = mixture_or_task_name or loaded.task
    task = runtime.registry.task(task_name) if task_name and (
        mixture_or_task_name or texts is None or ("task", task_name) in runtime.registry) else None
    vocab = task.output_features["inputs"].vocabulary if task is not None else model.vocabulary
    rows: List[Dict[str, Any]] = []
    if texts is not None:
        if not texts:
            raise DataError("no inputs to run (the input is empty)")
        tokens = encode_texts(texts, vocab, length=lengths.get("inputs"))
        batches = [({"encoder_input_tokens": tokens[start:start + batch_size]},
                    np.ones(len(tokens[start:start + batch_size]), bool))
                   for start in range(0, len(tokens), batch_size)]
        rows = [{"inputs": t, **p} for t, (_, p) in zip(texts, predict_batches(model, loaded.params, batches, vocab))]
    else:
        if task is None:
            raise ConfigError("which task? pass --task NAME or --input FILE")
        if "inputs" not in lengths:
            raise ConfigError("which input length? pass --feature-lengths inputs=N")
        from t5cli.runtime.data import get_eval_batches
        from t5cli.runtime.head_eval import _target

        max_batches = -(-num_examples // batch_size) if num_examples else None
        batches = get_eval_batches(task, split, {"inputs": lengths["inputs"]}, batch_size,
                                   max_batches=max_batches, use_cached=use_cached_tasks, per_process=False)
        for example, pred in predict_batches(model, loaded.params, batches, vocab):
            rows.append({"inputs": _decode(vocab, example["encoder_input_tokens"]), **pred,
                         "target": _target(model, example, vocab)})
        rows = rows[:num_examples] if num_examples else rows
    text_mode = texts is not None
    output = output_path(output, output_dir, text_mode=text_mode, model_dirs=(model_dir, loaded.model_dir),
                         task_name=task.name if task is not None else None, split=split, step=loaded.step)
    if distributed.is_primary():
        write_jsonl(rows, output, stream=stream)
        if output and output != "-":
            print(f"wrote {len(rows)} predictions to {output}", file=sys.stderr, flush=True)
    return InferResult(records=rows, output=None if output in (None, "-") else output, step=loaded.step)
