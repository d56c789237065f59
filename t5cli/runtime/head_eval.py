"""Evaluation of the encoder-only heads: metrics per head, written like the seqio metrics.

Metrics (percentages, as the seqio tasks report them):

- ``sequence_classification``: ``accuracy``, ``f1`` (of label 1 for two labels, else the
  macro mean), ``matthews_corrcoef`` (the multi-class form for more than two);
- ``token_classification``: ``token_accuracy`` (over labelled tokens), ``entity_precision``,
  ``entity_recall``, ``entity_f1`` (exact spans, :func:`t5cli.runtime.head_predict.entities`);
- ``question_answering``: ``exact_match`` and ``f1`` (SQuAD's: normalised answer words).

Files, as :mod:`t5cli.runtime.evaluate` writes them into ``OUTPUT_DIR`` (default
``MODEL_DIR/inference_eval``): ``<task>/events.out.tfevents.*`` (``eval/<metric>``),
``<task>-metrics.jsonl`` (``{"step": N, <metric>: value}`` per evaluation) and
``<task>-<step:06d>.jsonl`` (per example: ``inputs``, ``target`` and the prediction).
"""

from __future__ import annotations

import collections
import json
import re
import string
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from t5cli.errors import ConfigError
from t5cli.runtime import distributed, head_predict


# ---- metrics ------------------------------------------------------------------------------

def classification_metrics(targets: Sequence[int], predictions: Sequence[int], num_labels: int) -> Dict[str, float]:
    """Accuracy, F1 and Matthews correlation (x100) of integer labels."""
    t, p = np.asarray(targets, int), np.asarray(predictions, int)
    if not len(t):
        return {}
    cm = np.zeros((num_labels, num_labels), float)
    np.add.at(cm, (t, p), 1)
    tp = np.diag(cm)
    prec = np.divide(tp, cm.sum(0), out=np.zeros_like(tp), where=cm.sum(0) > 0)
    rec = np.divide(tp, cm.sum(1), out=np.zeros_like(tp), where=cm.sum(1) > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0)
    # Gorodkin's multi-class MCC (the binary MCC for two labels)
    n, c, s_t, s_p = cm.sum(), tp.sum(), cm.sum(1), cm.sum(0)
    denom = np.sqrt(n * n - (s_p ** 2).sum()) * np.sqrt(n * n - (s_t ** 2).sum())
    mcc = (c * n - (s_t * s_p).sum()) / denom if denom > 0 else 0.0
    return {"accuracy": 100 * c / n, "f1": 100 * float(f1[1] if num_labels == 2 else f1.mean()),
            "matthews_corrcoef": 100 * float(mcc)}


def entity_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Dict[str, float]:
    """Token accuracy and exact-span entity precision/recall/F1 (x100) of tag sequences."""
    right = total = 0
    tp = n_gold = n_pred = 0
    for g, p in zip(gold, pred):
        right += sum(a == b for a, b in zip(g, p))
        total += len(g)
        gs, ps = set(head_predict.entities(g)), set(head_predict.entities(p))
        tp, n_gold, n_pred = tp + len(gs & ps), n_gold + len(gs), n_pred + len(ps)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"token_accuracy": 100 * right / max(total, 1), "entity_precision": 100 * precision,
            "entity_recall": 100 * recall, "entity_f1": 100 * f1}


def _answer_words(text: str) -> List[str]:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def qa_metrics(gold: Sequence[str], pred: Sequence[str]) -> Dict[str, float]:
    """SQuAD's exact match and word F1 (x100)."""
    em = f1 = 0.0
    for g, p in zip(gold, pred):
        gw, pw = _answer_words(g), _answer_words(p)
        em += float(gw == pw)
        common = sum((collections.Counter(gw) & collections.Counter(pw)).values())
        if not gw or not pw:
            f1 += float(gw == pw)
        elif common:
            prec, rec = common / len(pw), common / len(gw)
            f1 += 2 * prec * rec / (prec + rec)
    n = max(len(gold), 1)
    return {"exact_match": 100 * em / n, "f1": 100 * f1 / n}


# ---- the evaluator ------------------------------------------------------------------------

def _target(model, example: Mapping[str, np.ndarray], vocabulary) -> Any:
    """The gold answer of one example, in the form of its prediction."""
    if model.head == "sequence_classification":
        return model.label_names[int(example["label"])]
    ids = example["encoder_input_tokens"]
    if model.head == "token_classification":
        length = int((ids > 0).sum())
        n = length - int(length and ids[length - 1] == head_predict.EOS_ID)
        return [model.label_names[int(k)] if k >= 0 else "O" for k in example["labels"][:n]]
    a, b = int(example["start_position"]), int(example["end_position"])
    return head_predict._decode(vocabulary, ids[a:b + 1])


def metrics_for(model, targets: Sequence[Any], predictions: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """The head's metrics of gold ``targets`` against ``predictions`` (head_predict dicts)."""
    if model.head == "sequence_classification":
        ids = {n: i for i, n in enumerate(model.label_names)}
        return classification_metrics([ids[t] for t in targets], [p["label_id"] for p in predictions],
                                      model.num_labels)
    if model.head == "token_classification":
        return entity_metrics(targets, [p["tags"] for p in predictions])
    return qa_metrics(targets, [p["answer"] for p in predictions])


class HeadEvaluator:
    """Predicts a task split with a head model and writes its metrics (module docstring);
    ``evaluator(step, params) -> {task: {metric: value}}``, as the seqio evaluator does."""

    def __init__(self, task, model, feature_lengths: Mapping[str, int], model_dir=None, *,
                 split: str = "validation", batch_size: int = 32, use_cached: bool = False,
                 output_dir=None, num_examples: Optional[int] = None, verbose: bool = True):
        if output_dir is None and model_dir is None:
            raise ConfigError("where should results go? pass --model-dir DIR or --output-dir DIR")
        self.task, self.model, self.split = task, model, split
        self.feature_lengths, self.batch_size, self.use_cached = dict(feature_lengths), batch_size, use_cached
        self.output_dir = Path(output_dir) if output_dir is not None else Path(model_dir) / "inference_eval"
        self.num_examples, self.verbose = num_examples, verbose
        self.predictions: Dict[str, str] = {}

    def __call__(self, step: int, params) -> Dict[str, Dict[str, float]]:
        from t5cli.runtime.data import get_eval_batches
        from t5cli.runtime.summaries import SummaryWriter

        start = time.monotonic()
        vocab = self.task.output_features["inputs"].vocabulary
        max_batches = -(-self.num_examples // self.batch_size) if self.num_examples else None
        batches = get_eval_batches(self.task, self.split, self.feature_lengths, self.batch_size,
                                   max_batches=max_batches, use_cached=self.use_cached, per_process=False)
        rows, targets, preds = [], [], []
        for example, pred in head_predict.predict_batches(self.model, params, batches, vocab):
            target = _target(self.model, example, vocab)
            targets.append(target)
            preds.append(pred)
            rows.append({"inputs": head_predict._decode(vocab, example["encoder_input_tokens"]),
                         "target": target, **pred})
        if self.num_examples:
            rows, targets, preds = rows[:self.num_examples], targets[:self.num_examples], preds[:self.num_examples]
        metrics = metrics_for(self.model, targets, preds)
        name = self.task.name
        path = self.output_dir / f"{name}-{int(step):06d}.jsonl"
        self.predictions[name] = str(path)
        if not distributed.is_primary():  # every process has the metrics; process 0 writes them
            return {name: metrics}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with SummaryWriter(self.output_dir / name) as writer:
            writer.write(int(step), {f"eval/{k}": v for k, v in metrics.items()})
        with open(self.output_dir / f"{name}-metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": int(step), **metrics}) + "\n")
        from t5cli.runtime.infer import write_jsonl

        write_jsonl(rows, str(path))
        if self.verbose:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
            print(f"inference eval {name} ({self.split}) step {step}: {shown} "
                  f"[{time.monotonic() - start:.1f}s]", file=sys.stderr, flush=True)
        return {name: metrics}

    def close(self) -> None:
        """Nothing is held open (the evaluator interface of training)."""


def evaluate_head(loaded, *, task, split: str, feature_lengths: Optional[Mapping[str, int]],
                  batch_size: int, output_dir, num_examples: Optional[int] = None,
                  use_cached: bool = False):
    """Evaluate a loaded head checkpoint (:class:`t5cli.runtime.model_loading.LoadedModel`);
    returns ``(metrics, predictions)``: ``{task: {metric: value}}`` and ``{task: jsonl path}``."""
    from t5cli.runtime.head_data import check_head_task

    check_head_task(task, loaded.model.head)
    lengths = dict(feature_lengths or loaded.train_feature_lengths or {})
    if "inputs" not in lengths:
        raise ConfigError("which input length? pass --feature-lengths inputs=N")
    if distributed.is_primary():
        print(f"evaluating {task.name} ({split}) at step {loaded.step} of {loaded.checkpoint_path}",
              file=sys.stderr, flush=True)
    evaluator = HeadEvaluator(task, loaded.model, {"inputs": lengths["inputs"]}, split=split,
                              batch_size=batch_size, use_cached=use_cached, output_dir=output_dir,
                              num_examples=num_examples)
    return evaluator(loaded.step, loaded.params), dict(evaluator.predictions)


__all__ = ["HeadEvaluator", "evaluate_head", "metrics_for", "classification_metrics", "entity_metrics",
           "qa_metrics"]


def evaluate_checkpoint(runtime, *, checkpoint_path=None, model_dir=None, mixture_or_task_name=None,
                        split: str = "test", task_feature_lengths=None, batch_size: int = 32,
                        num_examples=None, output_dir=None, step=None, tfds_data_dir=None,
                        use_cached_tasks: bool = False):
    """``t5 eval`` of a head checkpoint: an :class:`t5cli.runtime.evaluate.EvalResult`."""
    from t5cli.runtime.datasets import ensure_task_data
    from t5cli.runtime.evaluate import EvalResult
    from t5cli.runtime.head_checkpoints import load_head

    loaded = load_head(runtime, checkpoint_path or model_dir, step=step)
    task_name = mixture_or_task_name or loaded.task
    if not task_name:
        raise ConfigError("which task? pass --task NAME (the checkpoint's run record names none)")
    task = runtime.registry.task(task_name)
    ensure_task_data(task, tfds_data_dir)
    base = output_dir or (Path(model_dir) / "inference_eval" if model_dir else None) or (
        Path(loaded.model_dir) / "inference_eval" if loaded.model_dir else None)
    if base is None:
        raise ConfigError("where should results go? pass --model-dir DIR or --output-dir DIR")
    metrics, predictions = evaluate_head(loaded, task=task, split=split, feature_lengths=task_feature_lengths,
                                         batch_size=batch_size, output_dir=base, num_examples=num_examples,
                                         use_cached=use_cached_tasks)
    return EvalResult(step=loaded.step, metrics=metrics, output_dir=str(base), predictions=predictions)
