"""An example user dir, in the style of the T5X README: tasks registered at import time.

`toy_ende` translates English to German on the OpenNMT "toy-ende" corpus (real WMT text,
Moses-tokenised). The files are read from $TOY_ENDE_DIR, or from ../shared/data/toy-ende
beside the t5cli checkout. Load with `t5 --user-dir examples/user_dir ...`.
"""

import functools
import os
import pathlib

import seqio
import tensorflow as tf

from builtin_tasks.metrics import bleu, chrf

from . import common  # sibling modules import each other through the package

DATA_DIR = pathlib.Path(
    os.environ.get("TOY_ENDE_DIR")
    or pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "toy-ende"
)
FILES = {"train": "train", "validation": "val", "test": "test"}


def toy_ende_dataset(split, shuffle_files=False, seed=None):
    """Line-aligned src/tgt files as a tf.data.Dataset of {"en", "de"}.

    seqio passes ``shuffle_files`` and ``seed``; one file per split leaves nothing to shuffle.
    """
    del shuffle_files, seed
    stem = FILES[split]
    src, tgt = DATA_DIR / f"src-{stem}.txt", DATA_DIR / f"tgt-{stem}.txt"
    if not src.is_file():
        raise FileNotFoundError(
            f"toy-ende data not found at {src}; set TOY_ENDE_DIR to the folder holding "
            f"src-{stem}.txt and tgt-{stem}.txt"
        )
    return tf.data.Dataset.zip((tf.data.TextLineDataset(str(src)), tf.data.TextLineDataset(str(tgt)))).map(
        lambda en, de: {"en": en, "de": de}
    )


seqio.TaskRegistry.add(
    "toy_ende",
    source=seqio.FunctionDataSource(toy_ende_dataset, splits=list(FILES)),
    preprocessors=[
        functools.partial(common.translate, source="en", target="de"),
        seqio.preprocessors.tokenize,
        seqio.CacheDatasetPlaceholder(),
        seqio.preprocessors.append_eos_after_trim,
    ],
    output_features={
        "inputs": seqio.Feature(seqio.ByteVocabulary(), add_eos=True),
        "targets": seqio.Feature(seqio.ByteVocabulary(), add_eos=True),
    },
    metric_fns=[bleu, chrf],
)
