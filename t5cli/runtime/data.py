"""seqio task or mixture → encoder-decoder feature converter → numpy batches.

Training batches are packed (``seqio.EncDecFeatureConverter(pack=True)``), shuffled with a
fixed seed and repeated forever, so the stream of batches is a pure function of
(task, lengths, batch size, seed, host): a resumed run skips the batches it has already
consumed and sees exactly what an uninterrupted run would have seen. Each host reads its
own shard (``seqio.ShardInfo(jax.process_index(), jax.process_count())``) and yields
``batch_size // process_count`` examples per batch.

Evaluation batches are not packed (``pack`` may be switched on for the training-eval
loss), not shuffled, read once; the last batch is padded to full size and comes with a
``mask`` of real rows.

With ``use_cached`` the examples come from seqio's preprocessed cache (``t5 cache-tasks``,
:mod:`t5cli.runtime.task_cache`) in the order seqio's cached reader gives for the seed; a
task missing from every cache dir is a DataError naming the command that makes it.

Batch keys (from the converter): ``encoder_input_tokens``, ``decoder_input_tokens``,
``decoder_target_tokens``, ``decoder_loss_weights`` and, when packed,
``encoder_segment_ids``, ``decoder_segment_ids``, ``encoder_positions``,
``decoder_positions``.
"""

from __future__ import annotations

import itertools
from typing import Dict, Iterator, Mapping, Optional, Tuple

import numpy as np

from t5cli.errors import ConfigError, DataError, T5CliError

Batch = Dict[str, np.ndarray]


def parse_feature_lengths(text: str) -> Dict[str, int]:
    """``"inputs=256,targets=128"`` → ``{"inputs": 256, "targets": 128}`` (ConfigError if bad)."""
    out: Dict[str, int] = {}
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        if not eq or not name.strip() or not value.strip().isdigit() or int(value) <= 0:
            raise ConfigError(
                f"--feature-lengths {text!r}: expected NAME=LENGTH pairs separated by commas, "
                f"e.g. inputs=256,targets=256 (bad part: {part!r})"
            )
        out[name.strip()] = int(value)
    if not out:
        raise ConfigError("--feature-lengths is empty; pass e.g. inputs=256,targets=256")
    return out


def check_feature_lengths(task, feature_lengths: Optional[Mapping[str, int]]) -> Dict[str, int]:
    """Lengths for exactly the task's output features (a head task's: ``inputs`` only, see
    :mod:`t5cli.runtime.head_data`); a missing or unknown one is a ConfigError."""
    from t5cli.runtime.head_data import length_features

    features = length_features(task)
    if feature_lengths is None:
        raise ConfigError(
            f"TASK_FEATURE_LENGTHS is not set for task {task.name!r}; pass --feature-lengths "
            + ",".join(f"{f}=N" for f in features)
        )
    if not isinstance(feature_lengths, Mapping):
        raise ConfigError(f"TASK_FEATURE_LENGTHS must be a dict like {{'inputs': 256, 'targets': 256}}, "
                          f"got {feature_lengths!r}")
    missing = [f for f in features if f not in feature_lengths]
    unknown = [f for f in feature_lengths if f not in task.output_features]
    if unknown:
        fix = (f"; did you mean {missing[0]}={feature_lengths[unknown[0]]}?" if len(unknown) == 1
               and len(missing) == 1 else f"; remove it{' and add ' + missing[0] + '=N' if missing else ''}")
        raise ConfigError(
            f"TASK_FEATURE_LENGTHS names feature {unknown[0]!r}, which task {task.name!r} does not "
            f"have (its features: {', '.join(features)}){fix}"
        )
    if missing:
        raise ConfigError(
            f"TASK_FEATURE_LENGTHS has no length for feature {missing[0]!r} of task {task.name!r} "
            f"(its features: {', '.join(features)}); add {missing[0]}=N to --feature-lengths"
        )
    for name in features:
        value = feature_lengths[name]
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"TASK_FEATURE_LENGTHS[{name!r}] = {value!r} must be a positive integer")
    return {f: int(feature_lengths[f]) for f in features}


def check_vocabulary(task, model_config, model_name: Optional[str] = None) -> None:
    """ConfigError when the task's target vocabulary has more ids than the model's
    ``vocab_size`` (the model could never produce, or read, the ids past it)."""
    feature = task.output_features.get("targets") or next(iter(task.output_features.values()), None)
    needed = getattr(getattr(feature, "vocabulary", None), "vocab_size", 0) or 0
    have = getattr(model_config, "vocab_size", None)
    if needed and have and needed > have:
        raise ConfigError(
            f"task {task.name!r} uses a vocabulary of {needed} ids but model "
            f"{model_name or getattr(model_config, 'name', None) or 'config'} has vocab_size {have}; "
            f"pick a model made for this vocabulary")


def _host_batch_size(batch_size: int) -> Tuple[int, object]:
    import jax
    import seqio

    count, index = jax.process_count(), jax.process_index()
    if batch_size % count:
        raise ConfigError(f"BATCH_SIZE={batch_size} must be divisible by the {count} hosts")
    return batch_size // count, seqio.ShardInfo(index=index, num_shards=count)


def _dataset(task, split: str, feature_lengths, *, batch_size: int, shuffle: bool, seed: Optional[int],
             pack: bool, num_epochs: Optional[int], use_cached: bool, drop_remainder: bool,
             per_process: bool = True):
    import seqio

    from t5cli.quiet import drop_seqio_noise
    from t5cli.runtime import head_data

    drop_seqio_noise()
    lengths = check_feature_lengths(task, feature_lengths)
    if split not in task.splits:
        raise DataError(
            f"task {task.name!r} has no split {split!r} (it has: {', '.join(task.splits)})"
        )
    host_batch, shard_info = _host_batch_size(batch_size) if per_process else (batch_size, None)
    converter = head_data.feature_converter(task, pack)  # seqio's EncDecFeatureConverter but for heads
    if head_data.task_head(task) is not None:
        lengths = head_data.full_lengths(task, lengths)
    if use_cached:
        from t5cli.runtime.task_cache import check_cached

        check_cached(task)
    try:
        ds = seqio.get_dataset(
            task.name, task_feature_lengths=lengths, feature_converter=converter,
            dataset_split=split, use_cached=use_cached, shuffle=shuffle, num_epochs=num_epochs,
            shard_info=shard_info, verbose=False, seed=seed,
        )
    except T5CliError:
        raise
    except Exception as exc:
        if use_cached and isinstance(exc, (FileNotFoundError, ValueError)) and "cache" in str(exc).lower():
            from t5cli.runtime.task_cache import cache_command

            raise DataError(
                f"task {task.name!r}: its cache cannot be read ({exc}); build it again with "
                f"`{cache_command(task.name)} --overwrite`, or set USE_CACHED_TASKS = False"
            ) from None
        raise data_error(task.name, split, exc) from exc
    return ds.batch(host_batch, drop_remainder=drop_remainder), host_batch


def data_error(task_name: str, split: str, exc: BaseException) -> DataError:
    """The DataError for a task whose ``split`` could not be read: the task and the error, one line."""
    import re

    from t5cli.errors import first_line
    from t5cli.runtime.task_cache import missing_cache_error

    not_cached = missing_cache_error(exc)
    if not_cached is not None:
        return not_cached
    # tf.data errors name the graph node and the iterator chain before the cause
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", first_line(exc))
    text = re.sub(r" with iterator: [\w:]*\w", "", text)
    return DataError(f"task {task_name!r}: reading its {split!r} split failed: "
                     f"{type(exc).__name__}: {text}")


def get_train_iterator(task, feature_lengths: Mapping[str, int], batch_size: int, *,
                       seed: int, start_step: int = 0, shuffle: bool = True, pack: bool = True,
                       use_cached: bool = False) -> Iterator[Batch]:
    """Endless packed training batches (numpy dicts), starting at batch ``start_step``.

    The order depends only on the arguments, so ``start_step=N`` continues exactly where a
    run that consumed N batches stopped (the skipped batches are computed, not stored).
    The first batch is read at once: a task whose data cannot be read raises DataError here.
    """
    ds, _ = _dataset(task, "train", feature_lengths, batch_size=batch_size, shuffle=shuffle,
                     seed=seed, pack=pack, num_epochs=None, use_cached=use_cached,
                     drop_remainder=True)
    if start_step:
        ds = ds.skip(start_step)
    batches = ds.prefetch(2).as_numpy_iterator()
    try:  # a pipeline that fails on its first example fails here, before any training
        first = next(batches)
    except StopIteration:
        raise DataError(f"task {task.name!r} has no examples in its 'train' split") from None
    except Exception as exc:
        raise data_error(task.name, "train", exc) from exc
    return itertools.chain([first], batches)


def get_eval_batches(task, split: str, feature_lengths: Mapping[str, int], batch_size: int, *,
                     pack: bool = False, max_batches: Optional[int] = None,
                     use_cached: bool = False, per_process: bool = True) -> Iterator[Tuple[Batch, np.ndarray]]:
    """``(batch, mask)`` pairs over one pass of ``split`` in order; the last batch is padded
    with zero rows to ``batch_size`` (per host) and ``mask`` [B] bool marks the real rows.
    In a multi-process job each process reads its own shard of ``batch_size / processes``
    rows a batch; ``per_process=False`` reads the whole split in whole batches everywhere."""
    ds, host_batch = _dataset(task, split, feature_lengths, batch_size=batch_size, shuffle=False,
                              seed=42, pack=pack, num_epochs=1, use_cached=use_cached,
                              drop_remainder=False, per_process=per_process)
    if max_batches is not None:
        ds = ds.take(max_batches)
    for batch in ds.as_numpy_iterator():
        n = len(next(iter(batch.values())))
        mask = np.zeros(host_batch, dtype=bool)
        mask[:n] = True
        if n < host_batch:
            batch = {k: np.concatenate([v, np.zeros((host_batch - n,) + v.shape[1:], v.dtype)])
                     for k, v in batch.items()}
        yield batch, mask


def example_text(example: Mapping[str, object], key: str, vocabulary) -> str:
    """Feature ``key`` of a preprocessed example as text: its ``*_pretokenized`` string, else
    its tokens decoded."""
    raw = example.get(f"{key}_pretokenized")
    if raw is None:
        raw = vocabulary.decode([int(t) for t in example[key]])
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
