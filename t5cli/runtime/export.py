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
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from t5cli.errors import ConfigError

FORMATS = ("hf", "flax", "jax")
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
                   max_decode_length: int, platforms: Optional[Sequence[str]] = None) -> Path:
    """Serialise greedy decoding ``fn(params, encoder_input_tokens int32[B, S]) ->
    (tokens int32[B, L], scores float32[B])`` with ``jax.export``, plus the params."""
    import jax
    import jax.numpy as jnp
    from jax import export as jax_export

    from t5cli.models.generate import get_decode_fn

    fn = get_decode_fn(model, "greedy", batch_size=batch_size, input_length=input_length,
                       max_decode_length=max_decode_length)

    def decode(params, encoder_input_tokens):
        return fn(params, encoder_input_tokens, jax.random.PRNGKey(0), jnp.float32(1.0),
                  jnp.float32(0.6))

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
        "function": "greedy_decode(params, encoder_input_tokens) -> (tokens, scores)",
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


def export(*, output_dir: str, checkpoint_path: Optional[str] = None,
           model_dir: Optional[str] = None, model_name: Optional[str] = None, model_config=None,
           model_overrides: Optional[Mapping[str, Any]] = None, step: Optional[int] = None,
           formats: Sequence[str] = ("hf",), batch_size: int = 1,
           task_feature_lengths: Optional[Mapping[str, int]] = None,
           platforms: Optional[Sequence[str]] = None, runtime=None) -> ExportResult:
    """Export a checkpoint (a MODEL_DIR, ``checkpoint_<N>`` or HF directory) to ``output_dir``.

    See the module docstring for the formats. The ``jax`` format is compiled for
    ``batch_size`` and ``task_feature_lengths`` (``inputs``, ``targets``; default: the
    lengths the model was trained with). Nothing in the source MODEL_DIR is changed.
    """
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
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
    if runtime is None:
        from t5cli.plugins import load_runtime

        runtime = load_runtime()
    loaded = load_model(runtime, checkpoint_path, model_dir=model_dir, model_name=model_name,
                        model_config=model_config, model_overrides=model_overrides, step=step)
    config = loaded.model.config
    lengths = dict(task_feature_lengths or loaded.train_feature_lengths or {})
    if "jax" in formats and not {"inputs", "targets"} <= set(lengths):
        raise ConfigError("the jax format is compiled for fixed lengths: pass "
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
        else:
            export_decoder(loaded.model, loaded.params, directory, batch_size=batch_size,
                           input_length=int(lengths["inputs"]),
                           max_decode_length=int(lengths["targets"]), platforms=platforms)
        paths[fmt] = str(directory)
        print(f"wrote {fmt} export of step {loaded.step} to {directory}", flush=True)
    return ExportResult(step=loaded.step, paths=paths)
