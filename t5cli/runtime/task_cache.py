"""Preprocessed task caches: seqio's Apache Beam pipeline, and where training finds its output.

:func:`cache_tasks` runs, for each task, the pipeline of seqio's ``seqio_cache_tasks``
script built from seqio's own transforms (``seqio.beam_utils``: ``PreprocessTask``,
``WriteExampleTfRecord``, ``GetInfo``, ``GetStats``, ``WriteJson``), so the output is
seqio's layout: ``DIR/<task>/<split>.tfrecord-NNNNN-of-NNNNN``, ``info.<split>.json``,
``stats.<split>.json`` and ``COMPLETED``. Any Beam runner works; DirectRunner by default.

Tasks come from t5cli's registry (builtins, plugin packages, user dirs). A Beam worker
that is a fresh process (``--direct_running_mode=multi_processing``, Dataflow, Flink,
Spark) has an empty ``seqio.TaskRegistry``: the ``setup_fn`` handed to ``PreprocessTask``
loads the same plugins and user dirs there first, so every worker needs t5cli, the
plugin packages and the user dirs at the same paths (docs/cache-tasks.md).

Reading: :func:`add_cache_dirs` joins ``--cache-dir`` folders and the default task cache
(``$T5CLI_TASK_CACHE_DIR`` or ``<user cache dir>/tasks``) to seqio's global cache dirs;
:func:`check_cached` turns a task that is not there into one line naming the command
that caches it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from t5cli.errors import ConfigError, DataError, T5CliError

ENV_TASK_CACHE_DIR = "T5CLI_TASK_CACHE_DIR"
INSTALL_HINT = "pip install 't5cli[beam]'"
DEFAULT_MIN_SHARDS = 64  # seqio_cache_tasks' default: more files, better shuffling on read

#: seqio's AssertionError for a task missing from every cache dir
_SEQIO_NOT_CACHED = re.compile(r"'(?P<name>[^']+)' does not exist in any of the task cache directories")


def default_cache_dir() -> Path:
    """``$T5CLI_TASK_CACHE_DIR``, else ``<user cache dir>/tasks`` (always searched)."""
    env = os.environ.get(ENV_TASK_CACHE_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("t5cli")) / "tasks"


def _norm(path) -> str:
    text = str(path)
    if "://" in text:  # gs://, s3:// … as given
        return text.rstrip("/")
    return os.path.abspath(os.path.expanduser(text))


def add_cache_dirs(dirs: Iterable = ()) -> List[str]:
    """Add ``dirs`` (in order), then the default task cache, to seqio's global cache dirs.

    Comma-separated values are split (T5X's ``--seqio_additional_cache_dirs`` style).
    Returns seqio's list; each folder is added once per process.
    """
    import seqio

    wanted = [_norm(p.strip()) for d in dirs for p in str(d).split(",") if p.strip()]
    wanted.append(_norm(default_cache_dir()))
    seqio.add_global_cache_dirs(wanted)
    return list(seqio.get_global_cache_dirs())


def cache_command(task_name: str) -> str:
    return f"t5 cache-tasks --task {task_name} --output-cache-dir DIR"


def not_cached_error(task_name: str) -> DataError:
    """The one line for a task that ``use_cached`` cannot find in any cache dir."""
    import seqio

    searched = ", ".join(seqio.get_global_cache_dirs()) or "none"
    return DataError(
        f"task {task_name!r} is not cached (cache dirs searched: {searched}); make the cache with "
        f"`{cache_command(task_name)}` and pass --cache-dir DIR, or drop --use-cached-tasks "
        f"(USE_CACHED_TASKS = False)"
    )


def check_cached(task) -> None:
    """DataError naming ``t5 cache-tasks`` unless every cacheable subtask of ``task`` is cached.

    The default task cache is searched too. Tasks without a ``CacheDatasetPlaceholder``
    pass: seqio preprocesses them on the fly, as T5X does.
    """
    import seqio

    add_cache_dirs()
    for leaf in seqio.get_subtasks(task):
        if leaf.supports_caching and not leaf.cache_dir:
            raise not_cached_error(leaf.name)


def missing_cache_error(exc: BaseException) -> Optional[DataError]:
    """seqio's "does not exist in any of the task cache directories" as our DataError, else None."""
    match = _SEQIO_NOT_CACHED.search(str(exc)) if isinstance(exc, AssertionError) else None
    return not_cached_error(match.group("name")) if match else None


@contextlib.contextmanager
def explain_missing_cache():
    """Re-raise seqio's bare AssertionError for an uncached task as the one-line DataError."""
    try:
        yield
    except AssertionError as exc:
        error = missing_cache_error(exc)
        if error is None:
            raise
        raise error from None


# --- writing a cache ------------------------------------------------------------------------

@dataclasses.dataclass
class CachedTask:
    """One task's cache: where it is and seqio's stats per split."""

    name: str
    output_dir: str
    stats: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)
    num_shards: Dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: Optional[str] = None  # why nothing was written, e.g. already cached
    seconds: float = 0.0  # wall time of the pipeline (shared by the tasks it ran)

    def describe(self) -> str:
        splits = ", ".join(f"{s} {st.get('examples', '?')} examples ({self.num_shards.get(s, '?')} shards)"
                           for s, st in self.stats.items())
        head = f"{self.name}: {self.skipped}" if self.skipped else f"{self.name}: {splits}"
        return f"{head} -> {self.output_dir}"


def import_beam(quiet: bool = False):
    """``(apache_beam, seqio.beam_utils)``, or a T5CliError saying how to install them.

    ``quiet``: TensorFlow's native start-up lines and Beam's import-time warnings
    (optional Google Cloud clients) are kept off the terminal.
    """
    if quiet:
        import logging

        from t5cli.quiet import import_tensorflow_quietly, native_stderr_silenced

        import_tensorflow_quietly()
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            with native_stderr_silenced():
                return import_beam()
        finally:
            root.setLevel(level)
    try:
        import apache_beam as beam
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "apache_beam":
            raise T5CliError(f"t5 cache-tasks needs apache-beam, which is not installed: "
                             f"{INSTALL_HINT}") from None
        raise T5CliError(f"apache-beam failed to import ({exc}); {INSTALL_HINT}") from None
    except ImportError as exc:
        raise T5CliError(f"apache-beam failed to import ({exc}); {INSTALL_HINT}") from None
    try:
        from seqio import beam_utils
    except ImportError as exc:  # array_record, or a protobuf that does not fit
        raise T5CliError(f"seqio's Beam pipeline failed to import ({exc}); {INSTALL_HINT}") from None
    return beam, beam_utils


def pipeline_options(args: Sequence[str] = ()):
    """Beam ``PipelineOptions`` from command-line style ``args``; ``--runner=DirectRunner``
    unless a runner is named."""
    from apache_beam.options.pipeline_options import PipelineOptions

    args = [str(a) for a in args]
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args = ["--runner=DirectRunner"] + args
    return PipelineOptions(args)


_WORKER_TASKS: set = set()


def worker_setup(user_dirs: Sequence[str], blocked: Sequence[str], task_names: Sequence[str],
                 quiet: bool = False) -> None:
    """Make ``task_names`` resolvable in ``seqio.TaskRegistry`` in this (maybe fresh) process.

    ``PreprocessTask`` calls it on the worker before it looks its task up; in the process
    that built the pipeline the tasks are there already and nothing is loaded. ``quiet``
    keeps a fresh worker from logging every power-of-two example (seqio, absl INFO).
    """
    import seqio

    missing = [n for n in task_names if n not in _WORKER_TASKS and n not in seqio.TaskRegistry.names()]
    if missing and quiet:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(min(absl_logging.get_verbosity(), absl_logging.WARNING))
    if missing:
        from t5cli.plugins import load_runtime

        runtime = load_runtime(list(user_dirs), blocked=list(blocked), include_env=False,
                               include_default_user_dir=False)
        for name in missing:
            runtime.registry.task(name)
    _WORKER_TASKS.update(task_names)


def _tasks_to_cache(runtime, names: Sequence[str]) -> List[Any]:
    """The seqio tasks behind ``names`` (a mixture stands for its subtasks), each once."""
    import seqio

    if not names:
        raise ConfigError("no task to cache: pass --task NAME (repeatable)")
    tasks: Dict[str, Any] = {}
    for name in names:
        for leaf in seqio.get_subtasks(runtime.registry.task(name)):
            tasks.setdefault(leaf.name, leaf)
    for task in tasks.values():
        if not task.supports_caching:
            raise ConfigError(
                f"task {task.name!r} cannot be cached: its preprocessors have no "
                f"seqio.CacheDatasetPlaceholder() (add one after the deterministic steps, "
                f"e.g. after tokenize; what follows it runs when the cache is read)")
        if not task.splits:
            raise ConfigError(f"task {task.name!r} has no splits to cache")
    return list(tasks.values())


def _preprocessors_seed(task_name: str, base_seed: Optional[int]) -> Optional[int]:
    # as seqio_cache_tasks --base_seed: a task-specific seed derived from the base seed
    if base_seed is None or base_seed == -1:
        return None
    return int.from_bytes(hashlib.md5(task_name.encode()).digest(), "little") + base_seed


def _add_task(pipeline, beam, beam_utils, task, task_dir: str, *, setup_fn, min_shards: int,
              max_shards: int, base_seed: Optional[int], tfds_data_dir: Optional[str],
              header: str) -> Dict[str, int]:
    """seqio_cache_tasks' ``run_pipeline`` body for one task; returns shards per split."""
    import seqio

    shards: Dict[str, int] = {}
    completion = []
    for split in task.splits:
        label = f"{task.name}_{split}"
        pat = beam_utils.PreprocessTask(
            task, split, preprocessors_seed=_preprocessors_seed(task.name, base_seed),
            setup_fn=setup_fn, tfds_data_dir=tfds_data_dir)
        num_shards = max(len(pat.shards), min_shards) if min_shards > 0 else len(pat.shards)
        if max_shards > 0:
            num_shards = min(num_shards, max_shards)
        shards[split] = num_shards
        # the reshuffle shuffles examples globally as a side effect (as in seqio)
        examples = (pipeline | f"{label}_pat" >> pat
                    | f"{label}_global_example_shuffle" >> beam.Reshuffle())
        completion.append(
            examples | f"{label}_write_tfrecord" >> beam_utils.WriteExampleTfRecord(
                seqio.get_cached_tfrecord_prefix(task_dir, split), num_shards=num_shards))
        completion.append(
            examples | f"{label}_info" >> beam_utils.GetInfo(num_shards)
            | f"{label}_write_info" >> beam_utils.WriteJson(seqio.get_cached_info_path(task_dir, split)))
        completion.append(
            examples | f"{label}_stats" >> beam_utils.GetStats(task.output_features)
            | f"{label}_write_stats" >> beam_utils.WriteJson(seqio.get_cached_stats_path(task_dir, split)))
    # COMPLETED is written only after every split's files: seqio reads no cache without it
    _ = (completion
         | f"{task.name}_flatten_completion_values" >> beam.Flatten()
         | f"{task.name}_discard_completion_values" >> beam.Filter(lambda _: False)
         | f"{task.name}_write_completed_file" >> beam.io.textio.WriteToText(
             os.path.join(task_dir, "COMPLETED"), append_trailing_newlines=False, num_shards=1,
             shard_name_template="", header=header))
    return shards


def pipeline_error(exc: BaseException) -> DataError:
    """A failed pipeline in one line: the worker's exception (Beam wraps it in its traceback
    text) and the step it ran, ``[while running '<task>_<split>_pat/...']``."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    cause = next((ln for ln in reversed(lines)
                  if re.match(r"^[A-Za-z_][\w.]*(Error|Exception)\b[^:]*: ", ln)), None)
    text = cause or f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return DataError(f"the Beam pipeline failed: {text}")


def read_cache_stats(task_dir: str, split: str) -> Dict[str, Any]:
    """seqio's ``stats.<split>.json`` of a cached task."""
    import json

    import seqio
    import tensorflow as tf

    with tf.io.gfile.GFile(seqio.get_cached_stats_path(task_dir, split)) as f:
        return json.load(f)


def cache_tasks(task_names: Sequence[str], output_cache_dir=None, *, runtime=None,
                user_dirs: Sequence = (), blocked: Sequence[str] = (),
                min_shards: int = DEFAULT_MIN_SHARDS, max_shards: int = 0,
                beam_options: Sequence[str] = (), overwrite: bool = False,
                tfds_data_dir: Optional[str] = None, base_seed: Optional[int] = None,
                verbose: bool = False) -> List[CachedTask]:
    """Preprocess ``task_names`` up to their ``CacheDatasetPlaceholder`` with seqio's Beam
    pipeline into ``output_cache_dir`` (default: :func:`default_cache_dir`).

    ``beam_options`` are Beam pipeline options as on a command line (``--runner``,
    ``--direct_num_workers``, ``--direct_running_mode``, Dataflow's …). A task already
    cached there (``COMPLETED`` present) is skipped unless ``overwrite``; a partial one is
    replaced. ``runtime`` defaults to ``load_runtime(user_dirs, blocked=blocked)``; its user
    dirs and ``blocked`` are loaded again on workers that are fresh processes. ``min_shards``,
    ``max_shards``, ``base_seed`` and ``tfds_data_dir`` mean what they mean to
    ``seqio_cache_tasks``. ``verbose`` leaves seqio's and Beam's logging as it is. A failed
    pipeline is a DataError naming the worker's exception. Returns one :class:`CachedTask`
    per task, in order.
    """
    beam, beam_utils = import_beam()
    import seqio
    import tensorflow as tf

    from t5cli import __version__
    from t5cli.runtime.datasets import ensure_task_data, set_tfds_data_dir

    if runtime is None:
        from t5cli.plugins import load_runtime

        runtime = load_runtime(list(user_dirs), blocked=list(blocked))
    if min_shards < 0 or max_shards < 0:
        raise ConfigError("--min-shards and --max-shards must be >= 0")
    tasks = _tasks_to_cache(runtime, task_names)
    tfds_data_dir = set_tfds_data_dir(tfds_data_dir)
    for task in tasks:
        ensure_task_data(task, tfds_data_dir)
    options = pipeline_options(beam_options)

    out = _norm(output_cache_dir if output_cache_dir is not None else default_cache_dir())
    tf.io.gfile.makedirs(out)
    results: List[CachedTask] = []
    todo = []
    for task in tasks:
        task_dir = os.path.join(out, seqio.get_task_dir_from_name(task.name))
        result = CachedTask(name=task.name, output_dir=task_dir)
        results.append(result)
        if tf.io.gfile.exists(os.path.join(task_dir, "COMPLETED")) and not overwrite:
            result.skipped = "already cached (pass --overwrite to build it again)"
        else:
            if tf.io.gfile.exists(task_dir):  # an earlier, partial or replaced, cache
                tf.io.gfile.rmtree(task_dir)
            todo.append((task, result))

    if todo:
        setup_fn = functools.partial(worker_setup, tuple(runtime.gin_search_paths()),
                                     tuple(blocked), tuple(t.name for t, _ in todo),
                                     quiet=not verbose)
        header = f"cached by t5 cache-tasks (t5cli {__version__}, seqio {seqio.__version__})"
        start = time.perf_counter()
        try:
            with _quiet_logs(not verbose), beam.Pipeline(options=options) as pipeline:
                for task, result in todo:
                    result.num_shards = _add_task(
                        pipeline, beam, beam_utils, task, result.output_dir, setup_fn=setup_fn,
                        min_shards=min_shards, max_shards=max_shards, base_seed=base_seed,
                        tfds_data_dir=tfds_data_dir, header=header)
        except T5CliError:
            raise
        except Exception as exc:
            raise pipeline_error(exc) from exc
        seconds = time.perf_counter() - start
        for _, result in todo:
            result.seconds = seconds

    for task, result in zip(tasks, results):
        for split in task.splits:
            result.stats[split] = read_cache_stats(result.output_dir, split)
            if split not in result.num_shards:
                result.num_shards[split] = _info_shards(result.output_dir, split)
    return results


def _info_shards(task_dir: str, split: str) -> int:
    import json

    import seqio
    import tensorflow as tf

    with tf.io.gfile.GFile(seqio.get_cached_info_path(task_dir, split)) as f:
        return int(json.load(f).get("num_shards", 0))


@contextlib.contextmanager
def _quiet_logs(quiet: bool = True):
    """Keep seqio's per-example INFO lines (absl), Beam's warning about seqio's generator
    DoFn (it yields and returns) and Beam's logged copy of a failure's traceback (the
    failure is raised anyway) off the terminal."""
    import logging

    from absl import logging as absl_logging

    if not quiet:
        yield
        return
    saved = absl_logging.get_verbosity()
    absl_logging.set_verbosity(min(saved, absl_logging.WARNING))  # absl: higher is chattier
    loggers = {"apache_beam.transforms.core": logging.ERROR,
               "apache_beam.runners.common": logging.CRITICAL}
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name, level in loggers.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        absl_logging.set_verbosity(saved)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
