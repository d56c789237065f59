"""The data contract of the encoder-only heads: which task features a head reads, and the
feature converter that turns them into batches.

A head task is a seqio task whose output features are ``inputs`` (token ids) plus:

- ``label`` (int32, rank 0) for ``sequence_classification``;
- ``labels`` (int32 per input token; negative, e.g. -100, for ignored positions) for
  ``token_classification``;
- ``start_position`` and ``end_position`` (int32, rank 0, token indices into ``inputs``,
  inclusive) for ``question_answering``.

Label names come from the vocabulary of the ``label``/``labels`` feature when it is a
:func:`class_labels` vocabulary (its size is then the default ``--num-labels``).

Only ``inputs`` needs a length (``--feature-lengths inputs=N``): token labels are padded to
the same length. Batches are never packed (a head pools or tags one example per row); their
keys are ``encoder_input_tokens`` plus the head's label features.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np

from t5cli.errors import ConfigError, DataError

#: head -> the task features it needs beside ``inputs``
HEAD_FEATURES: Dict[str, tuple] = {
    "sequence_classification": ("label",),
    "token_classification": ("labels",),
    "question_answering": ("start_position", "end_position"),
}
HEAD_NAMES = tuple(HEAD_FEATURES)
#: label features of rank 0 (one value per example)
SCALAR_FEATURES = ("label", "start_position", "end_position")


def task_head(task) -> Optional[str]:
    """The head a task's output features are made for, or None (an encoder-decoder task)."""
    features = set(task.output_features)
    if "targets" in features:
        return None
    for head, needed in HEAD_FEATURES.items():
        if set(needed) <= features:
            return head
    return None


def check_head_task(task, head: str) -> None:
    """ConfigError unless ``task`` has ``inputs`` and the features ``head`` needs."""
    if head not in HEAD_FEATURES:
        raise ConfigError(f"unknown head {head!r}; choose one of {', '.join(HEAD_NAMES)}")
    features = sorted(task.output_features)
    missing = [f for f in ("inputs",) + HEAD_FEATURES[head] if f not in task.output_features]
    if missing:
        raise ConfigError(
            f"task {task.name!r} has no {missing[0]!r} feature (its features: {', '.join(features)}); "
            f"a {head} head needs inputs + {' + '.join(HEAD_FEATURES[head])} (see docs/plugins.md, "
            f"'Tasks for encoder-only heads')")


def length_features(task) -> List[str]:
    """The features of ``task`` that need a length in TASK_FEATURE_LENGTHS."""
    if task_head(task) is None:
        return sorted(task.output_features)
    return ["inputs"]


def full_lengths(task, lengths: Mapping[str, int]) -> Dict[str, Optional[int]]:
    """seqio's ``task_feature_lengths`` for a head task: ``inputs``' length for token
    labels, None (no trimming) for the per-example features."""
    out: Dict[str, Optional[int]] = {"inputs": int(lengths["inputs"])}
    for name in task.output_features:
        if name == "labels":
            out[name] = out["inputs"]
        elif name != "inputs":
            out[name] = None
    return out


def feature_converter(task, pack: bool):
    """seqio's encoder-decoder converter, or the head converter for a head task."""
    import seqio

    head = task_head(task)
    if head is None:
        return seqio.EncDecFeatureConverter(pack=pack)
    return _converter_class()(head, [f for f in task.output_features if f != "inputs"])


_CONVERTER = None


def _converter_class():
    """The seqio converter class (built on first use: seqio imports TensorFlow)."""
    global _CONVERTER
    if _CONVERTER is not None:
        return _CONVERTER
    import seqio
    import tensorflow as tf

    spec = seqio.FeatureConverter.FeatureSpec

    class HeadFeatureConverter(seqio.FeatureConverter):
        """``inputs`` -> ``encoder_input_tokens`` (padded), label features passed on; no packing."""

        TASK_FEATURES: Dict[str, Any] = {}
        MODEL_FEATURES: Dict[str, Any] = {}
        PACKING_FEATURE_DTYPES = None

        def __init__(self, head: str, label_features: Sequence[str]):
            self.head = head
            ranks = {name: 0 if name in SCALAR_FEATURES else 1 for name in label_features}
            self.TASK_FEATURES = dict({"inputs": spec(dtype=tf.int32)},
                                      **{n: spec(dtype=tf.int32, rank=r) for n, r in ranks.items()})
            self.MODEL_FEATURES = dict({"encoder_input_tokens": spec(dtype=tf.int32)},
                                       **{n: spec(dtype=tf.int32, rank=r) for n, r in ranks.items()})
            super().__init__(pack=False)

        def _convert_features(self, ds, task_feature_lengths):
            length = task_feature_lengths["inputs"]

            def pad(t):
                t = t[:length]
                return tf.pad(t, [(0, length - tf.shape(t)[0])])

            def convert(ex):
                out = {"encoder_input_tokens": pad(ex["inputs"])}
                for name in self.MODEL_FEATURES:
                    if name == "labels":
                        # pad positions (input id 0) are ignored by the loss: -100 like HF
                        out[name] = tf.where(out["encoder_input_tokens"] > 0, pad(ex[name]), -100)
                    elif name != "encoder_input_tokens":
                        out[name] = ex[name]
                return out

            return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

        def get_model_feature_lengths(self, task_feature_lengths):
            length = task_feature_lengths["inputs"]
            return {name: (length if spec_.rank else None) for name, spec_ in self.MODEL_FEATURES.items()}

    _CONVERTER = HeadFeatureConverter
    return _CONVERTER


# ---- label names ------------------------------------------------------------------------

_LABELS_CLASS = None


def class_labels(names: Sequence[str]):
    """A seqio vocabulary for a ``label``/``labels`` feature naming its classes in order
    (id ``i`` is ``names[i]``); heads read ``--num-labels`` and the names from it."""
    global _LABELS_CLASS
    if _LABELS_CLASS is None:
        import seqio

        class ClassLabels(seqio.PassThroughVocabulary):
            def __init__(self, names):
                self.label_names = [str(n) for n in names]
                super().__init__(size=len(self.label_names))

        _LABELS_CLASS = ClassLabels
    return _LABELS_CLASS(names)


def label_names(task, head: str, num_labels: Optional[int]) -> List[str]:
    """The class names of a classification head: the task's, else ``"0"``, ``"1"``, …"""
    feature = task.output_features.get({"sequence_classification": "label",
                                        "token_classification": "labels"}.get(head, ""))
    names = list(getattr(getattr(feature, "vocabulary", None), "label_names", None) or [])
    if num_labels is None:
        num_labels = len(names) or 2
    if names and len(names) != num_labels:
        raise ConfigError(f"--num-labels {num_labels} does not match the {len(names)} labels task "
                          f"{task.name!r} names ({', '.join(names)}); drop --num-labels or fix the task")
    return names or [str(i) for i in range(num_labels)]


# ---- checks on the batches ----------------------------------------------------------------

def checked_labels(batches: Iterator[Mapping[str, np.ndarray]], head: str, num_labels: int,
                   task_name: str, length: int) -> Iterator[Mapping[str, np.ndarray]]:
    """``batches`` unchanged; a label outside ``[0, num_labels)`` (or an answer position
    outside the inputs) stops with a DataError naming it."""
    for batch in batches:
        check_batch(batch, head, num_labels, task_name, length)
        yield batch


def check_batch(batch: Mapping[str, np.ndarray], head: str, num_labels: int, task_name: str,
                length: int) -> None:
    """DataError for a label outside ``[0, num_labels)`` or a position past the inputs."""
    real = np.asarray(batch["encoder_input_tokens"]).max(axis=-1) > 0
    if head == "sequence_classification":
        bad = np.asarray(batch["label"])[real]
        bad = bad[(bad < 0) | (bad >= num_labels)]
    elif head == "token_classification":
        labels = np.asarray(batch["labels"])
        bad = labels[labels >= num_labels]  # negative: ignored
    else:
        pos = np.concatenate([np.asarray(batch["start_position"])[real],
                              np.asarray(batch["end_position"])[real]])
        bad = pos[(pos < 0) | (pos >= length)]
        if bad.size:
            raise DataError(f"task {task_name!r} has an answer position {int(bad[0])} outside the "
                            f"{length} input tokens; raise --feature-lengths inputs=N or drop such examples")
        return
    if bad.size:
        raise DataError(f"task {task_name!r} has label {int(bad[0])}, outside --num-labels {num_labels} "
                        f"(labels 0..{num_labels - 1}); pass --num-labels {int(bad.max()) + 1} or fix the task")
