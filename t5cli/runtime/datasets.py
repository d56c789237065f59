"""Where task data lives, and the message a user sees when it is absent.

Offline machines cannot download TFDS data; a task whose TFDS dataset is not prepared in
the data dir fails here, before any work, with the command that builds it.
"""

from __future__ import annotations

import os
from typing import Iterator, Optional

from t5cli.errors import DataError
from t5cli.quiet import absl_warnings_silenced


def set_tfds_data_dir(tfds_data_dir: Optional[str]) -> Optional[str]:
    """Point seqio's TFDS sources at ``tfds_data_dir`` (or ``$TFDS_DATA_DIR``); returns it."""
    data_dir = tfds_data_dir or os.environ.get("TFDS_DATA_DIR") or None
    if data_dir:
        import seqio

        seqio.set_tfds_data_dir_override(os.path.expanduser(data_dir))
    return data_dir


def _leaf_tasks(task) -> Iterator:
    import seqio

    if isinstance(task, seqio.Mixture):
        for sub in task.tasks:
            yield from _leaf_tasks(sub)
    else:
        yield task


def missing_tfds_message(task_name: str, tfds_name: str, data_dir: str) -> str:
    dataset = tfds_name.split("/")[0].split(":")[0]
    return (
        f"task {task_name!r} needs the TFDS dataset {tfds_name!r}, which is not prepared in "
        f"{data_dir}. On a machine with internet access run `tfds build {dataset} "
        f"--data_dir {data_dir}` (or copy a prepared data dir here), then pass "
        f"--tfds-data-dir DIR or set TFDS_DATA_DIR=DIR"
    )


def ensure_task_data(task, tfds_data_dir: Optional[str] = None) -> None:
    """Raise DataError naming ``tfds build`` when a TFDS source of ``task`` is not prepared."""
    import seqio

    data_dir = set_tfds_data_dir(tfds_data_dir)
    for leaf in _leaf_tasks(task):
        source = leaf.source
        if not isinstance(source, seqio.TfdsDataSource) or not source.tfds_dataset.name:
            continue
        import tensorflow_datasets as tfds

        name = source.tfds_dataset.name
        root = data_dir or os.path.expanduser("~/tensorflow_datasets")
        try:
            with absl_warnings_silenced():
                prepared = tfds.builder(name, data_dir=root).is_prepared()
        except Exception:  # unknown dataset or unreadable dir: same fix
            prepared = False
        if not prepared:
            raise DataError(missing_tfds_message(leaf.name, name, root))
