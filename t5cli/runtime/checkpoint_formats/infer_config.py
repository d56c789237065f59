"""The model configuration of a checkpoint that has no t5cli record.

Sizes come from the tensor shapes (vocabulary and width from the embedding, heads and
buckets from the relative-position table, head width from the query kernel, MLP width,
layer counts, gated or not, tied logits or not). What shapes cannot tell (activation,
relative-position max distance, vocabulary) comes from a ``config.gin`` /
``operative_config.gin`` beside the checkpoint (T5X and MTF both write one), else from
``--model NAME`` / model overrides, else from the family defaults. A gin value that
contradicts a shape is an error naming the tensor.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from t5cli.errors import CheckpointError

GIN_FILES = ("config.gin", "operative_config.gin")
SIZE_FIELDS = ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim",
               "num_encoder_layers", "num_decoder_layers", "relpos_num_buckets")

# last component of a gin binding (or macro name) -> T5Config field
_GIN_NAMES = {
    "emb_dim": "emb_dim", "EMBED_DIM": "emb_dim", "d_model": "emb_dim",
    "num_heads": "num_heads", "NUM_HEADS": "num_heads",
    "head_dim": "head_dim", "HEAD_DIM": "head_dim", "d_kv": "head_dim",
    "mlp_dim": "mlp_dim", "MLP_DIM": "mlp_dim", "d_ff": "mlp_dim",
    "num_encoder_layers": "num_encoder_layers", "NUM_ENCODER_LAYERS": "num_encoder_layers",
    "num_decoder_layers": "num_decoder_layers", "NUM_DECODER_LAYERS": "num_decoder_layers",
    "vocab_size": "vocab_size",
    "mlp_activations": "mlp_activations", "MLP_ACTIVATIONS": "mlp_activations",
    "logits_via_embedding": "logits_via_embedding",
    "shared_embedding_and_softmax_weights": "logits_via_embedding",
    "relative_attention_max_distance": "relpos_max_distance",
    "relative_attention_num_buckets": "relpos_num_buckets",
}
_BINDING = re.compile(r"^([A-Za-z_][\w./]*)\s*=\s*(.*)$")


def find_gin(config_dir) -> Optional[Path]:
    """``config.gin`` / ``operative_config.gin`` in ``config_dir`` or the folder above it."""
    if not config_dir:
        return None
    here = Path(config_dir)
    for folder in (here, here.parent):
        for name in GIN_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def _bindings(text: str) -> Dict[str, str]:
    """``name = value`` pairs of a gin file, values joined across lines until brackets close."""
    out, pending, name = {}, "", None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if name is not None:
            pending += " " + line.strip().rstrip("\\")
        else:
            m = _BINDING.match(line.strip())
            if not m:
                continue
            name, pending = m.group(1), m.group(2).rstrip("\\")
        if sum(pending.count(c) for c in "([{") <= sum(pending.count(c) for c in ")]}"):
            out[name] = pending.strip()
            name = None
    return out


def read_gin(path: Path) -> Dict[str, Any]:
    """The T5Config fields a gin file sets (``{field: value}``), macros resolved."""
    bindings = _bindings(path.read_text(errors="replace"))
    macros = {k: v for k, v in bindings.items() if "." not in k and "/" not in k}

    def value(text: str, depth: int = 0):
        m = re.fullmatch(r"%([A-Za-z_]\w*)", text.strip())
        if m and m.group(1) in macros and depth < 10:
            return value(macros[m.group(1)], depth + 1)
        try:
            return ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            return None

    found: Dict[str, Any] = {}
    for key, text in bindings.items():
        scope, _, bare = key.rpartition("/")
        last = bare.rsplit(".", 1)[-1]
        field = ("mlp_activations" if bare.endswith("DenseReluDense.activation")
                 else _GIN_NAMES.get(last))
        fields = [field] if field else []
        if last == "num_layers":  # MTF: one value for both stacks unless scoped
            fields = {"encoder": ["num_encoder_layers"], "decoder": ["num_decoder_layers"]}.get(
                scope.split("/")[-1], ["num_encoder_layers", "num_decoder_layers"])
        v = value(text)
        if v is None:
            continue
        for f in fields:
            if f == "mlp_activations":
                v2 = (v,) if isinstance(v, str) else tuple(v) if isinstance(v, (list, tuple)) else None
                if v2:
                    found[f] = tuple("gelu" if a in ("gelu_new", "gelu") else a for a in v2)
            elif f == "logits_via_embedding":
                found[f] = bool(v)
            elif isinstance(v, int) and not isinstance(v, bool):
                if scope or f not in found:  # a scoped binding wins over an unscoped one
                    found[f] = v
    return found


def sizes_from_shapes(shapes: Mapping[str, Tuple[int, ...]]) -> Optional[Dict[str, Tuple[Any, str]]]:
    """``{field: (value, tensor it was read from)}`` plus ``gated``/``tied``; None when the
    tree lacks the tensors every T5 has."""
    def layers(stack: str) -> int:
        return len({k.split("/")[1] for k in shapes if k.startswith(f"{stack}/layers_")})

    emb, rel = "token_embedder/embedding", "encoder/relpos_bias/rel_embedding"
    query, wo = "encoder/layers_0/attention/query/kernel", "encoder/layers_0/mlp/wo/kernel"
    try:
        vocab, width = shapes[emb]
        heads, buckets = shapes[rel]
        inner = shapes[query][1]
        mlp = shapes[wo][0]
    except (KeyError, ValueError, IndexError):
        return None
    logits = "decoder/logits_dense/kernel"
    return {
        "vocab_size": (vocab, emb), "emb_dim": (width, emb), "num_heads": (heads, rel),
        "relpos_num_buckets": (buckets, rel), "head_dim": (inner // max(heads, 1), query),
        "mlp_dim": (mlp, wo),
        "num_encoder_layers": (layers("encoder"), "encoder/layers_*"),
        "num_decoder_layers": (layers("decoder"), "decoder/layers_*"),
        "gated": ("encoder/layers_0/mlp/wi_0/kernel" in shapes, "encoder/layers_0/mlp/wi_0/kernel"),
        "tied": (logits not in shapes, logits),
    }


def config_from_shapes(config, shapes: Mapping[str, Tuple[int, ...]]):
    """``config`` with the sizes the shapes say; None if they cannot be read or the
    architecture differs (gated MLP or not), not just the sizes."""
    found = sizes_from_shapes(shapes)
    if found is None or found["gated"][0] != (len(config.mlp_activations) == 2):
        return None
    return config.replace(logits_via_embedding=found["tied"][0],
                          **{f: found[f][0] for f in SIZE_FIELDS})


def _default_base(vocab: int, gated: bool):
    from t5cli.models.configs import get_config

    if vocab == 384:
        family = "byt5"
    elif vocab >= 250000:
        family = "mt5"
    else:
        family = "t5_1_1" if gated else "t5_1_0"
    base = get_config(f"{family}_small")
    return base.replace(name=f"{family}_imported", size="imported")


def infer_config(shapes: Mapping[str, Tuple[int, ...]], *, source: str, config_dir=None,
                 base=None, overrides: Optional[Mapping[str, Any]] = None):
    """``(T5Config, one-line description of what was inferred)`` for a checkpoint's tree.

    ``base`` (from ``--model``) settles what neither shapes nor gin tell; overrides win last.
    """
    found = sizes_from_shapes(shapes)
    if found is None:
        missing = [k for k in ("token_embedder/embedding", "encoder/relpos_bias/rel_embedding",
                               "encoder/layers_0/attention/query/kernel",
                               "encoder/layers_0/mlp/wo/kernel") if k not in shapes]
        raise CheckpointError(f"{source}: cannot tell the model from its tensors: "
                              f"{missing[0] if missing else 'a tensor'} is missing or misshapen")
    gated, tied = found["gated"][0], found["tied"][0]
    config = base if base is not None else _default_base(found["vocab_size"][0], gated)
    gin_path = find_gin(config_dir)
    gin = read_gin(gin_path) if gin_path else {}
    for field, (value, tensor) in found.items():
        if field in gin and field in SIZE_FIELDS and gin[field] != value:
            raise CheckpointError(f"{source}: {tensor} has shape {tuple(shapes.get(tensor, ()))}, "
                                  f"which contradicts {gin_path} ({field} = {gin[field]})")
    if "logits_via_embedding" in gin and gin["logits_via_embedding"] != tied:
        raise CheckpointError(f"{source}: {'no ' if tied else ''}decoder/logits_dense/kernel, "
                              f"which contradicts {gin_path} (logits_via_embedding = "
                              f"{gin['logits_via_embedding']})")
    changes = {f: found[f][0] for f in SIZE_FIELDS}
    changes["logits_via_embedding"] = tied
    told = []
    if "relpos_max_distance" in gin:
        changes["relpos_max_distance"] = gin["relpos_max_distance"]
        told.append("relpos_max_distance")
    acts = gin.get("mlp_activations")
    if acts and (len(acts) == 2) == gated:
        told.append("mlp_activations")
    elif acts:
        raise CheckpointError(f"{source}: encoder/layers_0/mlp/wi{'_0' if gated else ''}/kernel "
                              f"contradicts {gin_path} (mlp_activations = {acts})")
    else:
        acts = config.mlp_activations
        if (len(acts) == 2) != gated:
            acts = ("gelu", "linear") if gated else ("relu",)
    changes["mlp_activations"] = tuple(acts)
    config = config.replace(**changes)
    config = config.with_overrides(overrides)
    assumed = [n for n in ("mlp_activations", "relpos_max_distance")
               if n not in told and n not in (overrides or {})]
    line = (f"model config of {source}: sizes from its tensor shapes "
            f"(vocab {config.vocab_size}, emb {config.emb_dim}, {config.num_encoder_layers}+"
            f"{config.num_decoder_layers} layers, {config.num_heads} heads x {config.head_dim}, "
            f"mlp {config.mlp_dim} {'gated' if gated else 'plain'}, logits "
            f"{'tied' if tied else 'untied'})"
            + (f", {', '.join(told)} from {gin_path.name}" if told else "")
            + (f"; {', '.join(f'{n}={getattr(config, n)!r}' for n in assumed)} and vocabulary "
               f"{config.vocabulary!r} from {config.name} (pass --model or model overrides "
               f"to change them)" if assumed else ""))
    return config, line
