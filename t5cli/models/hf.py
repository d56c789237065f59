"""Hugging Face T5 checkpoints: import into our parameter tree, export back.

Reads ``config.json`` plus ``model.safetensors`` (or a sharded
``model.safetensors.index.json``) with the ``safetensors`` package and NumPy; never
unpickles, so ``pytorch_model.bin`` checkpoints must be converted first. Linear weights
are transposed ([out, in] -> [in, out]); the relative-position tables that HF keeps in
layer 0 become each stack's ``relpos_bias``.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from typing import Dict, Optional, Tuple

import numpy as np

from t5cli.errors import CheckpointError
from t5cli.models.configs import T5Config

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# HF activation name -> ours (see network.ACTIVATIONS)
_FROM_HF_ACT = {"relu": "relu", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu",
                "gelu": "gelu_exact", "silu": "silu", "swish": "silu"}
# Tensors some HF checkpoints carry that the model never uses.
_IGNORED = {"decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"}


# ------------------------------------------------------------------------------ reading
class _TensorReader:
    """Lazy access to the tensors of a (possibly sharded) safetensors checkpoint."""

    def __init__(self, directory: str):
        self.directory = directory
        single, index = (os.path.join(directory, f) for f in (WEIGHTS_FILE, INDEX_FILE))
        if os.path.exists(single):
            from safetensors import safe_open

            with safe_open(single, framework="np") as f:
                self.files = {name: single for name in f.keys()}
        elif os.path.exists(index):
            try:
                with open(index) as f:
                    weight_map = json.load(f)["weight_map"]
            except (OSError, ValueError, KeyError) as exc:
                raise CheckpointError(f"{index}: not a valid safetensors index ({exc})") from exc
            self.files = {name: os.path.join(directory, file) for name, file in weight_map.items()}
            for path in sorted(set(self.files.values())):
                if not os.path.exists(path):
                    raise CheckpointError(f"{path}: shard listed in {INDEX_FILE} is missing")
        else:
            raise CheckpointError(_missing_weights_message(directory))
        self.used = set()

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def get(self, name: str) -> np.ndarray:
        if name not in self.files:
            hint = ""
            if name.startswith("decoder.") and not any(n.startswith("decoder.") for n in self.files):
                hint = ("; it has no decoder (a T5EncoderModel?): load it into an encoder-only "
                        "head with import_hf(dir, encoder_only=True)")
            raise CheckpointError(
                f"{self.directory}: tensor {name!r} is missing from the checkpoint{hint}")
        self.used.add(name)
        return _read_tensor(self.files[name], name).astype(np.float32)


def _missing_weights_message(directory: str) -> str:
    if os.path.exists(os.path.join(directory, "pytorch_model.bin")):
        return (
            f"{directory} holds only pytorch_model.bin; t5cli never unpickles checkpoints. "
            "Convert it once with transformers: "
            "`T5ForConditionalGeneration.from_pretrained(DIR).save_pretrained(DIR, "
            "safe_serialization=True)`, which writes model.safetensors")
    return f"{directory}: no {WEIGHTS_FILE} or {INDEX_FILE} found"


def _read_tensor(path: str, name: str) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(path, framework="np") as f:
        dtype = f.get_slice(name).get_dtype()
        if dtype != "BF16":
            return f.get_tensor(name)
    return _read_bf16(path, name)  # NumPy has no bfloat16: read the raw bytes instead


def _read_bf16(path: str, name: str) -> np.ndarray:
    import ml_dtypes  # ships with JAX

    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        info = json.loads(f.read(header_len))[name]
        start, end = info["data_offsets"]
        f.seek(8 + header_len + start)
        raw = np.frombuffer(f.read(end - start), dtype=np.uint16)
    return raw.view(ml_dtypes.bfloat16).reshape(info["shape"])


def _read_hf_config(directory: str) -> dict:
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    path = os.path.join(directory, CONFIG_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; an HF checkpoint needs its config.json") from None
    except ValueError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc


# ------------------------------------------------------------------------------ configs
def config_from_hf(hf: dict, name: str = "hf") -> Tuple[T5Config, bool]:
    """Our config from an HF config dict, and whether HF scales the decoder output."""
    if hf.get("model_type", "t5") not in ("t5", "mt5"):
        raise CheckpointError(f"model_type {hf.get('model_type')!r} is not a T5 checkpoint")
    proj = hf.get("feed_forward_proj", "relu")
    parts = proj.split("-")
    gated = parts[0] == "gated"
    act = "gelu_new" if proj == "gated-gelu" else parts[-1]
    if act not in _FROM_HF_ACT:
        raise CheckpointError(f"feed_forward_proj {proj!r} is not supported")
    acts = (_FROM_HF_ACT[act], "linear") if gated else (_FROM_HF_ACT[act],)
    # HF scales the decoder output by d_model**-0.5 unless the (old-style) config says
    # tie_word_embeddings=false; transformers 5 records it as scale_decoder_outputs.
    scale = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False)
    vocab = hf.get("vocab_size", 32128)
    num_layers = hf.get("num_layers", 6)
    if vocab == 384:
        family, vocabulary = "byt5", "byte"
    elif vocab >= 250000:
        family, vocabulary = "mt5", "mt5"
    else:
        family, vocabulary = ("t5_1_1" if gated else "t5_1_0"), "t5"
    config = T5Config(
        name=name, vocab_size=vocab, emb_dim=hf.get("d_model", 512),
        num_heads=hf.get("num_heads", 8), num_encoder_layers=num_layers,
        num_decoder_layers=hf.get("num_decoder_layers") or num_layers,
        head_dim=hf.get("d_kv", 64), mlp_dim=hf.get("d_ff", 2048), mlp_activations=acts,
        logits_via_embedding=bool(scale), dropout_rate=hf.get("dropout_rate", 0.1),
        relpos_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relpos_max_distance=hf.get("relative_attention_max_distance", 128),
        layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6), vocabulary=vocabulary,
        family=family, size="hf")
    return config, bool(scale)


def config_to_hf(config: T5Config) -> dict:
    """An HF ``config.json`` dict for ``config``."""
    acts = config.mlp_activations
    if len(acts) == 1:
        to_hf = {"relu": "relu", "gelu": "gelu_new", "gelu_exact": "gelu", "silu": "silu"}
        proj = to_hf.get(acts[0])
    elif len(acts) == 2 and acts[1] == "linear":
        to_hf = {"relu": "gated-relu", "gelu": "gated-gelu", "silu": "gated-silu"}
        proj = to_hf.get(acts[0])
    else:
        proj = None
    if proj is None:
        raise CheckpointError(f"mlp_activations {acts} have no Hugging Face T5 equivalent")
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": config.vocab_size,
        "d_model": config.emb_dim,
        "d_kv": config.head_dim,
        "d_ff": config.mlp_dim,
        "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "num_heads": config.num_heads,
        "relative_attention_num_buckets": config.relpos_num_buckets,
        "relative_attention_max_distance": config.relpos_max_distance,
        "dropout_rate": config.dropout_rate,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "initializer_factor": 1.0,
        "feed_forward_proj": proj,
        "tie_word_embeddings": config.logits_via_embedding,
        "is_encoder_decoder": True,
        "use_cache": True,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
    }


# ------------------------------------------------------------------------------ mapping
def _layer_map(config: T5Config, stack: str, i: int) -> Dict[Tuple[str, ...], Tuple[str, bool]]:
    """Our param path -> (HF tensor name, transpose?) for one layer."""
    hf = f"{stack}.block.{i}.layer"
    ours = (stack, f"layers_{i}")
    out = {}

    def attention(sub: str, hf_prefix: str):
        for mine, theirs in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o")):
            out[ours + (sub, mine, "kernel")] = (f"{hf_prefix}.{theirs}.weight", True)

    if stack == "encoder":
        out[ours + ("pre_attention_layer_norm", "scale")] = (f"{hf}.0.layer_norm.weight", False)
        attention("attention", f"{hf}.0.SelfAttention")
        mlp_index = 1
    else:
        out[ours + ("pre_self_attention_layer_norm", "scale")] = (f"{hf}.0.layer_norm.weight", False)
        attention("self_attention", f"{hf}.0.SelfAttention")
        out[ours + ("pre_cross_attention_layer_norm", "scale")] = (f"{hf}.1.layer_norm.weight", False)
        attention("encoder_decoder_attention", f"{hf}.1.EncDecAttention")
        mlp_index = 2
    out[ours + ("pre_mlp_layer_norm", "scale")] = (f"{hf}.{mlp_index}.layer_norm.weight", False)
    wis = ["wi"] if len(config.mlp_activations) == 1 else [f"wi_{k}" for k in range(len(config.mlp_activations))]
    for wi in wis + ["wo"]:
        out[ours + ("mlp", wi, "kernel")] = (f"{hf}.{mlp_index}.DenseReluDense.{wi}.weight", True)
    return out


def param_map(config: T5Config, encoder_only: bool = False) -> Dict[Tuple[str, ...], Tuple[str, bool]]:
    """Every parameter path except embeddings/logits -> (HF name, transpose?)."""
    out = {
        ("encoder", "relpos_bias", "rel_embedding"):
            ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", True),
        ("encoder", "encoder_norm", "scale"): ("encoder.final_layer_norm.weight", False),
    }
    for i in range(config.num_encoder_layers):
        out.update(_layer_map(config, "encoder", i))
    if not encoder_only:
        out[("decoder", "relpos_bias", "rel_embedding")] = (
            "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", True)
        out[("decoder", "decoder_norm", "scale")] = ("decoder.final_layer_norm.weight", False)
        for i in range(config.num_decoder_layers):
            out.update(_layer_map(config, "decoder", i))
    return out


def _set(tree: dict, path: Tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: dict, path: Tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


# ------------------------------------------------------------------------------ import
def import_hf(directory: str, encoder_only: bool = False,
              name: Optional[str] = None) -> Tuple[T5Config, dict]:
    """Read an HF T5 checkpoint directory into ``(T5Config, params)`` (NumPy float32).

    With ``encoder_only=True`` only ``token_embedder`` and ``encoder`` are read (for the
    heads in ``t5cli.models.heads``; works on ``T5EncoderModel`` checkpoints too). Any
    failure is a CheckpointError naming the directory.
    """
    try:
        return _import_hf(os.fspath(directory), encoder_only, name)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"cannot import Hugging Face checkpoint {directory}: "
                              f"{type(exc).__name__}: {exc}") from None


def _import_hf(directory: str, encoder_only: bool, name: Optional[str]) -> Tuple[T5Config, dict]:
    hf = _read_hf_config(directory)
    config, scale = config_from_hf(hf, name or os.path.basename(os.path.normpath(directory)))
    reader = _TensorReader(directory)

    params: dict = {}
    for candidate in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        if candidate in reader:
            embedding = reader.get(candidate)
            break
    else:
        raise CheckpointError(f"{directory}: tensor 'shared.weight' is missing from the checkpoint")
    _set(params, ("token_embedder", "embedding"), embedding)
    for path, (hf_name, transpose) in param_map(config, encoder_only).items():
        value = reader.get(hf_name)
        _set(params, path, np.ascontiguousarray(value.T) if transpose else value)

    if not encoder_only:
        lm_head = reader.get("lm_head.weight") if "lm_head.weight" in reader else None
        untied = lm_head is not None and not np.array_equal(lm_head, embedding)
        if scale and not untied:
            config = config.replace(logits_via_embedding=True)
        else:
            kernel = (lm_head if untied else embedding).T
            if scale:  # untied head that HF still scales: fold the scale into the kernel
                kernel = kernel * np.float32(config.emb_dim ** -0.5)
            config = config.replace(logits_via_embedding=False)
            _set(params, ("decoder", "logits_dense", "kernel"), np.ascontiguousarray(kernel))
    _check_shapes(config, params, encoder_only, directory)
    unused = set(reader.files) - reader.used - _IGNORED - {
        "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "shared.weight", "lm_head.weight"}
    if encoder_only:
        unused = {n for n in unused if not n.startswith("decoder.")}
    if unused:
        log.warning("%s: ignored %d unexpected tensors, e.g. %s", directory, len(unused),
                    sorted(unused)[:3])
    return config, params


def _flatten(tree: dict, prefix: Tuple[str, ...] = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def _check_shapes(config: T5Config, params: dict, encoder_only: bool, directory: str) -> None:
    expected = _expected_shapes(config, encoder_only)
    got = {path: tuple(v.shape) for path, v in _flatten(params)}
    for path, shape in expected.items():
        if path not in got:
            raise CheckpointError(f"{directory}: parameter {'/'.join(path)} is missing")
        if got[path] != shape:
            raise CheckpointError(
                f"{directory}: parameter {'/'.join(path)} has shape {got[path]}, but "
                f"config.json implies {shape}")


def _expected_shapes(config: T5Config, encoder_only: bool) -> Dict[Tuple[str, ...], tuple]:
    d, inner, mlp = config.emb_dim, config.num_heads * config.head_dim, config.mlp_dim
    shapes = {("token_embedder", "embedding"): (config.vocab_size, d)}
    for path in param_map(config, encoder_only):
        leaf = path[-1]
        if leaf == "scale":
            shape = (d,)
        elif leaf == "rel_embedding":
            shape = (config.num_heads, config.relpos_num_buckets)
        elif path[-2] == "out":
            shape = (inner, d)
        elif path[-2] in ("query", "key", "value"):
            shape = (d, inner)
        elif path[-2] == "wo":
            shape = (mlp, d)
        else:
            shape = (d, mlp)
        shapes[path] = shape
    if not encoder_only and not config.logits_via_embedding:
        shapes[("decoder", "logits_dense", "kernel")] = (d, config.vocab_size)
    return shapes


# ------------------------------------------------------------------------------ export
def export_hf(config: T5Config, params, directory: str) -> None:
    """Write ``config.json`` + ``model.safetensors`` that ``transformers`` loads."""
    from safetensors.numpy import save_file

    params = _to_numpy(params)
    _check_shapes(config, params, False, "params")
    tensors = {"shared.weight": params["token_embedder"]["embedding"]}
    for path, (hf_name, transpose) in param_map(config).items():
        value = _get(params, path)
        tensors[hf_name] = value.T if transpose else value
    if not config.logits_via_embedding:
        tensors["lm_head.weight"] = params["decoder"]["logits_dense"]["kernel"].T
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    os.makedirs(directory, exist_ok=True)
    save_file(tensors, os.path.join(directory, WEIGHTS_FILE), metadata={"format": "pt"})
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        json.dump(config_to_hf(config), f, indent=2, sort_keys=True)
        f.write("\n")


def _to_numpy(tree):
    if isinstance(tree, dict) or hasattr(tree, "items"):
        return {k: _to_numpy(v) for k, v in tree.items()}
    value = getattr(tree, "value", tree)  # unbox LogicallyPartitioned leaves
    return np.asarray(value, dtype=np.float32)
