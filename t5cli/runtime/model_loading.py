"""Which model a checkpoint holds, and its parameters: used by train, eval, infer and export.

A checkpoint path is a MODEL_DIR (its latest step), one ``checkpoint_<N>`` directory, a
Hugging Face directory, or a T5X / Mesh-TensorFlow checkpoint (:func:`load_foreign`: the
model then comes from the tensor shapes and any gin file beside them). The model comes
from what the caller names, else from the run record beside the checkpoint
(``t5cli_run.json`` and ``config.gin``), else from an HF ``config.json``; sizes a record
lost are read back from the checkpoint's shapes.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np

from t5cli.errors import CheckpointError, ConfigError


@dataclasses.dataclass
class LoadedModel:
    """A model, its parameters and what is known of the run that made them."""

    model: Any
    params: Any
    step: int
    checkpoint_path: str
    model_dir: Optional[str]  # the training MODEL_DIR, when the checkpoint lies in one
    record: Optional[Dict[str, Any]]  # its t5cli_run.json

    @property
    def task(self) -> Optional[str]:
        return (self.record or {}).get("task")

    @property
    def train_feature_lengths(self) -> Optional[Dict[str, int]]:
        return ((self.record or {}).get("train") or {}).get("feature_lengths")


def run_dir_of(path) -> Optional[Path]:
    """The MODEL_DIR a checkpoint path belongs to (None for an HF directory)."""
    from t5cli.runtime import checkpoints

    p = Path(os.path.expanduser(str(path))).absolute()
    if checkpoints.is_checkpoint_dir(p):
        return p.parent
    if checkpoints.is_hf_dir(p):
        return p if (p / "t5cli_run.json").is_file() else None
    return p


_MACRO_LINE = re.compile(r"^([A-Z][A-Z0-9_]*) = (.+)$")  # gin writes macros like this
_MACRO_REF = re.compile(r"%([A-Z][A-Z0-9_]*)\b")


def recorded_model_overrides(model_dir) -> Optional[Dict[str, Any]]:
    """``train.model_overrides`` as written to ``MODEL_DIR/config.gin`` (None if absent),
    with gin macro references such as ``%ACTIVATION_DTYPE`` replaced by their values."""
    path = Path(model_dir) / "config.gin"
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    macros = dict(m.groups() for m in map(_MACRO_LINE.match, lines) if m)
    lines = [_MACRO_REF.sub(lambda r: macros.get(r.group(1), r.group(0)), line) for line in lines]
    for i, line in enumerate(lines):
        name, eq, value = line.partition("=")
        if not eq or name.strip() not in ("train.model_overrides", "MODEL_OVERRIDES"):
            continue
        text = value.strip().rstrip("\\")
        for more in [None] + lines[i + 1:i + 60]:  # gin wraps long values over lines
            if more is not None:
                text += " " + more.strip().rstrip("\\")
            try:
                found = ast.literal_eval(text.strip())
            except (ValueError, SyntaxError):
                continue
            return dict(found) if isinstance(found, Mapping) else None
    return None


_DTYPE_BINDING = re.compile(r"^(?:[\w.]+\.)?T5Config\.dtype = (.+)$")  # T5X-style gin runs


def recorded_activation_dtype(model_dir, record: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """The activation dtype a run in ``model_dir`` trained with, from its run record's
    ``model_config``, else ``config.gin``: the ``dtype`` of ``train.model_overrides`` or a
    ``T5Config.dtype`` binding (T5X gin files). None when neither records one."""
    dtype = ((record or {}).get("model_config") or {}).get("dtype")
    if dtype:
        return str(dtype)
    dtype = (recorded_model_overrides(model_dir) or {}).get("dtype")
    path = Path(model_dir) / "config.gin"
    if dtype or not path.is_file():
        return str(dtype) if dtype else None
    lines = path.read_text().splitlines()
    macros = dict(m.groups() for m in map(_MACRO_LINE.match, lines) if m)
    for line in lines:
        m = _DTYPE_BINDING.match(line.strip())
        if m:
            value = _MACRO_REF.sub(lambda r: macros.get(r.group(1), r.group(0)), m.group(1).strip())
            try:
                found = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                return None
            return str(found) if isinstance(found, str) else None
    return None


def resolve_model_config(runtime, *, model_name: Optional[str] = None, model_config=None,
                         model_overrides: Optional[Mapping[str, Any]] = None,
                         record: Optional[Dict[str, Any]] = None, run_dir=None):
    """The T5Config to build: explicit config > ``--model`` > the run record (+ overrides).

    Unless ``model_config`` is given or ``model_overrides`` names a ``dtype``, the model
    computes in the activation dtype the run recorded (:func:`recorded_activation_dtype`),
    so a bfloat16 run is evaluated in bfloat16."""
    from t5cli.models.configs import T5Config

    explicit = model_config is not None
    if model_config is None and model_name:
        model_config = runtime.registry.model(model_name)
        if model_overrides is None and run_dir is not None and (record or {}).get("model") == model_name:
            model_overrides = recorded_model_overrides(run_dir)  # same model as trained
    elif model_config is None and record and record.get("model_config"):
        model_config = T5Config.from_dict(record["model_config"])
    elif model_config is None and record and record.get("model"):
        model_config = runtime.registry.model(record["model"])  # unknown: "pass --user-dir X"
        if model_overrides is None and run_dir is not None:
            model_overrides = recorded_model_overrides(run_dir)
    if model_config is None:
        raise ConfigError("cannot tell which model the checkpoint holds (no t5cli_run.json beside "
                          "it): pass --model NAME (see `t5 models`)")
    config = model_config.with_overrides(model_overrides)
    if not explicit and run_dir is not None and "dtype" not in (model_overrides or {}):
        dtype = recorded_activation_dtype(run_dir, record)
        if dtype and dtype != config.dtype:
            config = config.with_overrides({"dtype": dtype})
    return config


def load_model(runtime, checkpoint_path=None, *, model_dir=None, model_name: Optional[str] = None,
               model_config=None, model_overrides: Optional[Mapping[str, Any]] = None,
               step: Optional[int] = None) -> LoadedModel:
    """Find the model a checkpoint holds and restore its parameters.

    ``checkpoint_path`` is a MODEL_DIR (latest step, or ``step``), one ``checkpoint_<N>``
    directory or a Hugging Face directory; without it ``model_dir`` is used. The model
    comes from ``model_config``/``model_name`` or else from the run record beside the
    checkpoint (``t5cli_run.json`` + ``config.gin``), or from an HF ``config.json``.
    Nothing is written.
    """
    from t5cli.runtime import checkpoints
    from t5cli.models.model import model_for
    from t5cli.runtime.run_record import add_hints

    from t5cli.runtime import checkpoint_formats

    path = checkpoint_path or model_dir
    if not path:
        raise ConfigError("no checkpoint: pass --checkpoint PATH (a MODEL_DIR, a checkpoint_<N> "
                          "directory, a Hugging Face directory, a T5X or a Mesh-TensorFlow "
                          "checkpoint) or --model-dir DIR")
    checkpoint_formats.check_local(path)
    path = Path(os.path.expanduser(str(path))).absolute()
    if not path.exists() and checkpoints.checkpoint_format(path) != "mtf":
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; check --checkpoint / --model-dir")
    if checkpoints.checkpoint_format(path, step) not in (None, "t5cli", "hf"):
        if model_config is None and model_name:
            model_config = runtime.registry.model(model_name)
        config, params, found_step = load_foreign(path, step=step, base=model_config,
                                                  overrides=model_overrides)
        import jax

        params = jax.tree_util.tree_map(jax.numpy.asarray, params)
        return LoadedModel(model_for(config), params, found_step, str(path), None, None)
    run_dir = run_dir_of(path)
    record = add_hints(runtime, run_dir) if run_dir is not None and run_dir.is_dir() else None
    if checkpoints.is_hf_dir(path) and model_config is None and not model_name and not record:
        from t5cli.models.hf import import_hf

        config, np_params = import_hf(str(path))
        config = config.with_overrides(model_overrides)
        import jax

        params = jax.tree_util.tree_map(lambda x: jax.numpy.asarray(x, np.float32), np_params)
        return LoadedModel(model_for(config), params, 0, str(path), None, None)
    config = resolve_model_config(runtime, model_name=model_name, model_config=model_config,
                                  model_overrides=model_overrides, record=record, run_dir=run_dir)
    if config.dtype != "float32" and model_config is None and "dtype" not in (model_overrides or {}):
        print(f"note: {config.name} computes in {config.dtype}, as the run was trained "
              f"(model_overrides {{'dtype': ...}} changes it)", file=sys.stderr, flush=True)
    model = model_for(config)  # one model object per config: compiled decoders are reused
    try:
        params, found_step = checkpoints.load_params(str(path), model=model, step=step)
    except CheckpointError as exc:
        # The run record names the model but lost its overrides: read the sizes from the
        # checkpoint itself (only when the user did not name the model).
        adapted = None
        if "does not match the model" in str(exc) and model_config is None and not model_name:
            adapted = config_from_checkpoint(config, path, step)
        if adapted is None or adapted == config:
            raise
        print(f"note: {config.name} with sizes read from the checkpoint "
              f"({_describe_change(config, adapted)})", file=sys.stderr, flush=True)
        model = model_for(adapted)
        params, found_step = checkpoints.load_params(str(path), model=model, step=step)
    owner = str(run_dir) if run_dir is not None and not checkpoints.is_hf_dir(path) else None
    return LoadedModel(model, params, int(found_step), str(path), owner, record)


def load_foreign(path, *, step: Optional[int] = None, base=None,
                 overrides: Optional[Mapping[str, Any]] = None):
    """``(T5Config, params as NumPy float32, step)`` of a T5X or Mesh-TensorFlow checkpoint.

    The config comes from the tensor shapes, a ``config.gin``/``operative_config.gin``
    beside the checkpoint, and ``base`` (``--model``) / ``overrides`` for the rest; one
    line on stderr says what was inferred. Parameters are checked against that config.
    """
    from t5cli.models.model import model_for
    from t5cli.runtime import checkpoint_formats, checkpoints
    from t5cli.runtime.checkpoint_formats.infer_config import infer_config

    foreign = checkpoint_formats.read(str(path), step)
    if foreign is None:
        raise CheckpointError(f"{path} is not a T5X or Mesh-TensorFlow checkpoint")
    for note in foreign.notes:
        print(f"note: {note}", file=sys.stderr, flush=True)
    shapes = {k: tuple(v.shape) for k, v in checkpoint_formats.flatten(foreign.params).items()}
    config, line = infer_config(shapes, source=foreign.description, config_dir=foreign.config_dir,
                                base=base, overrides=overrides)
    print(f"note: {line}", file=sys.stderr, flush=True)
    import jax

    expected = jax.eval_shape(lambda: model_for(config).init_params(jax.random.PRNGKey(0)))
    checkpoints.check_param_shapes(foreign.params, expected, foreign.description)
    return config, foreign.params, int(foreign.step)


def config_from_checkpoint(config, path, step: Optional[int] = None):
    """``config`` with the sizes (widths, heads, layers, vocabulary) a checkpoint of this
    tool was saved with, read from its parameter shapes; None if they cannot be read."""
    from t5cli.runtime import checkpoints

    path = Path(path)
    if not checkpoints.is_checkpoint_dir(path):
        found = step if step is not None else checkpoints.latest_step(path)
        if found is None:
            return None
        path = path / f"{checkpoints.STEP_PREFIX}_{found}"
    try:
        shapes = checkpoints._flat_shapes(checkpoints._tree_metadata(path / checkpoints.PARAMS))
    except Exception:  # not readable: let the original error speak
        return None

    from t5cli.runtime.checkpoint_formats.infer_config import config_from_shapes

    return config_from_shapes(config, shapes)


def _describe_change(old, new) -> str:
    changed = [f"{f.name}={getattr(new, f.name)}" for f in dataclasses.fields(new)
               if getattr(old, f.name) != getattr(new, f.name)]
    return ", ".join(changed) or "unchanged"
