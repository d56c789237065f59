"""Export of the encoder-only heads as Hugging Face directories, and reading them back.

- ``token_classification``: a ``T5ForTokenClassification`` directory (``transformer.*``
  encoder weights, ``classifier.weight`` [labels, d_model], ``classifier.bias``;
  ``id2label`` from the label names). ``transformers`` loads it as it is and gives the
  same logits.
- ``sequence_classification`` and ``question_answering`` (encoder-only heads that
  ``transformers`` has no class for): a ``T5EncoderModel`` directory (``config.json`` +
  ``model.safetensors``) plus ``head.safetensors`` with the head in PyTorch ``nn.Linear``
  layout: ``classifier.weight`` [labels, d_model] and ``classifier.bias``, or
  ``qa_outputs.weight`` [2, d_model] and ``qa_outputs.bias`` (row 0 start, row 1 end).
  The sequence classifier takes the mean of the encoder's last hidden states over the
  non-pad tokens (id 0 is padding), then the linear layer; the QA head applies its layer
  to each hidden state.

Every such directory's ``config.json`` also has a ``t5cli_head`` entry: ``head``,
``num_labels``, ``label_names``, ``pooling`` and ``model_config`` (t5cli's config), from
which ``t5 eval`` / ``t5 infer`` / ``t5 export`` read the model back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from t5cli.errors import CheckpointError

HEAD_FILE = "head.safetensors"
HEAD_KEY = "t5cli_head"
POOLING = {"sequence_classification": "mean over non-pad tokens (input id != 0) of the last hidden state",
           "token_classification": "none (per token)", "question_answering": "none (per token)"}


def _head_layer(model) -> str:
    return "qa_outputs" if model.head == "question_answering" else "classifier"


def export_head(model, params, directory) -> Path:
    """Write ``model`` (a HeadModel) with ``params`` as described in the module docstring."""
    import jax
    from safetensors.numpy import save_file

    from t5cli.models.hf import CONFIG_FILE, WEIGHTS_FILE, config_to_hf, param_map, _get

    params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), jax.device_get(params))
    config = model.config
    prefix = "transformer." if model.head == "token_classification" else ""
    tensors = {prefix + "shared.weight": params["token_embedder"]["embedding"]}
    for path, (hf_name, transpose) in param_map(config, encoder_only=True).items():
        value = _get(params, path)
        tensors[prefix + hf_name] = value.T if transpose else value
    layer = _head_layer(model)
    head = {f"{layer}.weight": params[layer]["kernel"].T, f"{layer}.bias": params[layer]["bias"]}
    hf = config_to_hf(config)
    hf.update(is_encoder_decoder=False, use_cache=False, tie_word_embeddings=True)
    hf.pop("num_decoder_layers", None)
    hf.pop("decoder_start_token_id", None)
    names = model.label_names
    hf[HEAD_KEY] = {"head": model.head, "num_labels": model.num_labels, "label_names": names,
                    "pooling": POOLING[model.head], "head_weights": None if prefix else HEAD_FILE,
                    "model_config": config.to_dict()}
    if model.head == "token_classification":
        tensors.update(head)
        hf.update(architectures=["T5ForTokenClassification"], num_labels=model.num_labels,
                  id2label={str(i): n for i, n in enumerate(names)},
                  label2id={n: i for i, n in enumerate(names)}, classifier_dropout=0.0)
    else:
        hf.update(architectures=["T5EncoderModel"])
    out = Path(os.path.expanduser(str(directory)))
    out.mkdir(parents=True, exist_ok=True)
    contiguous = lambda d: {k: np.ascontiguousarray(v, np.float32) for k, v in d.items()}  # noqa: E731
    save_file(contiguous(tensors), str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    if not prefix:
        save_file(contiguous(head), str(out / HEAD_FILE), metadata={"format": "pt"})
    (out / CONFIG_FILE).write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    return out


def read_head_config(directory) -> Optional[Dict[str, Any]]:
    """The ``t5cli_head`` entry of an exported directory's ``config.json`` (None if absent)."""
    path = Path(directory) / "config.json"
    try:
        return json.loads(path.read_text()).get(HEAD_KEY)
    except (OSError, ValueError):
        return None


def load_exported_head(directory) -> Tuple[Any, Dict[str, Any]]:
    """``(HeadModel, params)`` of a directory :func:`export_head` wrote."""
    from safetensors.numpy import load_file

    from t5cli.models.head_models import from_record
    from t5cli.models.hf import WEIGHTS_FILE, param_map, _set

    directory = Path(directory)
    entry = read_head_config(directory)
    if entry is None:
        raise CheckpointError(f"{directory} has no {HEAD_KEY!r} entry in config.json: it is not a head "
                              f"that `t5 export` wrote")
    model = from_record(entry)
    try:
        tensors = load_file(str(directory / WEIGHTS_FILE))
        if (directory / HEAD_FILE).is_file():
            tensors.update(load_file(str(directory / HEAD_FILE)))
    except Exception as exc:
        raise CheckpointError(f"cannot read the weights in {directory}: {type(exc).__name__}: {exc}") from None
    tensors = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in tensors.items()}
    params: Dict[str, Any] = {}
    try:
        _set(params, ("token_embedder", "embedding"), tensors["shared.weight"])
        for path, (hf_name, transpose) in param_map(model.config, encoder_only=True).items():
            value = tensors[hf_name]
            _set(params, path, np.ascontiguousarray(value.T) if transpose else value)
        layer = _head_layer(model)
        params[layer] = {"kernel": np.ascontiguousarray(tensors[f"{layer}.weight"].T),
                         "bias": tensors[f"{layer}.bias"]}
    except KeyError as exc:
        raise CheckpointError(f"{directory}: tensor {exc.args[0]!r} is missing") from None
    from t5cli.runtime.checkpoints import check_param_shapes

    import jax

    check_param_shapes(params, model.param_shapes(), f"exported head {directory}")
    return model, jax.tree_util.tree_map(lambda x: jax.numpy.asarray(x, np.float32), params)


__all__ = ["export_head", "read_head_config", "load_exported_head", "HEAD_FILE", "HEAD_KEY"]


def export_checkpoint(runtime, *, output_dir, checkpoint_path=None, model_dir=None, step=None,
                      formats=("hf",)):
    """``t5 export`` of a head checkpoint (format ``hf`` only): an ``ExportResult``."""
    from t5cli.errors import ConfigError
    from t5cli.runtime.export import ExportResult
    from t5cli.runtime.head_checkpoints import load_head

    if list(formats or ("hf",)) != ["hf"]:
        raise ConfigError(f"a head checkpoint exports as --format hf only (asked: {', '.join(formats)})")
    loaded = load_head(runtime, checkpoint_path or model_dir, step=step)
    path = export_head(loaded.model, loaded.params, output_dir)
    return ExportResult(step=loaded.step, paths={"hf": str(path)})
