"""Definitions of the built-in seqio tasks.

Each factory builds its task only when called, so listing names imports nothing heavy.

- ``wmt_t2t_ende_v003`` / ``wmt_t2t_de_en_v003``: T5's WMT tasks on TFDS
  ``wmt_t2t_translate/de-en`` with T5's SentencePiece vocabulary. Their data must be built
  with ``tfds build`` on a machine that can download it.
- ``number_words_en_de``: English number words to German number words ("three hundred
  and forty-two" → "dreihundertzweiundvierzig") for 0–9999, generated offline with
  ``num2words``; byte-level vocabulary; a tiny model learns it in minutes.
  ``number_words_en_de_999`` is the same for 0–999 (shorter, faster to learn).
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable, Dict, List, Tuple

#: T5's English SentencePiece model (32k pieces + 100 sentinels); override for offline use.
DEFAULT_SPM_PATH = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
ENV_SPM_PATH = "T5CLI_SENTENCEPIECE_MODEL"
WMT_TFDS_NAME = "wmt_t2t_translate/de-en:1.0.0"

SPLITS = ("train", "validation", "test")


# --- number words ------------------------------------------------------------------------

def number_split(n: int) -> str:
    """The split a number belongs to: a fixed hash, so the splits are disjoint everywhere."""
    bucket = int(hashlib.sha256(str(n).encode("ascii")).hexdigest(), 16) % 10
    return "validation" if bucket == 0 else "test" if bucket == 1 else "train"


def number_word_pairs(split: str, low: int = 0, high: int = 9999) -> List[Tuple[str, str]]:
    """(English words, German words) for every number of ``split`` in [low, high]."""
    from num2words import num2words

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return [
        (num2words(n, lang="en"), num2words(n, lang="de"))
        for n in range(low, high + 1)
        if number_split(n) == split
    ]


def _number_words_task(name: str, high: int):
    import seqio
    import tensorflow as tf

    from builtin_tasks.metrics import chrf, sequence_accuracy

    def dataset_fn(split: str, shuffle_files: bool = False, seed=None):
        del shuffle_files, seed  # one in-memory "file"; seqio shuffles examples
        pairs = number_word_pairs(split, 0, high)
        return tf.data.Dataset.from_tensor_slices({
            "inputs": [p[0] for p in pairs],
            "targets": [p[1] for p in pairs],
        })

    counts = {s: sum(number_split(n) == s for n in range(high + 1)) for s in SPLITS}  # no num2words
    vocab = seqio.ByteVocabulary()
    return seqio.Task(
        name,
        source=seqio.FunctionDataSource(dataset_fn, splits=SPLITS, num_input_examples=counts),
        preprocessors=[
            seqio.preprocessors.tokenize,
            seqio.CacheDatasetPlaceholder(),
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features={
            "inputs": seqio.Feature(vocab, add_eos=True),
            "targets": seqio.Feature(vocab, add_eos=True),
        },
        metric_fns=[sequence_accuracy, chrf],
    )


# --- WMT -----------------------------------------------------------------------------------

def sentencepiece_path() -> str:
    """T5's SentencePiece model: ``$T5CLI_SENTENCEPIECE_MODEL`` or the public GCS path."""
    return os.environ.get(ENV_SPM_PATH) or DEFAULT_SPM_PATH


def _translate(source_lang: str, target_lang: str):
    """A preprocessor: ``{"de": …, "en": …}`` → T5's "translate X to Y: …" inputs/targets."""
    names = {"en": "English", "de": "German", "fr": "French", "ro": "Romanian"}

    def preprocess(dataset):
        import tensorflow as tf

        prefix = f"translate {names[source_lang]} to {names[target_lang]}: "

        def fn(ex):
            return {
                "inputs": tf.strings.join([prefix, ex[source_lang]]),
                "targets": ex[target_lang],
            }

        return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)

    preprocess.__name__ = f"translate_{source_lang}_{target_lang}"
    return preprocess


def _wmt_task(name: str, source_lang: str, target_lang: str):
    import seqio

    from builtin_tasks.metrics import bleu

    vocab = seqio.SentencePieceVocabulary(sentencepiece_path(), extra_ids=100)
    return seqio.Task(
        name,
        source=seqio.TfdsDataSource(tfds_name=WMT_TFDS_NAME),
        preprocessors=[
            _translate(source_lang, target_lang),
            seqio.preprocessors.tokenize,
            seqio.CacheDatasetPlaceholder(),
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features={
            "inputs": seqio.Feature(vocab, add_eos=True),
            "targets": seqio.Feature(vocab, add_eos=True),
        },
        metric_fns=[bleu],
    )


def _factory(fn, *args) -> Callable[[], object]:
    def build():
        return fn(*args)

    return build


TASK_FACTORIES: Dict[str, Callable[[], object]] = {
    "number_words_en_de": _factory(_number_words_task, "number_words_en_de", 9999),
    "number_words_en_de_999": _factory(_number_words_task, "number_words_en_de_999", 999),
    "wmt_t2t_ende_v003": _factory(_wmt_task, "wmt_t2t_ende_v003", "en", "de"),
    "wmt_t2t_de_en_v003": _factory(_wmt_task, "wmt_t2t_de_en_v003", "de", "en"),
}
