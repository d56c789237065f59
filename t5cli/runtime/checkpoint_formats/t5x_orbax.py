"""T5X's orbax checkpoints: ``checkpoint_<N>/state/`` is an orbax PyTree checkpoint of the
train state's state dict, ``{'target': params, 'state': {'step', 'param_states'}}``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from t5cli.errors import CheckpointError, first_line
from t5cli.runtime.checkpoint_formats import T5X_ORBAX, Foreign, flatten, to_float32, unflatten


def read(path: Path, *, with_slots: bool = False) -> Foreign:
    import jax
    import orbax.checkpoint as ocp
    from etils import epath

    path = Path(path)
    source = f"T5X orbax checkpoint {path}"
    handler = ocp.PyTreeCheckpointHandler()
    try:
        meta = handler.metadata(epath.Path(path))
        tree = getattr(meta, "tree", meta)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read the orbax metadata ({first_line(exc)}); "
                              f"the checkpoint is damaged or incomplete") from None
    if not isinstance(tree, dict) or "target" not in tree:
        raise CheckpointError(f"{path}: not a T5X orbax checkpoint (no 'target' in it; it has "
                              f"{sorted(tree) if isinstance(tree, dict) else type(tree).__name__})")
    args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    try:
        restored = handler.restore(epath.Path(path), args=ocp.args.PyTreeRestore(restore_args=args))
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot restore ({type(exc).__name__}: {first_line(exc)}); "
                              f"the checkpoint is damaged or incomplete") from None
    notes = [f"ignored {key!r} of the T5X orbax checkpoint (not parameters)"
             for key in sorted(set(restored) - {"target", "state"})]
    flat = {name: to_float32(v, name, source) for name, v in flatten(restored["target"]).items()
            if v is not None}
    state = restored.get("state") or {}
    step = state.get("step")
    if step is None:
        tail = (path.parent if path.name == "state" else path).name.rpartition("_")[2]
        step = int(tail) if tail.isdigit() else 0
    slots = None
    if with_slots and state.get("param_states"):
        slots = {}
        for name, value in flatten(state["param_states"]).items():
            param, _, slot = name.rpartition("/")
            if param in flat and value is not None:
                slots.setdefault(param, {})[slot] = to_float32(value, name, source)
        slots = slots or None
    config_dir = path.parent if path.name == "state" else path
    return Foreign(T5X_ORBAX, str(path), unflatten(flat), int(np.asarray(step)), slots, notes,
                   config_dir=str(config_dir))
