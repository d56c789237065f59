"""Built-in tasks for the encoder-only heads (``t5 train --head ...``); byte-level vocabulary.

- ``sst2`` (sequence classification): SST-2 binary sentiment from ``$SST2_DIR`` or
  ``../shared/data/sst2-alps`` beside the checkout (the ALPS copy: ``dev.tsv``, 6,735
  phrases of GLUE's train set, is the train split; ``test.tsv``, GLUE's dev set of 872
  sentences, is both validation and test). Labels ``negative``/``positive``.
- ``number_tags`` (token classification): generated sentences in which number words play
  a role, tagged per byte in BIO: ``COUNT`` ("three hundred and twelve apples"), ``ORD``
  ("the twenty-first floor") and ``YEAR`` ("in nineteen ninety-nine").
- ``number_qa`` (extractive question answering): "question: how many pears? context: ..."
  with the answer's first and last byte as ``start_position``/``end_position``; the
  context names two counts, so the question picks one.

The generated tasks are offline and deterministic: each split is drawn from a random
generator seeded by the split's name (train 4,000 examples, validation and test 300 each).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from typing import Callable, Dict, List, Tuple

SPLITS = ("train", "validation", "test")
SST2_LABELS = ["negative", "positive"]
TAG_LABELS = ["O", "B-COUNT", "I-COUNT", "B-ORD", "I-ORD", "B-YEAR", "I-YEAR"]
_SIZES = {"train": 4000, "validation": 300, "test": 300}
_NAMES = ["ann", "bob", "carla", "dmitri", "eve", "farid", "gina", "hugo"]
_THINGS = ["apples", "pears", "books", "chairs", "coins", "lamps", "shoes", "tickets"]
_PLACES = ["floor", "row", "race", "day", "page", "seat"]


def sst2_dir() -> pathlib.Path:
    """``$SST2_DIR``, else ``../shared/data/sst2-alps`` beside the checkout."""
    return pathlib.Path(os.environ.get("SST2_DIR") or
                        pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2-alps")


def read_sst2(split: str) -> List[Tuple[str, int]]:
    """(sentence, label) rows of a split: train = ``dev.tsv``, validation/test = ``test.tsv``."""
    path = sst2_dir() / ("dev.tsv" if split == "train" else "test.tsv")
    if not path.is_file():
        from t5cli.errors import DataError

        raise DataError(f"SST-2 data not found at {path}; set SST2_DIR to the folder holding dev.tsv and "
                        f"test.tsv (the ALPS copy of GLUE SST-2)")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        sentence, label = line.split("\t")
        rows.append((sentence.strip(), int(label)))
    return rows


def _rng(split: str):
    import random

    seed = int(hashlib.sha256(f"heads-{split}".encode()).hexdigest(), 16) % (2 ** 32)
    return random.Random(seed)


def _sentence(rng) -> List[Tuple[str, str]]:
    """One sentence as (text piece, entity type or '') pieces."""
    from num2words import num2words

    name, thing, place = rng.choice(_NAMES), rng.choice(_THINGS), rng.choice(_PLACES)
    count = num2words(rng.randint(2, 999))
    ordinal = num2words(rng.randint(1, 99), to="ordinal")
    year = num2words(rng.randint(1900, 2099), to="year")
    shape = rng.randrange(4)
    if shape == 0:
        return [(f"{name} bought ", ""), (count, "COUNT"), (f" {thing} in ", ""), (year, "YEAR")]
    if shape == 1:
        return [("in ", ""), (year, "YEAR"), (f" {name} sat in the ", ""), (ordinal, "ORD"), (f" {place}", "")]
    if shape == 2:
        return [("the ", ""), (ordinal, "ORD"), (f" {place} had ", ""), (count, "COUNT"), (f" {thing}", "")]
    return [(f"{name} sold ", ""), (count, "COUNT"), (f" {thing}", "")]


def number_tag_examples(split: str) -> List[Tuple[str, List[int]]]:
    """(sentence, BIO label id per byte) for the ``number_tags`` split."""
    rng = _rng(split)
    out = []
    for _ in range(_SIZES[split]):
        text, labels = "", []
        for piece, kind in _sentence(rng):
            text += piece
            if kind:
                labels += [TAG_LABELS.index(f"B-{kind}")] + [TAG_LABELS.index(f"I-{kind}")] * (len(piece) - 1)
            else:
                labels += [0] * len(piece)
        out.append((text, labels))
    return out


def number_qa_examples(split: str) -> List[Tuple[str, int, int, str]]:
    """(inputs, start byte, end byte, answer) for the ``number_qa`` split."""
    from num2words import num2words

    rng = _rng("qa-" + split)
    out = []
    for _ in range(_SIZES[split]):
        name = rng.choice(_NAMES)
        a, b = rng.sample(_THINGS, 2)
        na, nb = num2words(rng.randint(1, 999)), num2words(rng.randint(1, 999))
        context = f"{name} has {na} {a} and {nb} {b}."
        asked, answer = (a, na) if rng.random() < 0.5 else (b, nb)
        inputs = f"question: how many {asked}? context: {context}"
        offset = len(inputs) - len(context)
        start = offset + (context.index(f" {answer} {asked}") + 1)
        out.append((inputs, start, start + len(answer) - 1, answer))
    return out


def _task(name, dataset_fn, counts, label_feature):
    import seqio
    import tensorflow as tf

    vocab = seqio.ByteVocabulary()
    features = {"inputs": seqio.Feature(vocab, add_eos=True)}
    features.update(label_feature(seqio, tf))
    return seqio.Task(
        name, source=seqio.FunctionDataSource(dataset_fn, splits=SPLITS, num_input_examples=counts),
        preprocessors=[seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
                       seqio.preprocessors.append_eos_after_trim],
        output_features=features, metric_fns=[])


def sst2_task():
    import tensorflow as tf

    from t5cli.runtime.head_data import class_labels

    def dataset_fn(split, shuffle_files=False, seed=None):
        rows = read_sst2(split)
        return tf.data.Dataset.from_tensor_slices({"inputs": [r[0] for r in rows],
                                                   "label": tf.constant([r[1] for r in rows], tf.int32)})

    return _task("sst2", dataset_fn, {"train": 6735, "validation": 872, "test": 872},
                 lambda seqio, tf: {"label": seqio.Feature(class_labels(SST2_LABELS), add_eos=False,
                                                           dtype=tf.int32, rank=0)})


def number_tags_task():
    import tensorflow as tf

    from t5cli.runtime.head_data import class_labels

    def dataset_fn(split, shuffle_files=False, seed=None):
        rows = number_tag_examples(split)
        return tf.data.Dataset.from_generator(
            lambda: ({"inputs": text, "labels": labels} for text, labels in rows),
            output_signature={"inputs": tf.TensorSpec([], tf.string),
                              "labels": tf.TensorSpec([None], tf.int32)})

    return _task("number_tags", dataset_fn, _SIZES, lambda seqio, tf: {
        "labels": seqio.Feature(class_labels(TAG_LABELS), add_eos=False, dtype=tf.int32)})


def number_qa_task():
    import tensorflow as tf

    def dataset_fn(split, shuffle_files=False, seed=None):
        rows = number_qa_examples(split)
        return tf.data.Dataset.from_tensor_slices({
            "inputs": [r[0] for r in rows],
            "start_position": tf.constant([r[1] for r in rows], tf.int32),
            "end_position": tf.constant([r[2] for r in rows], tf.int32)})

    return _task("number_qa", dataset_fn, _SIZES, lambda seqio, tf: {
        "start_position": seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False, dtype=tf.int32, rank=0),
        "end_position": seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False, dtype=tf.int32, rank=0)})


TASK_FACTORIES: Dict[str, Callable[[], object]] = {
    "sst2": sst2_task,
    "number_tags": number_tags_task,
    "number_qa": number_qa_task,
}
