"""Reading TensorBoard event files: every scalar under a summary directory.

Files are read with TensorBoard's own loader and protos: TF1 ``simple_value`` and TF2
``scalars``-plugin tensors alike. TensorBoard and TensorFlow are imported inside the
functions that need them.
"""

from __future__ import annotations

import collections
import fnmatch
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from t5cli.errors import T5CliError

logger = logging.getLogger(__name__)

_EVAL = "eval/"

_SKIP_WORDS = {"graph": "graphs", "pr_curves": "PR curves"}  # else the plugin name


@dataclass
class ReadStats:
    """What `read_scalars` saw besides the scalars: files, skipped summaries, warnings."""

    runs: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    skipped: collections.Counter = field(default_factory=collections.Counter)
    warnings: list[str] = field(default_factory=list)

    def skipped_line(self) -> str:
        """One line like '6 graphs, 60 histograms' (empty when nothing was skipped)."""
        return ", ".join(f"{n} {_SKIP_WORDS.get(k, k)}" for k, n in sorted(self.skipped.items()))


def tf_api():
    """TensorFlow's gfile/errors API: real TensorFlow when installed, else TensorBoard's stub."""
    from tensorboard.compat import tf  # real TensorFlow when installed, else TB's stub

    return tf


def _keep_higher(series: dict[int, float], step: int, value: float) -> None:
    old = series.get(step)
    if old is None or math.isnan(old) or value > old:
        series[step] = value


def _column(run: str, tag: str, seqio_summaries: bool) -> str | None:
    if seqio_summaries:  # T5: only `eval/<metric>` tags, named `<task>/<metric>`
        return f"{run}/{tag[len(_EVAL):]}" if tag.startswith(_EVAL) else None
    if tag.startswith(_EVAL) and tag.count("/") >= 2:  # mesh-TF T5's `eval/<task>/<metric>`
        tag = tag[len(_EVAL):]
    return tag if run == "." else f"{run}/{tag}"


def _is_event_file(path: str) -> bool:
    from tensorboard.backend.event_processing import io_wrapper

    return io_wrapper.IsSummaryEventsFile(path)


def find_runs(summary_dir: str, *, seqio_summaries: bool = False) -> dict[str, list[str]]:
    """Map run name -> sorted event files. Runs are subdirectories ('.' is the root);
    with `seqio_summaries` each direct subdirectory is a task and only files directly
    in it count. Raises T5CliError for a missing directory."""
    from tensorboard.backend.event_processing import io_wrapper

    tf = tf_api()
    path = os.fspath(summary_dir)
    if not tf.io.gfile.exists(path):
        raise T5CliError(f"summary directory {path!r} does not exist; pass the directory that "
                         "holds the event files, e.g. $MODEL_DIR/inference_eval")
    if not tf.io.gfile.isdir(path):
        if _is_event_file(path) and not seqio_summaries:
            return {".": [path]}
        raise T5CliError(f"{path!r} is not a directory; pass the directory that holds the "
                         "event files (names containing 'tfevents')")
    runs: dict[str, list[str]] = {}
    if seqio_summaries:
        for name in sorted(tf.io.gfile.listdir(path)):
            sub = os.path.join(path, name.rstrip("/"))
            if tf.io.gfile.isdir(sub):
                files = [os.path.join(sub, f) for f in tf.io.gfile.listdir(sub)
                         if not f.endswith("/") and _is_event_file(f)]
                files = [f for f in files if not tf.io.gfile.isdir(f)]
                if files:
                    runs[name.rstrip("/")] = sorted(files)
        return runs
    for dir_path, file_paths in io_wrapper.ListRecursivelyViaWalking(path):
        files = sorted(f for f in file_paths if _is_event_file(f))
        if files:
            run = os.path.relpath(dir_path, path).replace(os.sep, "/")
            runs[run] = files
    return dict(sorted(runs.items(), key=lambda kv: (kv[0] != ".", kv[0])))


def _events(path: str, stats: ReadStats, warn: Callable[[str], None]) -> Iterator:
    """Yield the Event protos of one file (old-style values migrated), warning on damage."""
    from google.protobuf.message import DecodeError
    from tensorboard import data_compat
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.compat.proto import event_pb2

    def report(msg: str) -> None:
        stats.warnings.append(msg)
        warn(msg)

    tf = tf_api()
    consumed = records = bad = 0
    try:
        for raw in event_file_loader.RawEventFileLoader(path).Load():
            consumed += len(raw) + 16  # TFRecord framing: length, 2 CRCs
            records += 1
            try:
                event = event_pb2.Event.FromString(raw)
            except DecodeError:
                bad += 1
                continue
            yield data_compat.migrate_event(event)
        size = tf.io.gfile.stat(path).length
    except tf.errors.OpError as e:
        why = (e.message or type(e).__name__).splitlines()[0]
        return report(f"{path}: cannot read ({why}); using the {records} records read before")
    if consumed < size:
        report(f"{path}: truncated or corrupt after record {records} (byte {consumed} of {size}); "
               f"using the {records} readable records")
    if bad:
        report(f"{path}: {bad} record(s) are not Event protos; skipped them")


def read_scalars(path, *, seqio_summaries: bool = False, tags: Iterable[str] | None = None,
                 stats: ReadStats | None = None,
                 warn: Callable[[str], None] | None = None) -> dict[str, dict[int, float]]:
    """Read every scalar under `path`: column name -> step -> value.

    Column names: without `seqio_summaries`, the tag for event files directly in
    `path` and `<run>/<tag>` for those in subdirectory `<run>`; a mesh-TF T5 tag
    `eval/<task>/<metric>` becomes `<task>/<metric>`. With `seqio_summaries`
    (T5's `--seqio_summaries`), each subdirectory is a task and only its
    `eval/<metric>` tags are read, as `<task>/<metric>`. A step logged twice keeps
    the higher value. `tags` are fnmatch globs on the column name. Non-scalar
    summaries are counted in `stats.skipped`; damaged files are read up to the
    damage and reported through `warn` (default: logging).
    """
    from tensorboard.util import tensor_util

    stats = stats if stats is not None else ReadStats()
    warn = warn or logger.warning
    globs = list(tags or ())
    out: dict[str, dict[int, float]] = {}
    for run, files in find_runs(path, seqio_summaries=seqio_summaries).items():
        plugin_of: dict[str, str] = {}  # TF2 writers put metadata on a tag's first value only
        stats.runs.append(run)
        for file in files:
            stats.files.append(file)
            for event in _events(file, stats, warn):
                if event.HasField("graph_def") or event.HasField("meta_graph_def"):
                    stats.skipped["graph"] += 1
                for value in event.summary.value:
                    plugin = value.metadata.plugin_data.plugin_name
                    if plugin:
                        plugin_of[value.tag] = plugin
                    else:
                        plugin = plugin_of.get(value.tag, "")
                    if plugin != "scalars" or value.WhichOneof("value") != "tensor":
                        stats.skipped[plugin or "non-scalar tensors"] += 1
                        continue
                    array = tensor_util.make_ndarray(value.tensor)
                    if array.size != 1 or array.dtype.kind not in "fiub":
                        stats.skipped["non-scalar tensors"] += 1
                        continue
                    name = _column(run, value.tag, seqio_summaries)
                    if name is None:
                        stats.skipped["scalars without eval/ prefix"] += 1
                    elif not globs or any(fnmatch.fnmatchcase(name, g) for g in globs):
                        _keep_higher(out.setdefault(name, {}), int(event.step), float(array.item()))
    return out
