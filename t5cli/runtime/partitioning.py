"""Device mesh and logical-axis rules: where each array lives.

The mesh has two axes, ``data`` and ``model``. Parameters carry logical axis names
(``embed``, ``mlp``, ``heads``, …, from the model's ``param_axes``); a list of
``(logical_axis, mesh_axis_or_None)`` rules maps them to mesh axes, T5X style: for each
dimension the first rule naming its logical axis whose mesh axis is not already used by
an earlier dimension of the same array wins; no rule means replicated. Plugin rules come
before the built-in ones, so they take precedence.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from t5cli.errors import ConfigError

DATA, MODEL = "data", "model"

Rules = List[Tuple[str, Optional[str]]]

#: T5X's standard rules for a (data, model) mesh
BUILTIN_RULES: Rules = [
    ("batch", DATA),
    ("vocab", MODEL),
    ("mlp", MODEL),
    ("heads", MODEL),
    ("joined_kv", MODEL),
    ("kv", None),
    ("embed", None),
    ("relpos_buckets", None),
    ("length", None),
    ("layers", None),
]


def logical_axis_rules(plugin_rules: Iterable[Tuple[str, Optional[str]]] = ()) -> Rules:
    """Plugin rules first (they win), then the built-in ones."""
    rules = [(str(a), m) for a, m in plugin_rules]
    for axis, mesh_axis in rules:
        if mesh_axis not in (None, DATA, MODEL):
            raise ConfigError(
                f"partitioning rule {axis!r} -> {mesh_axis!r} names an unknown mesh axis; "
                f"use {DATA!r}, {MODEL!r} or None"
            )
    return rules + list(BUILTIN_RULES)


def create_mesh(num_partitions: int = 1, devices: Optional[Sequence] = None) -> Mesh:
    """A ``(data, model)`` mesh over ``devices`` (default: all devices), model axis of
    size ``num_partitions``."""
    if devices is None:  # each process's devices side by side; ids need not be contiguous
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    devices = list(devices)
    n = len(devices)
    if num_partitions < 1 or n % num_partitions:
        raise ConfigError(
            f"num_partitions={num_partitions} does not divide the {n} available devices; "
            f"choose a divisor of {n}"
        )
    grid = np.asarray(devices, dtype=object).reshape(n // num_partitions, num_partitions)
    return Mesh(grid, (DATA, MODEL))


def logical_to_mesh_spec(logical: Optional[PartitionSpec], rules: Rules) -> PartitionSpec:
    """Map one PartitionSpec of logical axis names to one of mesh axis names."""
    if logical is None:
        return PartitionSpec()
    used = set()
    out = []
    for name in logical:
        chosen = None
        if name is not None:
            for axis, mesh_axis in rules:
                if axis == name and (mesh_axis is None or mesh_axis not in used):
                    chosen = mesh_axis
                    break
        if chosen is not None:
            used.add(chosen)
        out.append(chosen)
    return PartitionSpec(*out)


def param_specs(param_axes, rules: Rules):
    """Tree of mesh PartitionSpecs for a tree of logical PartitionSpecs."""
    return jax.tree_util.tree_map(lambda s: logical_to_mesh_spec(s, rules), param_axes,
                                  is_leaf=lambda x: isinstance(x, PartitionSpec) or x is None)


def fit_spec_to_mesh(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """Drop mesh axes that do not divide the dimension they shard (e.g. a tiny vocab)."""
    out = []
    for i, axis in enumerate(spec):
        if axis is not None and i < len(shape) and shape[i] % mesh.shape[axis]:
            axis = None
        out.append(axis)
    return PartitionSpec(*out)


def param_shardings(mesh: Mesh, param_axes, abstract_params, rules: Rules):
    """NamedShardings for the parameter tree (``abstract_params`` gives the shapes)."""
    specs = param_specs(param_axes, rules)
    return jax.tree_util.tree_map(
        lambda spec, x: NamedSharding(mesh, fit_spec_to_mesh(spec, x.shape, mesh)),
        specs, abstract_params, is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over ``data``, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """The global batch must split evenly over the data axis (and hosts)."""
    data = mesh.shape[DATA]
    if batch_size % data:
        raise ConfigError(
            f"BATCH_SIZE={batch_size} is not divisible by the {data} data-parallel devices; "
            f"pass --batch-size a multiple of {data}"
        )


def shard_batch(batch, mesh: Mesh):
    """Host-local numpy batch → global jax arrays split over ``data`` (multi-host aware)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items()}


def per_device_bytes(abstract_tree, shardings) -> int:
    """Bytes of ``abstract_tree`` (arrays or ShapeDtypeStructs) that one device holds under
    ``shardings`` (a matching tree of shardings): each leaf's shard shape × its item size."""
    total = 0
    for x, s in zip(jax.tree_util.tree_leaves(abstract_tree), jax.tree_util.tree_leaves(shardings)):
        shape = tuple(s.shard_shape(tuple(x.shape))) if x.shape else ()
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize
    return total


def describe_spec(spec: PartitionSpec) -> str:
    return "(" + ", ".join("None" if a is None else repr(a) for a in spec) + (",)" if len(spec) == 1 else ")")
