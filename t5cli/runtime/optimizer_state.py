"""Starting a fine-tune with the initial checkpoint's optimizer state, not only its parameters.

T5X restores the whole train state of ``INITIAL_CHECKPOINT_PATH`` (its Adafactor slots
included) unless told otherwise; ``t5 finetune --restore-optimizer-state`` (``train(...,
restore_optimizer_state=True)``) does the same:

- from a checkpoint of this tool, the saved optimizer state (the optimizer must be the one
  it was saved with);
- from a T5X checkpoint (legacy or orbax) or a Mesh-TensorFlow one, the Adafactor slots
  (``v_row``, ``v_col``, ``v``; MTF's ``_slot_vr``/``_slot_vc``/``_slot_v``) go into optax's
  ``FactoredState`` of t5cli's Adafactor, and its step count becomes the checkpoint's step,
  so the second-moment decay goes on where it stopped.

T5X and optax factor a 2-D parameter the same way (the row statistic is the mean over the
largest axis); a slot pair stored the other way round is recognised by its shapes and
swapped. As in T5X's MTF importer, MTF's ``vr``/``vc`` are taken as ``v_row``/``v_col``.
Parameters the checkpoint has no slots for start from zeros, and a line says how many.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Tuple

import jax
import numpy as np
import optax

from t5cli.errors import CheckpointError, ConfigError
from t5cli.runtime import checkpoints
from t5cli.runtime.optim import path_str


def load_params_and_state_source(path, *, model, shardings) -> Tuple[Any, int, Any]:
    """``(params, step, source)`` of an initial checkpoint whose optimizer state is wanted;
    ``source`` is passed to :func:`restore` (a foreign checkpoint's slots, or the
    ``checkpoint_<N>`` directory of this tool). A checkpoint without optimizer state (a
    Hugging Face directory) raises CheckpointError."""
    from t5cli.runtime import checkpoint_formats

    checkpoint_formats.check_local(path)
    kind = checkpoints.checkpoint_format(path)
    if kind == "hf":
        raise CheckpointError(f"{path} is a Hugging Face directory, which holds no optimizer state: "
                              f"drop --restore-optimizer-state to start the optimizer afresh")
    if kind == "t5cli":
        params, step = checkpoints.load_params(path, model=model, shardings=shardings)
        step_dir, _ = checkpoints.resolve_step_dir(path, step)
        return params, step, step_dir
    foreign = checkpoint_formats.read(str(path), with_slots=True)
    if foreign is None:  # not a checkpoint at all: load_params says why
        checkpoints.load_params(path, model=model, shardings=shardings)
        raise CheckpointError(f"{path}: not a checkpoint")
    expected = jax.eval_shape(lambda: model.init_params(jax.random.PRNGKey(0)))
    params = checkpoints.foreign_params(foreign, expected, shardings)
    if not foreign.slots:
        raise CheckpointError(f"{foreign.description} holds no optimizer state (no Adafactor slots): "
                              f"drop --restore-optimizer-state to start the optimizer afresh")
    return params, foreign.step, foreign


def restore(source, opt_state, *, abstract_opt, opt_shardings, step: int):
    """``opt_state`` (freshly initialised, on the mesh) with the state from ``source``."""
    if not hasattr(source, "slots"):  # a checkpoint_<N> directory of this tool
        meta = checkpoints.TrainCheckpointer.read_step_meta(source)
        return checkpoints.restore_opt_state(source, abstract_opt, opt_shardings, meta,
                                             f"initial checkpoint {source}")
    opt_state, filled, missing, ignored = _fill_adafactor(opt_state, source.slots, step, source.description)
    print(f"note: restored Adafactor state for {filled} parameter(s) at step {step} from "
          f"{source.description}" + (f"; {missing} had none and start from zeros" if missing else "")
          + (f"; ignored slots: {', '.join(sorted(ignored))}" if ignored else ""),
          file=sys.stderr, flush=True)
    return opt_state


def _fill_adafactor(opt_state, slots: Dict[str, Dict[str, Any]], step: int, description: str):
    """``opt_state`` with every optax ``FactoredState`` filled from ``slots``, and the
    counts of parameters filled and left at zero, and the slot names ignored."""
    counts = {"filled": 0, "missing": 0, "found": 0}
    ignored = set()

    def fill(node):
        if not isinstance(node, optax.FactoredState):
            return node
        counts["found"] += 1
        v_row = dict(_flat(node.v_row))
        v_col = dict(_flat(node.v_col))
        v = dict(_flat(node.v))
        new_row, new_col, new_v = {}, {}, {}
        for name in v:
            have = slots.get(name)
            if have is None:
                counts["missing"] += 1
                continue
            ignored.update(k for k in have if k not in ("v_row", "v_col", "v") and _nontrivial(have[k]))
            rows, cols, full = _slot_values(name, have, v_row[name], v_col[name], v[name], description)
            if full is not None:
                new_v[name] = full
            else:
                new_row[name], new_col[name] = rows, cols
            counts["filled"] += 1
        count = jax.device_put(np.asarray(step, node.count.dtype), node.count.sharding)
        return optax.FactoredState(count=count, v_row=_replace(node.v_row, new_row),
                                   v_col=_replace(node.v_col, new_col), v=_replace(node.v, new_v))

    out = jax.tree_util.tree_map(fill, opt_state, is_leaf=lambda x: isinstance(x, optax.FactoredState))
    if not counts["found"]:
        raise ConfigError("--restore-optimizer-state with a T5X or Mesh-TensorFlow checkpoint needs "
                          "Adafactor (their slots are Adafactor's); the configured optimizer is not")
    if not counts["filled"]:
        raise CheckpointError(f"{description}: none of its optimizer slots belongs to a parameter of "
                              f"this model")
    return out, counts["filled"], counts["missing"], ignored


def _nontrivial(x) -> bool:
    return np.asarray(x).size > 1


def _slot_values(name, have, row, col, full, description):
    """``(v_row, v_col, None)`` for a factored parameter, ``(None, None, v)`` otherwise."""
    factored = tuple(row.shape) != (1,)
    if not factored:
        value = have.get("v")
        if value is None or tuple(np.shape(value)) != tuple(full.shape):
            raise CheckpointError(f"{description}: optimizer slot {name}/v has shape "
                                  f"{None if value is None else tuple(np.shape(value))}, expected "
                                  f"{tuple(full.shape)} (an unfactored Adafactor second moment)")
        return None, None, value
    r, c = have.get("v_row"), have.get("v_col")
    if r is None or c is None:
        raise CheckpointError(f"{description}: parameter {name} has {sorted(have)} slots but "
                              f"Adafactor factors it here and needs v_row and v_col")
    want = (tuple(row.shape), tuple(col.shape))
    if (np.shape(r), np.shape(c)) == want:
        return r, c, None
    if (np.shape(c), np.shape(r)) == want:  # factored the other way round
        return c, r, None
    raise CheckpointError(f"{description}: optimizer slots of {name} have shapes v_row {np.shape(r)}, "
                          f"v_col {np.shape(c)}; this model's Adafactor needs {want[0]} and {want[1]}")


def _flat(tree):
    return [(path_str(p), x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _replace(tree, values: Dict[str, Any]):
    def one(p, x):
        value = values.get(path_str(p))
        if value is None:
            return x
        return jax.device_put(np.asarray(value, np.float32), x.sharding)

    return jax.tree_util.tree_map_with_path(one, tree)


__all__ = ["load_params_and_state_source", "restore"]
