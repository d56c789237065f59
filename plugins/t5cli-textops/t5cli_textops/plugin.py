"""Hook implementations: one task and one metric. Heavy imports stay inside the factories."""

from __future__ import annotations

import random
from collections import Counter
from typing import Dict, List, Sequence

import t5cli

WORDS = (
    "the a one two red blue green small big old new cat dog bird tree house river road "
    "runs sees eats sleeps jumps likes finds makes over under near with from into after"
).split()

TASK_NAME = "textops_reverse_words"
SPLIT_SIZES = {"train": 2000, "validation": 200, "test": 200}
SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}


def sentences(split: str) -> List[str]:
    """Deterministic random sentences of 3–8 words for ``split``."""
    rng = random.Random(SPLIT_SEEDS[split])
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
            for _ in range(SPLIT_SIZES[split])]


def token_f1(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
    """Mean bag-of-words F1 (percent) between each prediction and its target."""
    scores = []
    for target, prediction in zip(targets, predictions):
        t, p = str(target).split(), str(prediction).split()
        common = sum((Counter(t) & Counter(p)).values())
        if not t and not p:
            scores.append(1.0)
        elif common == 0:
            scores.append(0.0)
        else:
            precision, recall = common / len(p), common / len(t)
            scores.append(2 * precision * recall / (precision + recall))
    return {"token_f1": 100.0 * sum(scores) / max(len(scores), 1)}


def _build_task():
    import seqio
    import tensorflow as tf

    def dataset_fn(split, shuffle_files=False):
        del shuffle_files
        inputs = sentences(split)
        targets = [" ".join(reversed(s.split())) for s in inputs]
        return tf.data.Dataset.from_tensor_slices({"inputs": inputs, "targets": targets})

    vocab = seqio.ByteVocabulary()
    return seqio.Task(
        TASK_NAME,
        source=seqio.FunctionDataSource(dataset_fn, splits=list(SPLIT_SIZES),
                                        num_input_examples=SPLIT_SIZES),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        output_features={"inputs": seqio.Feature(vocab), "targets": seqio.Feature(vocab)},
        metric_fns=[token_f1],
    )


@t5cli.hookimpl
def register_tasks(register):
    register(TASK_NAME, _build_task)


@t5cli.hookimpl
def register_metrics(register):
    register("token_f1", token_f1)
