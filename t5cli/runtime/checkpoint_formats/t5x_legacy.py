"""T5X's own (pre-orbax) checkpoint format.

``checkpoint_<N>/checkpoint`` is a msgpack (flax.serialization) of
``{'version': 3, 'optimizer': {'target': params, 'state': {'step', 'param_states'}}}``.
Small leaves are stored inline as arrays; large ones as a tensorstore spec (a dict with
``driver``/``kvstore``/``metadata``) whose path, relative to the checkpoint directory, names
a zarr folder such as ``target.encoder.layers_0.mlp.wi_0.kernel``. Checkpoints written
to GCS carry a ``gcs`` kvstore (bucket ``t5x-dummy-bucket``) or a ``gfile`` driver: both are
read from the local copy of that folder.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from t5cli.errors import CheckpointError, first_line
from t5cli.runtime.checkpoint_formats import T5X_LEGACY, Foreign, to_float32, unflatten


def is_ts_spec(value) -> bool:
    return isinstance(value, dict) and {"driver", "kvstore"} <= set(value) and (
        "metadata" in value or "path" in value)


def local_spec(spec: Dict[str, Any], ckpt_dir: Path) -> Dict[str, Any]:
    """The spec with its (relative) path resolved against ``ckpt_dir`` on local disk."""
    spec = _lists(copy.deepcopy(spec))
    kvstore = spec.get("kvstore") or {}
    driver = kvstore.get("driver") if isinstance(kvstore, dict) else None
    if driver not in ("file", "gfile", "gcs"):
        raise CheckpointError(f"{ckpt_dir}: unsupported tensorstore kvstore driver {driver!r}")
    rel = kvstore.get("path") or spec.pop("path", None)  # tensorstore < 0.1.14 kept it on top
    spec.pop("path", None)
    if not rel:
        raise CheckpointError(f"{ckpt_dir}: a tensorstore spec names no path: {spec}")
    folder = rel if os.path.isabs(rel) and Path(rel).exists() else str(ckpt_dir / rel)
    spec["kvstore"] = {"driver": "file", "path": folder}
    meta = dict(spec.get("metadata") or {})
    for key in ("chunks", "compressor"):  # read what is on disk, whatever it was written with
        meta.pop(key, None)
    spec["metadata"] = meta
    if spec.get("dtype") == "uint16" or meta.get("dtype") == "<u2":
        spec.pop("dtype", None)  # read the raw bits; to_float32 makes them bfloat16
    return spec


def _lists(node):
    """flax's state dicts turn lists into ``{'0': …, '1': …}``: turn them back."""
    if isinstance(node, dict):
        if node and all(isinstance(k, str) and k.isdigit() for k in node):
            return [_lists(node[str(i)]) for i in range(len(node))]
        return {k: _lists(v) for k, v in node.items()}
    return node


def read_ts(spec: Dict[str, Any], ckpt_dir: Path, name: str) -> np.ndarray:
    """One array from a tensorstore spec; CheckpointError naming the folder if unreadable."""
    import tensorstore as ts

    spec = local_spec(spec, ckpt_dir)
    folder = spec["kvstore"]["path"]
    if not os.path.isdir(folder):
        raise CheckpointError(f"{folder}: zarr folder of {name} is missing; the checkpoint is "
                              f"incomplete (copy the whole checkpoint_<N> directory)")
    try:
        store = ts.open(spec, open=True, read=True).result()
        arr = store.read().result()
    except Exception as exc:  # tensorstore raises ValueError for bad metadata or chunks
        cause = re.sub(r"\s*\[(?:tensorstore_spec|source locations)=.*$", "", first_line(exc))
        raise CheckpointError(f"{folder}: cannot read {name}: {cause}; the zarr "
                              f"folder is damaged, copy it again") from None
    shape = tuple((spec.get("metadata") or {}).get("shape", arr.shape))
    if tuple(arr.shape) != shape:
        raise CheckpointError(f"{folder}: {name} has shape {tuple(arr.shape)} on disk, "
                              f"{shape} in the checkpoint file")
    return np.asarray(arr)


def load_contents(path: Path) -> Dict[str, Any]:
    from flax import serialization

    try:
        data = path.read_bytes()
        contents = serialization.msgpack_restore(data)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable T5X checkpoint file ({first_line(exc)})") from None
    if not isinstance(contents, dict):
        raise CheckpointError(f"{path}: not a T5X checkpoint (no 'optimizer' mapping)")
    return contents


def _materialise(tree: Dict[str, Any], ckpt_dir: Path, prefix: str, source: str,
                 cast: bool = True) -> Dict[str, Any]:
    out = {}
    for name, value in flatten_specs(tree, prefix).items():
        if is_ts_spec(value):
            value = read_ts(value, ckpt_dir, name)
        if value is None:
            continue
        out[name] = to_float32(value, name, source) if cast else np.asarray(value)
    return out


def flatten_specs(tree, prefix: str = "") -> Dict[str, Any]:
    """Like ``flatten`` but a tensorstore spec dict is one leaf."""
    out = {}
    for key, value in (tree or {}).items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict) and not is_ts_spec(value):
            out.update(flatten_specs(value, name))
        else:
            out[name] = value
    return out


def read(path: Path, *, with_slots: bool = False) -> Foreign:
    """Read ``checkpoint_<N>/checkpoint`` (and the zarr folders beside it)."""
    path = Path(path)
    contents = load_contents(path)
    ckpt_dir = path.parent
    source = f"T5X checkpoint {path}"
    notes = []
    if "optimizer" in contents:
        version = contents.get("version", 0)
        if isinstance(version, (int, np.integer)) and version < 2:
            notes.append(f"T5X checkpoint version {version} (older than 2): read as it is")
        optimizer = contents["optimizer"]
    else:  # a plain flax optimizer state dict (version 0)
        optimizer = contents
    if not isinstance(optimizer, dict) or "target" not in optimizer:
        raise CheckpointError(f"{path}: not a T5X checkpoint: no optimizer/target in it "
                              f"(top-level keys: {sorted(contents)})")
    for key in sorted(set(optimizer) - {"target", "state"}):
        notes.append(f"ignored optimizer/{key} of the T5X checkpoint (not parameters)")
    flat = _materialise(optimizer["target"], ckpt_dir, "", source)
    params = unflatten(flat)
    state = optimizer.get("state") or {}
    step = state.get("step", None)
    step = int(np.asarray(step)) if step is not None and not is_ts_spec(step) else _dir_step(ckpt_dir)
    slots = None
    if with_slots and state.get("param_states"):
        slots = _slots(state["param_states"], ckpt_dir, source, set(flat))
    return Foreign(T5X_LEGACY, str(path), params, step, slots, notes, config_dir=str(ckpt_dir))


def _slots(param_states, ckpt_dir: Path, source: str, param_names) -> Optional[Dict[str, Any]]:
    """``{param path: {slot: array}}``: Adafactor's v_row/v_col/v/m for each parameter."""
    flat = _materialise(param_states, ckpt_dir, "", source)
    out: Dict[str, Dict[str, Any]] = {}
    for name, value in flat.items():
        param, _, slot = name.rpartition("/")
        if param in param_names:
            out.setdefault(param, {})[slot] = value
    return out or None


def _dir_step(ckpt_dir: Path) -> int:
    name = ckpt_dir.name if ckpt_dir.name != "state" else ckpt_dir.parent.name
    tail = name.rpartition("_")[2]
    return int(tail) if tail.isdigit() else 0
