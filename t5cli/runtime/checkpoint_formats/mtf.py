"""Mesh-TensorFlow checkpoints (the original T5, mT5 and ByT5 releases).

Read with ``tf.train.load_checkpoint``; variable names map to T5X's parameter names as
T5X's ``checkpoint_importer`` maps them (written anew here):

===============================================================  =====================================
MTF variable                                                     t5cli / T5X parameter
===============================================================  =====================================
``shared/embedding``                                             ``token_embedder/embedding``
``{stack}/block_000/layer_000/SelfAttention/relative_attention_bias``  ``{stack}/relpos_bias/rel_embedding``
``{stack}/block_i/layer_j/SelfAttention/{q,k,v,o}``             ``{stack}/layers_i/(self_)attention/{query,key,value,out}/kernel``
``decoder/block_i/layer_j/EncDecAttention/{q,k,v,o}``           ``decoder/layers_i/encoder_decoder_attention/…``
``{stack}/block_i/layer_j/DenseReluDense/{wi,wi_0,wi_1,wo}/kernel``  ``{stack}/layers_i/mlp/…/kernel``
``{stack}/block_i/layer_j/{layer,rms}_norm/scale``              the j-th pre-norm of layer i
``{stack}/{final_layer,rms}_norm/scale``                        ``{stack}/{stack}_norm/scale``
``decoder/logits/kernel``                                       ``decoder/logits_dense/kernel``
===============================================================  =====================================

Adafactor slots carry the suffixes ``_slot_vr``, ``_slot_vc``, ``_slot_v`` (``_slot_m``)
and become ``v_row``, ``v_col``, ``v`` (``m``). ``global_step`` gives the step. Any other
variable is an error naming it: nothing is dropped silently.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from t5cli.errors import CheckpointError, first_line
from t5cli.runtime.checkpoint_formats import MTF, Foreign, to_float32, unflatten

SLOTS = {"_slot_vr": "v_row", "_slot_vc": "v_col", "_slot_v": "v", "_slot_m": "m"}
_SLOT = r"(_slot_vr|_slot_vc|_slot_v|_slot_m)?"
_QKVO = {"q": "query", "k": "key", "v": "value", "o": "out"}
_NORMS = {"encoder": ("pre_attention_layer_norm", "pre_mlp_layer_norm"),
          "decoder": ("pre_self_attention_layer_norm", "pre_cross_attention_layer_norm",
                      "pre_mlp_layer_norm")}
_RULES = [
    ("embedding", re.compile(r"shared/embedding" + _SLOT)),
    ("relpos", re.compile(r"(encoder|decoder)/block_(\d+)/layer_000/SelfAttention/"
                          r"relative_attention_bias" + _SLOT)),
    ("cross_relpos", re.compile(r"decoder/block_(\d+)/layer_\d+/EncDecAttention/"
                                r"relative_attention_bias" + _SLOT)),
    ("attention", re.compile(r"(encoder|decoder)/block_(\d+)/layer_\d+/(SelfAttention|EncDecAttention)/"
                             r"([qkvo])" + _SLOT)),
    ("mlp", re.compile(r"(encoder|decoder)/block_(\d+)/layer_\d+/DenseReluDense/"
                       r"(wi|wo)(_\d+)?/kernel" + _SLOT)),
    ("norm", re.compile(r"(encoder|decoder)/block_(\d+)/layer_(\d+)/(?:layer|rms)_norm/scale" + _SLOT)),
    ("final_norm", re.compile(r"(encoder|decoder)/(?:final_layer|rms)_norm/scale" + _SLOT)),
    ("logits", re.compile(r"decoder/logits/kernel" + _SLOT)),
    ("step", re.compile(r"global_step")),
]
_UNSUPPORTED = re.compile(r"(transformer/|(encoder|decoder)/embedding)")


def map_name(name: str) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """``(parameter path, slot or None, note)`` for one MTF variable; CheckpointError for
    one that has no place in a T5 encoder-decoder. A None path means: ignored (see note)."""
    for kind, rule in _RULES:
        m = rule.fullmatch(name)
        if not m:
            continue
        g = m.groups()
        slot = SLOTS.get(g[-1]) if kind != "step" else None
        if kind == "embedding":
            return "token_embedder/embedding", slot, None
        if kind == "relpos":
            if int(g[1]) != 0:
                raise CheckpointError(
                    f"MTF variable {name!r}: a relative-position bias in every block is not "
                    f"supported (t5cli shares one table per stack, as T5 does)")
            return f"{g[0]}/relpos_bias/rel_embedding", slot, None
        if kind == "cross_relpos":
            return None, slot, f"ignored {name} (T5's cross-attention uses no position bias)"
        if kind == "attention":
            stack, block, which, qkvo = g[:4]
            sub = "attention" if stack == "encoder" else (
                "self_attention" if which == "SelfAttention" else "encoder_decoder_attention")
            return f"{stack}/layers_{int(block)}/{sub}/{_QKVO[qkvo]}/kernel", slot, None
        if kind == "mlp":
            stack, block, io, num = g[:4]
            return f"{stack}/layers_{int(block)}/mlp/{io}{num or ''}/kernel", slot, None
        if kind == "norm":
            stack, block, sub = g[0], int(g[1]), int(g[2])
            names = _NORMS[stack]
            if sub >= len(names):
                break
            return f"{stack}/layers_{block}/{names[sub]}/scale", slot, None
        if kind == "final_norm":
            return f"{g[0]}/{g[0]}_norm/scale", slot, None
        if kind == "logits":
            return "decoder/logits_dense/kernel", slot, None
        return None, None, None  # global_step: read separately
    if _UNSUPPORTED.match(name):
        raise CheckpointError(f"MTF variable {name!r}: decoder-only models and separate encoder/"
                              f"decoder embeddings are not supported by t5cli")
    raise CheckpointError(f"MTF variable {name!r} is not part of a T5 encoder-decoder that "
                          f"t5cli knows; nothing was imported")


def read(prefix: Path, *, with_slots: bool = False) -> Foreign:
    """Read the MTF checkpoint ``prefix`` (``…/model.ckpt-N``)."""
    import tensorflow as tf

    prefix = str(prefix)
    source = f"Mesh-TensorFlow checkpoint {prefix}"
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
    except Exception as exc:
        raise CheckpointError(f"{prefix}.index: cannot open the TF checkpoint ({first_line(exc)})") from None
    params: Dict[str, object] = {}
    slots: Dict[str, Dict[str, object]] = {}
    notes: List[str] = []
    skipped_slots = 0

    def get(name):
        try:
            return reader.get_tensor(name)
        except Exception as exc:
            raise CheckpointError(f"{prefix}: cannot read variable {name!r} ({first_line(exc)}); "
                                  f"the .data file is damaged, copy it again") from None

    step = None
    for name in sorted(shapes):
        path, slot, note = map_name(name)
        if name == "global_step":
            step = int(get(name))
            notes.append(f"global_step ({step}) taken as the step, not a parameter")
            continue
        if note:
            notes.append(note)
        if path is None:
            continue
        if slot is not None:
            if with_slots:
                slots.setdefault(path, {})[slot] = to_float32(get(name), name, source)
            else:
                skipped_slots += 1
            continue
        if path in params:
            raise CheckpointError(f"{prefix}: two MTF variables map to {path} (one is {name!r})")
        params[path] = to_float32(get(name), name, source)
    if skipped_slots:
        notes.append(f"skipped {skipped_slots} Adafactor slot variables (optimizer state)")
    if not params:
        raise CheckpointError(f"{prefix}: no T5 parameters in this checkpoint")
    if step is None:
        m = re.search(r"-(\d+)$", prefix)
        step = int(m.group(1)) if m else 0
    return Foreign(MTF, prefix, unflatten(params), step, slots or None, notes,
                   config_dir=str(Path(prefix).parent))
