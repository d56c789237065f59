"""``export()``: write a checkpoint in formats other programs load.

Formats (``formats=``; one format is written into OUTPUT_DIR itself, several each into
OUTPUT_DIR/<format>/):

- ``hf``: ``config.json`` + ``model.safetensors``, a Hugging Face T5 directory. For
  ``transformers.T5ForConditionalGeneration.from_pretrained(DIR)``, the HF hub, or
  ``t5 train --init-checkpoint DIR``.
- ``flax``: ``params.msgpack`` (``flax.serialization``) + ``config.json`` naming the
  t5cli model config; the same layout as ``t5 convert``. For JAX programs that build
  ``EncoderDecoderModel(T5Config.from_dict(...))`` themselves, without orbax or MODEL_DIR.
- ``jax``: ``decode.jax_exported`` (a ``jax.export`` serialisation of greedy decoding,
  StableHLO, for one batch size and input/output length) + ``params.msgpack`` +
  ``signature.json``. For serving without t5cli's Python code: any program with the
  same JAX can run it; :func:`load_exported` shows how (it needs only jax and flax).
- ``saved_model``: a TensorFlow SavedModel in ``OUTPUT_DIR/<step>/``, in T5X's
  ``export_lib`` style: the params as variables, the vocabulary inside the graph, and a
  ``serving_default`` signature from a batch of strings (any batch size) to the decoded
  strings and their scores. For TF Serving or any TensorFlow program, without JAX or
  t5cli; see :mod:`t5cli.runtime.saved_model`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from t5cli.errors import ConfigError

FORMATS = ("hf", "flax", "jax", "saved_model")
EXPORTED_FILE = "decode.jax_exported"
SIGNATURE_FILE = "signature.json"
PARAMS_FILE = "params.msgpack"


@dataclasses.dataclass
class ExportResult:
    """What ``export`` returns: the step exported and the directory of each format."""

    step: int
    paths: Dict[str, str]


def _plain(tree):
    """Nested plain dicts of float32 numpy arrays (the pytree shape the export expects)."""
    if hasattr(tree, "items"):
        return {str(k): _plain(v) for k, v in tree.items()}
    return np.asarray(getattr(tree, "value", tree), dtype=np.float32)


def _write_params(params, directory: Path) -> Path:
    from flax import serialization

    path = directory / PARAMS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(serialization.msgpack_serialize(_plain(params)))
    os.replace(tmp, path)
    return path


def _read_params(directory: Path):
    from flax import serialization

    return serialization.msgpack_restore((Path(directory) / PARAMS_FILE).read_bytes())


def export_flax(config, params, directory) -> Path:
    """``params.msgpack`` + ``config.json`` (t5cli model config), as ``t5 convert`` writes."""
    from t5cli.models.flax_dir import write_flax_dir

    write_flax_dir(config, _plain(params), str(directory))
    return Path(directory)


def export_decoder(model, params, directory, *, batch_size: int, input_length: int,
                   max_decode_length: int, platforms: Optional[Sequence[str]] = None,
                   beam_size: int = 1, alpha: float = 0.6) -> Path:
    """Serialise greedy decoding (beam search for ``beam_size`` > 1) ``fn(params,
    encoder_input_tokens int32[B, S]) -> (tokens int32[B, L], scores float32[B])`` with
    ``jax.export``, plus the params."""
    import jax
    import jax.numpy as jnp
    from jax import export as jax_export

    from t5cli.models.generate import get_decode_fn

    method = "beam" if beam_size > 1 else "greedy"
    fn = get_decode_fn(model, method, batch_size=batch_size, input_length=input_length,
                       max_decode_length=max_decode_length, num_beams=beam_size)

    def decode(params, encoder_input_tokens):
        return fn(params, encoder_input_tokens, jax.random.PRNGKey(0), jnp.float32(1.0),
                  jnp.float32(alpha))

    params = _plain(params)
    specs = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    tokens = jax.ShapeDtypeStruct((batch_size, input_length), jnp.int32)
    kwargs = {"platforms": tuple(platforms)} if platforms else {}
    exported = jax_export.export(jax.jit(decode), **kwargs)(specs, tokens)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / EXPORTED_FILE).write_bytes(bytes(exported.serialize()))
    _write_params(params, directory)
    signature = {
        "function": f"{method}_decode(params, encoder_input_tokens) -> (tokens, scores)",
        "beam_size": beam_size, "alpha": alpha,
        "batch_size": batch_size, "input_length": input_length,
        "max_decode_length": max_decode_length, "platforms": list(exported.platforms),
        "eos_id": int(model.eos_id), "pad_id": int(model.pad_id),
        "vocabulary": model.config.vocabulary, "model_config": model.config.to_dict(),
        "jax_version": jax.__version__,
    }
    (directory / SIGNATURE_FILE).write_text(json.dumps(signature, indent=2) + "\n")
    return directory


class ExportedDecoder:
    """Run a ``jax`` export: ``ExportedDecoder(dir)(encoder_input_tokens) -> (tokens, scores)``.

    Needs only jax and flax (for the params file); inputs must be int32[B, S] with the
    exported B and S (pad with 0).
    """

    def __init__(self, directory):
        from jax import export as jax_export

        directory = Path(directory)
        self.signature = json.loads((directory / SIGNATURE_FILE).read_text())
        self.exported = jax_export.deserialize(bytearray((directory / EXPORTED_FILE).read_bytes()))
        self.params = _read_params(directory)

    def __call__(self, encoder_input_tokens) -> Tuple[np.ndarray, np.ndarray]:
        tokens = np.asarray(encoder_input_tokens, np.int32)
        want = (self.signature["batch_size"], self.signature["input_length"])
        if tokens.shape != want:
            raise ValueError(f"this export takes int32{list(want)} inputs, got {list(tokens.shape)}")
        out, scores = self.exported.call(self.params, tokens)
        return np.asarray(out), np.asarray(scores)


def load_exported(directory) -> ExportedDecoder:
    """The decoder of a ``jax`` export directory."""
    return ExportedDecoder(directory)


def _export_saved_model(loaded, runtime, directory, *, lengths, batch_size, beam_size, alpha,
                        tokenized_inputs, task_name, platforms) -> Path:
    """``directory/<step>/``: the SavedModel, encoding text as ``t5 infer`` does."""
    from t5cli.runtime.saved_model import write_saved_model

    model = loaded.model
    task = None
    if task_name or (loaded.task and ("task", loaded.task) in runtime.registry):
        task_name = task_name or loaded.task
        task = runtime.registry.task(task_name)  # only its vocabularies and EOS
    features = getattr(task, "output_features", None) or {}
    in_feature, out_feature = features.get("inputs"), features.get("targets")
    in_vocab = in_feature.vocabulary if in_feature is not None else model.vocabulary
    out_vocab = out_feature.vocabulary if out_feature is not None else model.vocabulary
    add_eos = in_feature.add_eos if in_feature is not None else True
    info = {
        "step": loaded.step, "checkpoint": loaded.checkpoint_path,
        "task": task.name if task is not None else None,
        "inputs": "int32 token ids" if tokenized_inputs else "text",
        "input_length": int(lengths["inputs"]), "max_decode_length": int(lengths["targets"]),
        "batch_size": batch_size, "decoding": "beam" if beam_size > 1 else "greedy",
        "beam_size": beam_size, "alpha": alpha, "add_eos": bool(add_eos),
        "model_config": model.config.to_dict(),
    }
    return write_saved_model(
        model, loaded.params, directory, version=loaded.step,
        input_length=int(lengths["inputs"]), max_decode_length=int(lengths["targets"]),
        beam_size=beam_size, alpha=alpha, batch_size=batch_size,
        tokenized_inputs=tokenized_inputs, input_vocabulary=in_vocab,
        output_vocabulary=out_vocab, add_eos=add_eos, platforms=tuple(platforms or ("cpu",)),
        info=info)


def export(*, output_dir: str, checkpoint_path: Optional[str] = None,
           model_dir: Optional[str] = None, model_name: Optional[str] = None, model_config=None,
           model_overrides: Optional[Mapping[str, Any]] = None, step: Optional[int] = None,
           formats: Sequence[str] = ("hf",), batch_size: Optional[int] = None,
           task_feature_lengths: Optional[Mapping[str, int]] = None,
           platforms: Optional[Sequence[str]] = None, beam_size: int = 1,
           alpha: float = 0.6, tokenized_inputs: bool = False,
           mixture_or_task_name: Optional[str] = None, runtime=None) -> ExportResult:
    """Export a checkpoint (a MODEL_DIR, ``checkpoint_<N>`` or HF directory) to ``output_dir``.

    See the module docstring for the formats. The ``jax`` and ``saved_model`` formats
    decode greedily, or with beam search for ``beam_size`` > 1 (brevity penalty
    ``alpha``), for ``task_feature_lengths`` (``inputs``, ``targets``; default: the lengths
    the model was trained with). The ``jax`` format is compiled for ``batch_size`` (default
    1); ``saved_model`` takes any batch size unless ``batch_size`` fixes one, text (encoded
    with the vocabulary of ``mixture_or_task_name``, default the task the model was trained
    on, else the model's) or with ``tokenized_inputs`` int32 token ids, and is lowered for
    ``platforms`` (default ``cpu``). Nothing in the source MODEL_DIR is changed.
    """
    from t5cli.runtime import compile_cache
    from t5cli.runtime.model_loading import load_model

    formats = list(dict.fromkeys(formats or ("hf",)))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"unknown export format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    if not output_dir:
        raise ConfigError("pass --output-dir DIR")
    out = Path(os.path.expanduser(str(output_dir))).absolute()
    if out.is_dir() and any(p.name.startswith("checkpoint_") for p in out.iterdir()):
        raise ConfigError(f"{out} holds checkpoints (a MODEL_DIR); export into another directory")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ConfigError(f"--beam-size must be a positive integer, got {beam_size!r}")
    if runtime is None:
        from t5cli.plugins import load_runtime

        runtime = load_runtime()
    compile_cache.enable()
    from t5cli.runtime.head_checkpoints import head_record

    if head_record(checkpoint_path or model_dir) is not None:  # an encoder-only head
        from t5cli.runtime.head_export import export_checkpoint

        return export_checkpoint(runtime, output_dir=out, checkpoint_path=checkpoint_path,
                                 model_dir=model_dir, step=step, formats=formats)
    loaded = load_model(runtime, checkpoint_path, model_dir=model_dir, model_name=model_name,
                        model_config=model_config, model_overrides=model_overrides, step=step)
    config = loaded.model.config
    lengths = dict(task_feature_lengths or loaded.train_feature_lengths or {})
    for fmt in ("jax", "saved_model"):
        if fmt in formats and not {"inputs", "targets"} <= set(lengths):
            raise ConfigError(f"the {fmt} format is compiled for fixed lengths: pass "
                              "--feature-lengths inputs=N,targets=N")
    paths: Dict[str, str] = {}
    for fmt in formats:
        directory = out if len(formats) == 1 else out / fmt
        directory.mkdir(parents=True, exist_ok=True)
        if fmt == "hf":
            from t5cli.models.hf import export_hf

            export_hf(config, _plain(loaded.params), str(directory))
        elif fmt == "flax":
            export_flax(config, loaded.params, directory)
        elif fmt == "jax":
            export_decoder(loaded.model, loaded.params, directory, batch_size=batch_size or 1,
                           input_length=int(lengths["inputs"]),
                           max_decode_length=int(lengths["targets"]), platforms=platforms,
                           beam_size=beam_size, alpha=alpha)
        else:
            directory = _export_saved_model(
                loaded, runtime, directory, lengths=lengths, batch_size=batch_size,
                beam_size=beam_size, alpha=alpha, tokenized_inputs=tokenized_inputs,
                task_name=mixture_or_task_name, platforms=platforms)
        paths[fmt] = str(directory)
        print(f"wrote {fmt} export of step {loaded.step} to {directory}", flush=True)
    return ExportResult(step=loaded.step, paths=paths)
