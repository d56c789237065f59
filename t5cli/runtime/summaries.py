"""What training writes for people to read: TensorBoard scalars and ``model-info.txt``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Mapping

import jax
import numpy as np
from jax.sharding import PartitionSpec

from t5cli.runtime.losses import summarize
from t5cli.runtime.optim import path_str
from t5cli.runtime.partitioning import describe_spec, per_device_bytes


class SummaryWriter:
    """TensorBoard scalars (``simple_value`` events, read by every TensorBoard loader and
    by ``t5 parse-metrics``) in one directory; only process 0 writes."""

    def __init__(self, logdir: Path):
        self._writer = None
        if jax.process_index() == 0:
            # imported here: tensorboard brings TensorFlow along when it is installed
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            Path(logdir).mkdir(parents=True, exist_ok=True)
            self._writer = EventFileWriter(str(logdir))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if self._writer is None:
            return
        from tensorboard.compat.proto import event_pb2, summary_pb2

        values = [summary_pb2.Summary.Value(tag=tag, simple_value=float(v)) for tag, v in scalars.items()]
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                               summary=summary_pb2.Summary(value=values)))
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def summarize_steps(metrics: List[Mapping[str, Any]]) -> Dict[str, float]:
    """The summary of some train steps' metrics (host values): sums added up and normalised
    (:func:`t5cli.runtime.losses.summarize`), with the learning rate of the last step."""
    sums = {k: sum(float(m[k]) for m in metrics) for k in metrics[0] if k != "finite"}
    out = summarize(sums, num_steps=len(metrics))
    out["learning_rate"] = float(metrics[-1]["learning_rate"])
    return out


def write_model_info(path: Path, abstract_params, param_axes, param_shardings, abstract_opt,
                     opt_shardings=None) -> None:
    """One line per variable (path, size, shape with axis names, partition spec), as T5X,
    then the bytes each device holds (parameters, and optimizer state given ``opt_shardings``)."""
    leaves = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
    axes = jax.tree_util.tree_leaves(param_axes, is_leaf=lambda x: isinstance(x, PartitionSpec) or x is None)
    shardings = jax.tree_util.tree_leaves(param_shardings)
    lines, total = [], 0
    for (p, x), ax, sh in zip(leaves, axes, shardings):
        size = int(np.prod(x.shape))
        total += size
        names = list(ax) if ax is not None else [None] * len(x.shape)
        shape = ", ".join(f"{n}={d}" if n else str(d) for n, d in zip(names, x.shape))
        lines.append(f"Variable {path_str(p):<60} size {size:<10} shape ({shape}) "
                     f"partition spec {describe_spec(sh.spec)}")
    lines.append(f"Total number of parameters: {total}")
    lines.append("")
    opt_total = 0
    for p, x in jax.tree_util.tree_flatten_with_path(abstract_opt)[0]:
        size = int(np.prod(x.shape)) if x.shape else 1
        opt_total += size
        lines.append(f"Optimizer state {path_str(p):<52} size {size:<10} shape {tuple(x.shape)}")
    lines.append(f"Total number of optimizer state values: {opt_total}")
    mesh = jax.tree_util.tree_leaves(param_shardings)[0].mesh if jax.tree_util.tree_leaves(param_shardings) else None
    if mesh is not None:
        lines.append("")
        lines.append(f"Mesh: {mesh.devices.size} device(s), "
                     + ", ".join(f"{k}={v}" for k, v in mesh.shape.items()))
        lines.append(f"Per-device parameter bytes: {per_device_bytes(abstract_params, param_shardings):,}")
        if opt_shardings is not None:
            lines.append(f"Per-device optimizer state bytes: {per_device_bytes(abstract_opt, opt_shardings):,}")
    Path(path).write_text("\n".join(lines) + "\n")


__all__ = ["SummaryWriter", "summarize_steps", "write_model_info"]
