"""Checkpoints written by other tools: T5X (legacy msgpack + tensorstore, and orbax) and
Mesh-TensorFlow (the original T5 code, mT5, ByT5).

Each reader returns a :class:`Foreign`: the parameters as nested NumPy float32 dicts in
t5cli's tree (T5X's names), the step, optionally the Adafactor slots in T5X's layout
(``{param path: {'v_row', 'v_col', 'v', 'm'}}``), and notes (one line each) about what
was mapped, ignored or assumed. :func:`detect` tells which kind a path holds without
reading arrays; :func:`read` dispatches. Nothing here imports TensorFlow unless an MTF
checkpoint is read.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from t5cli.errors import CheckpointError

T5X_LEGACY, T5X_ORBAX, MTF = "t5x", "t5x-orbax", "mtf"
KIND_NAMES = {T5X_LEGACY: "T5X checkpoint", T5X_ORBAX: "T5X orbax checkpoint",
              MTF: "Mesh-TensorFlow checkpoint"}
_STEP_DIR = re.compile(r"^checkpoint_(\d+)$")


@dataclasses.dataclass
class Foreign:
    """What a foreign checkpoint holds, in t5cli's terms."""

    kind: str
    path: str  # the file or directory actually read
    params: Dict[str, Any]
    step: int
    slots: Optional[Dict[str, Dict[str, Any]]] = None
    notes: List[str] = dataclasses.field(default_factory=list)
    config_dir: Optional[str] = None  # where a config.gin / operative_config.gin may lie

    @property
    def description(self) -> str:
        return f"{KIND_NAMES[self.kind]} {self.path}"


def remote_message(path) -> Optional[str]:
    """The one-line advice for a path t5cli cannot read (``gs://…``), else None."""
    text = str(path)
    if "://" in text and not text.startswith("file://"):
        local = "/tmp/" + text.rstrip("/").split("/")[-1]
        return (f"{text} is remote and t5cli reads checkpoints from local disk only: copy it "
                f"first, e.g. `gsutil -m cp -r {text.rstrip('/')} {local}`, then pass {local}")
    return None


def check_local(path) -> None:
    message = remote_message(path)
    if message:
        raise CheckpointError(message)


# --- detection ---------------------------------------------------------------------------------

def _is_tf_state_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(21) == b"model_checkpoint_path"
    except OSError:
        return False


def _legacy_file(step_dir: Path) -> Optional[Path]:
    for candidate in (step_dir / "state" / "checkpoint", step_dir / "checkpoint"):
        if candidate.is_file() and not _is_tf_state_file(candidate):
            return candidate
    return None


def _orbax_dir(step_dir: Path) -> Optional[Path]:
    for candidate in (step_dir / "state", step_dir):
        if candidate.is_dir() and (candidate / "_METADATA").is_file():
            return candidate
    return None


def _mtf_prefix(path: Path) -> Optional[str]:
    """The checkpoint prefix (``…/model.ckpt-N``) a path names, or None."""
    if path.is_file() and path.suffix == ".index":
        return str(path)[: -len(".index")]
    if not path.is_dir() and Path(str(path) + ".index").is_file():
        return str(path)
    if path.is_dir():
        state = path / "checkpoint"
        if state.is_file() and _is_tf_state_file(state):
            m = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state.read_text(), re.M)
            if m:
                prefix = m.group(1)
                prefix = prefix if os.path.isabs(prefix) else str(path / prefix)
                if Path(prefix + ".index").is_file():
                    return prefix
        indexes = sorted(path.glob("*.index"), key=lambda p: _trailing_int(p.stem))
        if indexes:
            return str(indexes[-1])[: -len(".index")]
    return None


def _trailing_int(text: str) -> int:
    m = re.search(r"(\d+)$", text)
    return int(m.group(1)) if m else -1


def _t5x_steps(model_dir: Path) -> Dict[int, Path]:
    found = {}
    if model_dir.is_dir():
        for child in model_dir.iterdir():
            m = _STEP_DIR.match(child.name)
            if m and child.is_dir() and (_legacy_file(child) or _orbax_dir(child)):
                found[int(m.group(1))] = child
    return found


def detect(path, step: Optional[int] = None):
    """``(kind, location)`` of the foreign checkpoint at ``path``, or None.

    ``path`` may be a T5X ``checkpoint_<N>`` directory, its ``checkpoint`` file, a T5X
    MODEL_DIR (latest step, or ``step``), an MTF directory or ``model.ckpt-N`` prefix.
    t5cli's own ``checkpoint_<N>/params`` checkpoints are not foreign (None).
    """
    p = Path(os.path.expanduser(str(path))).absolute()
    if p.is_file() and p.name == "checkpoint" and not _is_tf_state_file(p):
        return T5X_LEGACY, p
    if p.is_dir() and (p / "params").is_dir():
        return None  # t5cli's own
    if p.is_dir():
        if _STEP_DIR.match(p.name) or (p / "checkpoint").is_file() or (p / "state").is_dir():
            legacy = _legacy_file(p)
            if legacy is not None:
                return T5X_LEGACY, legacy
            orbax = _orbax_dir(p)
            if orbax is not None and not (orbax / "params").exists():
                return T5X_ORBAX, orbax
        steps = _t5x_steps(p)
        if steps:
            want = max(steps) if step is None else step
            if want not in steps:
                raise CheckpointError(f"{p} has no T5X checkpoint for step {step} "
                                      f"(it has: {sorted(steps)})")
            return detect(steps[want])
    prefix = _mtf_prefix(p)
    if prefix is not None:
        return MTF, Path(prefix)
    return None


def read(path, step: Optional[int] = None, *, with_slots: bool = False) -> Optional[Foreign]:
    """Read the foreign checkpoint at ``path`` (None if it is not one)."""
    check_local(path)
    found = detect(path, step)
    if found is None:
        return None
    kind, location = found
    if kind == T5X_LEGACY:
        from t5cli.runtime.checkpoint_formats import t5x_legacy as reader
    elif kind == T5X_ORBAX:
        from t5cli.runtime.checkpoint_formats import t5x_orbax as reader
    else:
        from t5cli.runtime.checkpoint_formats import mtf as reader
    out = reader.read(location, with_slots=with_slots)
    if step is not None and out.step != step and kind == MTF:
        raise CheckpointError(f"{out.description} holds step {out.step}, not step {step}")
    return out


def flatten(tree, prefix: str = "") -> Dict[str, Any]:
    """``{'a': {'b': x}}`` → ``{'a/b': x}``."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def unflatten(flat: Dict[str, Any]) -> Dict[str, Any]:
    """``{'a/b': x}`` → ``{'a': {'b': x}}``."""
    tree: Dict[str, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def to_float32(value, name: str, source: str):
    """A NumPy float32 copy of a stored array (bfloat16 and T5X's uint16-as-bfloat16 too)."""
    import numpy as np

    arr = np.asarray(value)
    if arr.dtype == np.uint16:  # T5X v2 kept bfloat16 bits in uint16
        import ml_dtypes

        arr = arr.view(ml_dtypes.bfloat16)
    try:
        return arr.astype(np.float32)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: {name} has dtype {arr.dtype}, not a float array "
                              f"({exc})") from None
