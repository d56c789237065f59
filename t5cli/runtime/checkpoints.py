"""Checkpoints of this tool (orbax), and loading parameters from them, from HF, or from
T5X and Mesh-TensorFlow checkpoints (:mod:`t5cli.runtime.checkpoint_formats`).

Layout of ``MODEL_DIR/checkpoint_<step>/`` (T5X's directory names, orbax's
``step_prefix='checkpoint'``):

- ``params/``      the parameter tree (float32), readable alone by :func:`load_params`;
- ``opt_state/``   the optimizer state's leaves, keyed ``000000``, ``000001``, … in the
                   order of ``jax.tree_util.tree_leaves`` (the structure comes from the
                   optimizer, so any optax state round-trips);
- ``train_meta/``  JSON: ``step``, ``initial_step`` (step of the initial checkpoint),
                   ``data`` (seed and batches consumed, so the data stream resumes),
                   ``model``, ``opt_state_paths``.

Saving is synchronous: when ``save`` returns the step is on disk. Nothing in MODEL_DIR is
ever removed except older ``checkpoint_<N>`` directories when ``keep`` is set.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import numpy as np

from t5cli.errors import CheckpointError, first_line

PARAMS, OPT_STATE, META = "params", "opt_state", "train_meta"
STEP_PREFIX = "checkpoint"
_STEP_DIR = re.compile(rf"^{STEP_PREFIX}_(\d+)$")


# --- finding checkpoints ---------------------------------------------------------------------

def _epath(path):
    """An epath for ``path``; local paths made absolute, as orbax requires."""
    from etils import epath

    text = os.path.expanduser(str(path))
    if "://" not in text:
        text = os.path.abspath(text)
    return epath.Path(text)


def all_steps(model_dir) -> List[int]:
    """Steps of the finished ``checkpoint_<N>`` directories in ``model_dir`` (sorted)."""
    d = _epath(model_dir)
    if not d.is_dir():
        return []
    steps = []
    for child in d.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and child.is_dir() and (child / PARAMS).is_dir():
            steps.append(int(m.group(1)))
    return sorted(steps)


def latest_step(model_dir) -> Optional[int]:
    """The newest checkpoint step in ``model_dir``, or None."""
    steps = all_steps(model_dir)
    return steps[-1] if steps else None


def is_checkpoint_dir(path) -> bool:
    """A single ``checkpoint_<N>`` directory of this tool."""
    p = _epath(path)
    return p.is_dir() and (p / PARAMS).is_dir()


def is_hf_dir(path) -> bool:
    """A Hugging Face model directory (``config.json`` + weights)."""
    p = _epath(path)
    return p.is_dir() and (p / "config.json").exists() and any(
        (p / name).exists() for name in ("model.safetensors", "pytorch_model.bin",
                                         "model.safetensors.index.json", "pytorch_model.bin.index.json"))


# --- shape checks ------------------------------------------------------------------------------

def _flat_shapes(tree) -> Dict[str, Tuple[int, ...]]:
    from t5cli.runtime.optim import path_str

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {path_str(p): tuple(getattr(x, "shape", ())) for p, x in leaves}


def check_param_shapes(found, expected, source: str) -> None:
    """CheckpointError naming the first parameter missing, unexpected or of another shape."""
    have, want = _flat_shapes(found), _flat_shapes(expected)
    for name in sorted(want):
        if name not in have:
            raise CheckpointError(
                f"{source} does not match the model: it has no parameter {name!r} "
                f"(it has {len(have)} parameters, the model {len(want)}); check --model"
            )
        if tuple(have[name]) != tuple(want[name]):
            raise CheckpointError(
                f"{source} does not match the model: parameter {name!r} has shape "
                f"{tuple(have[name])} in the checkpoint but {tuple(want[name])} in the model; check --model"
            )
    extra = sorted(set(have) - set(want))
    if extra:
        raise CheckpointError(
            f"{source} does not match the model: it has parameter {extra[0]!r}, which the model "
            f"does not (and {len(extra) - 1} more); check --model"
        )


def _abstract(tree, shardings=None):
    """ShapeDtypeStructs (with shardings) to restore into."""
    def one(x, s=None):
        if s is None:
            s = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)

    if shardings is None:
        return jax.tree_util.tree_map(one, tree)
    return jax.tree_util.tree_map(one, tree, shardings)


def _tree_metadata(item_dir) -> Any:
    import orbax.checkpoint as ocp

    from t5cli.quiet import orbax_errors_as_exceptions

    _verify_checksums(item_dir)
    try:
        with orbax_errors_as_exceptions():
            meta = ocp.StandardCheckpointHandler().metadata(item_dir)
    except Exception as exc:  # unreadable or not an orbax tree
        raise _unreadable("cannot read checkpoint", item_dir, exc) from None
    tree = getattr(meta, "item_metadata", meta)
    return getattr(tree, "tree", tree)


def _restore_tree(item_dir, target) -> Any:
    import orbax.checkpoint as ocp

    from t5cli.quiet import orbax_errors_as_exceptions

    try:
        with orbax_errors_as_exceptions():
            return ocp.StandardCheckpointHandler().restore(item_dir, args=ocp.args.StandardRestore(target))
    except Exception as exc:
        raise _unreadable("cannot restore", item_dir, exc) from None


def _unreadable(what: str, item_dir, exc: BaseException) -> CheckpointError:
    step_dir = _epath(item_dir).parent
    cause = exc if isinstance(exc, str) else _short_cause(exc)
    return CheckpointError(
        f"{what} {item_dir}: {cause}; the checkpoint is damaged "
        f"or incomplete: point at an earlier checkpoint_<N>, or move {step_dir.name} out of "
        f"{step_dir.parent} to resume from the one before it")


def _verify_checksums(item_dir) -> None:
    """CheckpointError naming the first file of ``item_dir`` that differs from the checksums
    recorded when its checkpoint was saved (see :mod:`t5cli.runtime.checkpoint_integrity`)."""
    from t5cli.runtime.checkpoint_integrity import find_damage

    damage = find_damage(item_dir)
    if damage is not None:
        raise _unreadable("cannot restore", item_dir, damage)


def _short_cause(exc: BaseException) -> str:
    """The cause of an orbax/TensorStore error in one short line: the file it could not read
    when it names one, never its JSON spec (at most ~200 characters)."""
    chain, seen = [], set()
    e = exc
    while e is not None and id(e) not in seen:  # orbax wraps TensorStore's error
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    tensorstore = None
    for e in chain:
        text = re.sub(r"\s*\[(?:tensorstore_spec|source locations)=.*$", "", first_line(e))
        code = re.match(r"([A-Z][A-Z_]+): ", text)
        files = re.findall(r'local file "([^"]+)"', text)
        if code and files and not files[-1].endswith("/"):
            reason = {"NOT_FOUND": "is missing", "DATA_LOSS": "is corrupt"}.get(
                code.group(1), f"cannot be read ({code.group(1)})")
            return f"file {files[-1]} {reason}"
        if code and tensorstore is None:
            tensorstore = text
    if tensorstore is not None:  # e.g. 'FAILED_PRECONDITION: Error reading "x/0.0" in OCDBT …'
        text = re.sub(r" in OCDBT database at local file \"[^\"]+\"", "", tensorstore).split(";")[0]
    else:
        text = re.sub(r"\s*\[(?:tensorstore_spec|source locations)=.*$", "", first_line(exc))
        text = re.sub(r"\s*See full TensorStore details:.*$", "", text)
        text = f"{type(exc).__name__}: {re.sub(r'{.*}', '{…}', text)}"
    return text if len(text) <= 200 else text[:199] + "…"


# --- parameters only (init / eval / infer / export) ------------------------------------------------

def _abstract_params(model):
    return jax.eval_shape(lambda: model.init_params(jax.random.PRNGKey(0)))


def load_params(model_dir_or_path, *, model, step: Optional[int] = None, shardings=None):
    """Parameters for ``model`` from a checkpoint; returns ``(params, step)``.

    ``model_dir_or_path`` may be a MODEL_DIR (its latest checkpoint, or ``step``), one
    ``checkpoint_<N>`` directory of this tool, a Hugging Face T5 directory (step 0), or a
    foreign checkpoint (:func:`checkpoint_format` names them: T5X legacy or orbax, at its
    step; Mesh-TensorFlow, at its ``global_step``). Parameters are checked against
    ``model``'s shapes first; a missing path, an empty MODEL_DIR or a mismatch raises
    CheckpointError. ``shardings`` (a tree of NamedShardings like the params) places them
    on a mesh; default: first local device.
    """
    if model_dir_or_path is None or str(model_dir_or_path) == "":
        raise CheckpointError("no checkpoint path given; pass --init-checkpoint or --checkpoint")
    from t5cli.runtime import checkpoint_formats

    checkpoint_formats.check_local(model_dir_or_path)
    path = _epath(model_dir_or_path)
    if not path.exists() and checkpoint_format(path) != "mtf":  # MTF: a model.ckpt-N prefix
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; check the path")
    expected = _abstract_params(model)
    if is_hf_dir(path):
        from t5cli.models.hf import import_hf

        _, params = import_hf(str(path))
        check_param_shapes(params, expected, f"Hugging Face checkpoint {path}")
        params = jax.tree_util.tree_map(lambda x, e: np.asarray(x, dtype=e.dtype), params, expected)
        if shardings is not None:
            params = jax.tree_util.tree_map(jax.device_put, params, shardings)
        return params, 0
    if checkpoint_format(path) not in ("t5cli", "hf"):
        foreign = checkpoint_formats.read(str(path), step)
        if foreign is not None:
            return foreign_params(foreign, expected, shardings), foreign.step
    step_dir, found_step = resolve_step_dir(path, step)
    item = step_dir / PARAMS
    stored = _tree_metadata(item)
    check_param_shapes(stored, expected, f"checkpoint {step_dir}")
    params = _restore_tree(item, _abstract(expected, shardings))
    return params, found_step


def resolve_step_dir(model_dir_or_path, step: Optional[int] = None):
    """``(checkpoint_<N> directory, N)`` for a checkpoint of this tool: the directory itself,
    or a MODEL_DIR's latest (or ``step``); CheckpointError when there is none."""
    path = _epath(model_dir_or_path)
    if is_checkpoint_dir(path):
        m = _STEP_DIR.match(path.name)
        found_step = int(m.group(1)) if m else 0
        if step is not None and step != found_step:
            raise CheckpointError(f"{path} holds step {found_step}, not step {step}")
        step_dir = path
    elif path.is_dir():
        steps = all_steps(path)
        if not steps:
            raise CheckpointError(
                f"{path} holds no checkpoint (no {STEP_PREFIX}_<N>/ directory and no Hugging Face "
                f"config.json); pass a MODEL_DIR with checkpoints, a {STEP_PREFIX}_<N> directory or an HF directory"
            )
        found_step = steps[-1] if step is None else step
        if found_step not in steps:
            raise CheckpointError(f"{path} has no checkpoint for step {step} (it has: {steps})")
        step_dir = path / f"{STEP_PREFIX}_{found_step}"
    else:
        raise CheckpointError(f"checkpoint {str(path)!r} is a file, not a checkpoint directory")
    return step_dir, found_step


def checkpoint_format(path, step: Optional[int] = None) -> Optional[str]:
    """What ``path`` holds: ``'t5cli'`` (a MODEL_DIR or ``checkpoint_<N>`` of this tool),
    ``'hf'``, ``'t5x'`` (legacy msgpack + tensorstore), ``'t5x-orbax'``, ``'mtf'``, or None."""
    from t5cli.runtime import checkpoint_formats

    if checkpoint_formats.remote_message(path):
        return None
    p = _epath(path)
    if is_checkpoint_dir(p) or all_steps(p):
        return "t5cli"
    if is_hf_dir(p):
        return "hf"
    found = checkpoint_formats.detect(str(p), step)
    return found[0] if found else None


def foreign_params(foreign, expected, shardings):
    """A foreign checkpoint's parameters, checked and cast like the model's, notes said."""
    import sys

    for note in foreign.notes:
        print(f"note: {note}", file=sys.stderr, flush=True)
    check_param_shapes(foreign.params, expected, foreign.description)
    params = jax.tree_util.tree_map(lambda e, x: np.asarray(x, dtype=e.dtype), expected,
                                    _like(expected, foreign.params))
    if shardings is not None:
        params = jax.tree_util.tree_map(jax.device_put, params, shardings)
    return params


def _like(expected, tree):
    """``tree`` (nested dicts) in the container types of ``expected``."""
    if isinstance(expected, Mapping):
        return type(expected)({k: _like(v, tree[k]) for k, v in expected.items()})
    return tree


# --- full train state (resume) -------------------------------------------------------------------

def restore_opt_state(step_dir, abstract_opt_state, opt_shardings, meta: Mapping[str, Any], source: str):
    """The optimizer state saved in ``step_dir`` (a ``checkpoint_<N>`` of this tool), checked
    leaf by leaf against ``abstract_opt_state``; ``meta`` is that step's ``train_meta``."""
    step_dir = _epath(step_dir)
    leaves, treedef = jax.tree_util.tree_flatten(abstract_opt_state)
    stored_paths = meta.get("opt_state_paths", [])
    want_paths = list(_flat_shapes(abstract_opt_state))
    if len(stored_paths) != len(want_paths):
        raise CheckpointError(
            f"{source} has an optimizer state of {len(stored_paths)} arrays but the configured "
            f"optimizer needs {len(want_paths)}: the optimizer (or frozen parameters) changed. "
            f"Use a new --model-dir, or restore the original optimizer settings"
        )
    if not leaves:
        return jax.tree_util.tree_unflatten(treedef, [])
    shard_leaves = (jax.tree_util.tree_leaves(opt_shardings) if opt_shardings is not None
                    else [None] * len(leaves))
    target = {f"{i:06d}": _abstract(x, s) for i, (x, s) in enumerate(zip(leaves, shard_leaves))}
    stored = _tree_metadata(step_dir / OPT_STATE)
    for i, (key, t) in enumerate(target.items()):
        have = tuple(getattr(stored.get(key), "shape", ()))
        if have != tuple(t.shape):
            raise CheckpointError(
                f"{source}: optimizer state {want_paths[i]!r} has shape {have} but the "
                f"configured optimizer needs {tuple(t.shape)}; the optimizer settings changed"
            )
    flat = _restore_tree(step_dir / OPT_STATE, target)
    return jax.tree_util.tree_unflatten(treedef, [flat[k] for k in target])


def _on_the_mesh(*trees):
    """In a multi-process job, every single-device array of ``trees`` (a scalar, say)
    replicated on the mesh of their sharded arrays: orbax refuses host-local arrays in a
    multi-process save. One process alone: the trees as they are."""
    if jax.process_count() == 1:
        return trees
    from jax.sharding import NamedSharding, PartitionSpec

    leaves = [x for t in trees for x in jax.tree_util.tree_leaves(t)]
    mesh = next((x.sharding.mesh for x in leaves if isinstance(getattr(x, "sharding", None), NamedSharding)), None)
    if mesh is None:
        return trees
    replicated = NamedSharding(mesh, PartitionSpec())

    def one(x):
        if isinstance(x, jax.Array) and x.is_fully_addressable and len(x.sharding.device_set) == 1:
            return jax.make_array_from_process_local_data(replicated, np.asarray(x))
        return x

    return tuple(jax.tree_util.tree_map(one, t) for t in trees)


class TrainCheckpointer:
    """Saves and restores params, optimizer state and train metadata in MODEL_DIR."""

    def __init__(self, model_dir, *, keep: Optional[int] = None):
        import orbax.checkpoint as ocp

        if keep is not None and keep < 1:
            raise CheckpointError(f"keep={keep}: keep at least 1 checkpoint, or None for all")
        self.model_dir = _epath(model_dir)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, step_prefix=STEP_PREFIX, create=True,
            enable_async_checkpointing=False,
        )
        self._manager = ocp.CheckpointManager(str(self.model_dir), options=options,
                                              item_names=(PARAMS, OPT_STATE, META))

    def latest_step(self) -> Optional[int]:
        return latest_step(self.model_dir)

    def save(self, step: int, params, opt_state, meta: Mapping[str, Any]) -> None:
        """Write ``checkpoint_<step>`` (a no-op if it exists already)."""
        import orbax.checkpoint as ocp

        if step in all_steps(self.model_dir):
            return
        params, opt_state = _on_the_mesh(params, opt_state)
        leaves, _ = jax.tree_util.tree_flatten(opt_state)
        opt_flat = {f"{i:06d}": leaf for i, leaf in enumerate(leaves)}
        paths = [p for p in _flat_shapes(opt_state)]
        items = {
            PARAMS: ocp.args.StandardSave(params),
            META: ocp.args.JsonSave({**dict(meta), "step": int(step), "opt_state_paths": paths}),
        }
        if opt_flat:
            items[OPT_STATE] = ocp.args.StandardSave(opt_flat)
        step_dir = self.model_dir / f"{STEP_PREFIX}_{step}"
        from t5cli.quiet import orbax_errors_as_exceptions

        try:
            with orbax_errors_as_exceptions():
                self._manager.save(int(step), args=ocp.args.Composite(**items), force=True)
                self._manager.wait_until_finished()
            if jax.process_index() == 0:
                from t5cli.runtime.checkpoint_integrity import write_manifest

                write_manifest(str(step_dir))
        except Exception as exc:
            from t5cli.errors import storage_error

            done = [s for s in all_steps(self.model_dir) if s != step]
            kept = f"checkpoint_{done[-1]} and those before it are kept" if done else "no checkpoint was written"
            err = storage_error(exc, f"cannot write {step_dir}", path=str(self.model_dir),
                                hint=f"{kept}; free space and run the same command to resume")
            if err is None:
                raise
            raise err from exc

    def restore(self, step: int, abstract_params, abstract_opt_state, *, param_shardings=None,
                opt_shardings=None) -> Tuple[Any, Any, Dict[str, Any]]:
        """``(params, opt_state, meta)`` of ``step``, checked against the abstract trees."""
        step_dir = self.model_dir / f"{STEP_PREFIX}_{step}"
        source = f"checkpoint {step_dir} (resuming from MODEL_DIR)"
        check_param_shapes(_tree_metadata(step_dir / PARAMS), abstract_params, source)
        params = _restore_tree(step_dir / PARAMS, _abstract(abstract_params, param_shardings))
        meta = self.read_meta(step)
        opt_state = restore_opt_state(step_dir, abstract_opt_state, opt_shardings, meta, source)
        return params, opt_state, meta

    @staticmethod
    def read_step_meta(step_dir) -> Dict[str, Any]:
        """``train_meta`` of a ``checkpoint_<N>`` directory, read as JSON."""
        import json

        return json.loads((_epath(step_dir) / META / "metadata").read_text())

    def read_meta(self, step: int) -> Dict[str, Any]:
        try:
            return self.read_step_meta(self.model_dir / f"{STEP_PREFIX}_{step}")
        except FileNotFoundError:
            import orbax.checkpoint as ocp

            out = self._manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))
            return dict(out[META])

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
