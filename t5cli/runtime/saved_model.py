"""The ``saved_model`` export format: a TensorFlow SavedModel shaped like T5X's ``export_lib``.

``DIR/<version>/`` (version = the checkpoint step) holds a ``tf.Module`` whose variables are
the model parameters and whose ``serving_default`` signature runs, in one TF graph:

1. the vocabulary's TF encoder (seqio ``encode_tf``, one example at a time with
   ``tf.map_fn``), EOS appended after truncation to the input length, right-padded with 0,
   as ``t5 infer`` encodes text;
2. t5cli's greedy or beam decoder, converted with ``jax2tf.convert`` (native StableHLO
   serialisation for the chosen platforms) with a polymorphic batch dimension;
3. the vocabulary's TF decoder (seqio ``decode_tf``: up to the first EOS).

Inputs: ``text_batch`` string ``[B]`` (or, with ``tokenized_inputs``, int32
``[B, input_length]``: token ids as the encoder sees them, EOS included, padded with 0).
Outputs: ``output`` string ``[B]`` and ``scores`` float32 ``[B]`` (summed log-probabilities;
length-normalised for beam search). Serving needs TensorFlow only (plus ``tensorflow_text``
for a SentencePiece vocabulary), never JAX or t5cli.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from t5cli.runtime.checkpoint_formats import unflatten

INPUT_NAME = "text_batch"
SIGNATURE_KEY = "serving_default"
INFO_FILE = "t5cli_export.json"  # in assets.extra/: what was exported, for people and tools


def _flat_params(params):
    """``{"encoder/layers_0/.../kernel": float32 array}`` from the nested params."""
    flat = {}

    def walk(tree, prefix):
        if hasattr(tree, "items"):
            for k, v in tree.items():
                walk(v, prefix + (str(k),))
        else:
            flat["/".join(prefix)] = np.asarray(getattr(tree, "value", tree), np.float32)

    walk(params, ())
    return flat


def convert_decoder(model, *, max_decode_length: int, beam_size: int = 1, alpha: float = 0.6,
                    batch_size: Optional[int] = None,
                    platforms: Sequence[str] = ("cpu",)):
    """t5cli's decoder as a TF function ``f(params, int32[B, S]) -> (int32[B, L], float32[B])``.

    ``batch_size=None`` makes the batch dimension polymorphic.
    """
    import jax
    import jax.numpy as jnp
    from jax.experimental import jax2tf

    from t5cli.models import generate

    method = "beam" if beam_size > 1 else "greedy"
    # The plain kernels: portable to any TF runtime, and free of the CPU kernels' batch
    # splitting, which needs a concrete batch size (same values up to summation order).
    if getattr(model.config, "kernels", "plain") != "plain":
        plain = type(model)(dataclasses.replace(model.config, kernels="plain"))
        plain._vocabulary = getattr(model, "_vocabulary", None)
        model = plain

    def decode(params, encoder_input_tokens):
        # the batch may be a symbolic dimension here: build the decoder for that shape
        fn = generate._decode_fn(model, method, batch_size=encoder_input_tokens.shape[0],
                                 max_decode_length=int(max_decode_length),
                                 num_beams=int(beam_size), top_k=0, top_p=1.0)
        tokens, scores = fn(params, encoder_input_tokens, jax.random.PRNGKey(0),
                            jnp.float32(1.0), jnp.float32(alpha))
        return tokens.astype(jnp.int32), scores.astype(jnp.float32)

    batch = "b" if batch_size is None else str(int(batch_size))
    return jax2tf.convert(decode, polymorphic_shapes=[None, f"({batch}, _)"],
                          with_gradient=False,
                          native_serialization_platforms=tuple(platforms))


#: StableHLO compatibility window the serialised decoder targets. jax 0.10.2 writes for
#: consumers at most 4 weeks old (StableHLO 1.15); TF 2.21's XlaCallModule reads 1.13.7,
#: and fails on newer ops ("unregistered operation 'vhlo.composite_v2'" for jax's own
#: top-k lowering). 12 weeks gives 1.13.7.
STABLEHLO_COMPATIBILITY = "WEEK_12"


@contextlib.contextmanager
def _stablehlo_target(requirement: str = STABLEHLO_COMPATIBILITY):
    """While tracing, serialise jax.export modules for an older StableHLO consumer."""
    try:
        from jax._src.export import _export
        from jax._src.lib.mlir.dialects import hlo

        version = hlo.get_version_from_compatibility_requirement(
            getattr(hlo.StablehloCompatibilityRequirement, requirement))
        original = _export._module_to_bytecode
        serialize = _export._jax.mlir.serialize_portable_artifact
        backend = _export.xb.get_backend
    except (ImportError, AttributeError):  # another jax layout: keep its default
        yield
        return

    def to_bytecode(module):
        return serialize(module, version, backend().serialize_with_sdy)

    _export._module_to_bytecode = to_bytecode
    try:
        yield
    finally:
        _export._module_to_bytecode = original


def _top_k_by_sort(operand, *, k, axis):
    """``lax.top_k`` as a stable sort: the same values and indices (ties: lower index first)."""
    import jax.numpy as jnp
    from jax import lax

    x = jnp.moveaxis(operand, axis, -1)
    iota = lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    _, values, indices = lax.sort((-x, x, iota), dimension=x.ndim - 1, num_keys=1,
                                  is_stable=True)
    values, indices = values[..., :k], indices[..., :k]
    return [jnp.moveaxis(values, -1, axis), jnp.moveaxis(indices, -1, axis)]


@contextlib.contextmanager
def _portable_top_k():
    """While tracing, lower float ``top_k`` (beam search) as a sort.

    jax lowers ``top_k`` to ``chlo.top_k``, serialised as a StableHLO composite whose
    decomposition keeps the symbolic batch dimension dynamic; TF's XlaCallModule refines the
    main function's shapes but not that one ("Module has dynamic shapes"). A sort is plain
    StableHLO and refines like the rest.
    """
    import numpy as np
    from jax import lax
    from jax._src.interpreters import mlir

    table = mlir._lowerings
    original = table.get(lax.top_k_p)
    by_sort = mlir.lower_fun(_top_k_by_sort, multiple_results=True)

    def rule(ctx, operand, *, k, axis, **params):
        if original is not None and (params or not np.issubdtype(ctx.avals_in[0].dtype,
                                                                  np.floating)):
            return original.rule(ctx, operand, k=k, axis=axis, **params)
        return by_sort(ctx, operand, k=k, axis=axis)

    mlir.register_lowering(lax.top_k_p, rule)
    try:
        yield
    finally:
        if original is None:
            table.pop(lax.top_k_p, None)
        else:
            table[lax.top_k_p] = original


def _trackables(vocabulary):
    """TF resources a vocabulary's graph ops need saved with the model (SentencePiece)."""
    found = []
    for attr in ("tf_tokenizer",):
        try:
            obj = getattr(vocabulary, attr, None)
        except Exception:  # a vocabulary that cannot build one: nothing to track
            obj = None
        if obj is not None:
            found.append(obj)
    return found


def build_module(model, params, *, input_length: int, max_decode_length: int,
                 beam_size: int = 1, alpha: float = 0.6, batch_size: Optional[int] = None,
                 tokenized_inputs: bool = False, input_vocabulary=None,
                 output_vocabulary=None, add_eos: bool = True,
                 platforms: Sequence[str] = ("cpu",)):
    """The ``tf.Module`` to save; its ``serve`` is the ``serving_default`` function."""
    import tensorflow as tf

    in_vocab = input_vocabulary if input_vocabulary is not None else model.vocabulary
    out_vocab = output_vocabulary if output_vocabulary is not None else model.vocabulary
    eos_id = int(model.eos_id)
    length = int(input_length)
    model_tf_fn = convert_decoder(model, max_decode_length=max_decode_length,
                                  beam_size=beam_size, alpha=alpha, batch_size=batch_size,
                                  platforms=platforms)

    module = tf.Module()
    flat = {name: tf.Variable(value, trainable=False, name=name.replace("/", "__"))
            for name, value in _flat_params(params).items()}
    module.params = list(flat.values())  # tracked: saved as the model's variables
    module.vocab_resources = _trackables(in_vocab) + _trackables(out_vocab)
    param_vars = unflatten(flat)
    decode = tf.function(lambda tokens: model_tf_fn(param_vars, tokens), autograph=False)

    def featurize(text):
        ids = in_vocab.encode_tf(text)
        if add_eos:
            ids = tf.concat([ids[:length - 1], [eos_id]], axis=0)
        ids = ids[:length]
        ids = tf.pad(ids, [[0, length - tf.shape(ids)[0]]])
        return tf.ensure_shape(tf.cast(ids, tf.int32), [length])

    if tokenized_inputs:
        spec = tf.TensorSpec([batch_size, length], tf.int32, name=INPUT_NAME)
    else:
        spec = tf.TensorSpec([batch_size], tf.string, name=INPUT_NAME)

    @tf.function(input_signature=[spec], autograph=False)
    def serve(text_batch):
        if tokenized_inputs:
            tokens = text_batch
        else:
            tokens = tf.map_fn(featurize, text_batch,
                               fn_output_signature=tf.TensorSpec([length], tf.int32))
        out_tokens, scores = decode(tokens)
        return {"output": out_vocab.decode_tf(out_tokens), "scores": scores}

    module.serve = serve
    return module


def write_saved_model(model, params, base_dir, *, version: int, input_length: int,
                      max_decode_length: int, beam_size: int = 1, alpha: float = 0.6,
                      batch_size: Optional[int] = None, tokenized_inputs: bool = False,
                      input_vocabulary=None, output_vocabulary=None, add_eos: bool = True,
                      platforms: Sequence[str] = ("cpu",), info=None) -> Path:
    """Write the SavedModel to ``base_dir/<version>/`` atomically (a temp dir, then a rename);
    an existing version directory is replaced. Returns the version directory."""
    import tensorflow as tf

    base = Path(base_dir)
    base.mkdir(parents=True, exist_ok=True)
    final = base / str(int(version))
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=base))
    try:
        with _stablehlo_target(), _portable_top_k():
            module = build_module(
                model, params, input_length=input_length, max_decode_length=max_decode_length,
                beam_size=beam_size, alpha=alpha, batch_size=batch_size,
                tokenized_inputs=tokenized_inputs, input_vocabulary=input_vocabulary,
                output_vocabulary=output_vocabulary, add_eos=add_eos, platforms=platforms)
            signature = module.serve.get_concrete_function()  # traces (and serialises) here
            tf.saved_model.save(
                module, str(tmp), signatures={SIGNATURE_KEY: signature},
                options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
        if info is not None:
            extra = tmp / "assets.extra"
            extra.mkdir(exist_ok=True)
            (extra / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=base))
            os.replace(final, old / "v")
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
