"""Checkpoints of the encoder-only heads: the encoder a head run starts from, and the head
model a finished run holds.

A head run starts from the encoder of any T5 checkpoint (``--init-checkpoint``): a t5cli
MODEL_DIR or ``checkpoint_<N>`` (encoder-decoder or head), a Hugging Face directory (a
full T5 or a ``T5EncoderModel``), or a T5X / Mesh-TensorFlow checkpoint; its head starts
from random weights and the run counts its steps from 0. The run record
(``t5cli_run.json``) of a head run has a ``head`` entry (:meth:`HeadModel.describe`), from
which ``t5 eval``, ``t5 infer`` and ``t5 export`` rebuild the model.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Dict, Optional

import jax
import numpy as np

from t5cli.errors import CheckpointError, ConfigError
from t5cli.runtime.model_loading import LoadedModel


@dataclasses.dataclass
class EncoderInit:
    """The config and the (NumPy) ``token_embedder`` / ``encoder`` params of a checkpoint."""

    config: Any
    params: Dict[str, Any]
    source: str


def head_record(path) -> Optional[Dict[str, Any]]:
    """The ``head`` entry of the run record beside a checkpoint path (None: not a head run)."""
    from t5cli.runtime import checkpoints
    from t5cli.runtime.model_loading import run_dir_of
    from t5cli.runtime.run_record import read_run_record

    if not path:
        return None
    p = Path(os.path.expanduser(str(path))).absolute()
    if checkpoints.is_hf_dir(p):
        from t5cli.runtime.head_export import read_head_config

        return read_head_config(p)
    run_dir = run_dir_of(p)
    record = read_run_record(run_dir) if run_dir is not None and run_dir.is_dir() else None
    return ((record or {}).get("train") or {}).get("head")


def load_encoder(runtime, path) -> EncoderInit:
    """The encoder of the checkpoint at ``path`` (see the module docstring)."""
    from t5cli.models.heads import encoder_params
    from t5cli.runtime import checkpoints

    p = Path(os.path.expanduser(str(path))).absolute()
    record = head_record(p)
    if record is not None:  # a head run's checkpoint: its encoder, under its own head
        loaded = load_head(runtime, p)
        return EncoderInit(loaded.model.config, _numpy(encoder_params(loaded.params)), str(p))
    if checkpoints.is_hf_dir(p) and not (p / "t5cli_run.json").is_file():
        from t5cli.models.hf import import_hf

        config, params = import_hf(str(p), encoder_only=True)
        return EncoderInit(config, params, str(p))
    from t5cli.runtime.model_loading import load_model

    loaded = load_model(runtime, str(p))
    return EncoderInit(loaded.model.config, _numpy(encoder_params(loaded.params)), str(p))


def _numpy(tree):
    return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), tree)


def check_encoder(init: EncoderInit, config) -> None:
    """CheckpointError, one line, when ``init``'s encoder does not fit ``config``."""
    from t5cli.models.heads import encoder_params
    from t5cli.models.model import EncoderDecoderModel

    expected = encoder_params(EncoderDecoderModel(config).param_shapes())
    flat_e = {jax.tree_util.keystr(k): tuple(v.shape) for k, v in
              jax.tree_util.tree_flatten_with_path(expected)[0]}
    flat_f = {jax.tree_util.keystr(k): tuple(np.shape(v)) for k, v in
              jax.tree_util.tree_flatten_with_path(init.params)[0]}
    for name, shape in flat_e.items():
        if flat_f.get(name) != shape:
            found = flat_f.get(name, "missing")
            raise CheckpointError(
                f"the encoder of {init.source} does not match model {config.name!r}: {name} is {found}, "
                f"the model needs {shape}; drop --model to use the checkpoint's own sizes, or name the "
                f"model it was trained as")


def with_encoder(params, init: EncoderInit, shardings):
    """``params`` (a head's, on the mesh) with the embedder and encoder of ``init``."""
    out = dict(params)
    for key in ("token_embedder", "encoder"):
        out[key] = jax.tree_util.tree_map(lambda x, s: jax.device_put(np.asarray(x, np.float32), s),
                                          init.params[key], shardings[key])
    return out


def load_head(runtime, path, *, step: Optional[int] = None) -> LoadedModel:
    """The head model and parameters of a head run's checkpoint (a MODEL_DIR, one
    ``checkpoint_<N>``, or a directory ``t5 export`` wrote)."""
    from t5cli.models.head_models import from_record
    from t5cli.runtime import checkpoints
    from t5cli.runtime.model_loading import run_dir_of
    from t5cli.runtime.run_record import read_run_record

    del runtime
    p = Path(os.path.expanduser(str(path))).absolute()
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist; check --checkpoint")
    if checkpoints.is_hf_dir(p):
        from t5cli.runtime.head_export import load_exported_head

        model, params = load_exported_head(p)
        return LoadedModel(model, params, 0, str(p), None, None)
    run_dir = run_dir_of(p)
    record = read_run_record(run_dir) if run_dir is not None else None
    if not (record or {}).get("train", {}).get("head"):
        raise ConfigError(f"{p} is not a checkpoint of a head run (no 'head' in t5cli_run.json)")
    model = from_record(record["train"]["head"])
    params, found = checkpoints.load_params(str(p), model=model, step=step)
    return LoadedModel(model, params, int(found), str(p), str(run_dir), record)


def start_config(runtime, model_dir: str, *, model_name, model_config, initial_checkpoint_path):
    """``(model_config, EncoderInit or None)`` for a head run: a run that resumes keeps its
    recorded config; a fresh one with ``initial_checkpoint_path`` loads that encoder (and
    takes its config unless the caller names a model)."""
    from t5cli.runtime import checkpoints
    from t5cli.runtime.run_record import read_run_record

    if checkpoints.latest_step(model_dir) is not None:
        record = ((read_run_record(model_dir) or {}).get("train") or {}).get("head")
        if model_config is None and not model_name and record:
            from t5cli.models.configs import T5Config

            model_config = T5Config.from_dict(record["model_config"])
        return model_config, None
    if not initial_checkpoint_path:
        return model_config, None
    init = load_encoder(runtime, initial_checkpoint_path)
    if model_config is None and not model_name:
        model_config = init.config
    return model_config, init


__all__ = ["EncoderInit", "head_record", "load_encoder", "check_encoder", "with_encoder",
           "load_head", "start_config"]
