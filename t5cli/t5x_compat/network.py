"""``t5x.examples.t5.network``: T5X's ``T5Config`` and ``Transformer``, as t5cli's model config."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence


@dataclasses.dataclass
class T5Config:
    """Every field of T5X's example network's config, under its name."""

    vocab_size: int = 32128
    dtype: Any = "float32"
    emb_dim: int = 512
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    head_dim: int = 64
    mlp_dim: int = 2048
    mlp_activations: Sequence[str] = ("relu",)
    dropout_rate: float = 0.1
    logits_via_embedding: bool = False
    float32_attention_logits: bool = False


class Transformer:
    """T5X's encoder-decoder module: here only its ``config``."""

    def __init__(self, config: T5Config = None):
        self.config = config if config is not None else T5Config()


def _dtype_name(dtype: Any) -> str:
    import numpy as np

    if isinstance(dtype, str):
        return dtype
    try:
        return np.dtype(dtype).name
    except TypeError:
        return getattr(dtype, "__name__", str(dtype))


def family(config: T5Config) -> str:
    """The t5cli model family these dimensions belong to."""
    gated = len(tuple(config.mlp_activations)) > 1
    if config.vocab_size == 384:
        return "byt5"
    if config.vocab_size == 250112:
        return "mt5"
    return "t5_1_1" if gated else "t5_1_0"


def to_t5cli(config: T5Config, vocabulary: str, unsupported) -> Any:
    """t5cli's ``T5Config`` with the same architecture."""
    from t5cli.models.configs import T5Config as Ours

    if config.float32_attention_logits:
        unsupported("network.T5Config.float32_attention_logits", True)
    fam = family(config)
    return Ours(name=f"t5x_{fam}", vocab_size=int(config.vocab_size), emb_dim=int(config.emb_dim),
                num_heads=int(config.num_heads), num_encoder_layers=int(config.num_encoder_layers),
                num_decoder_layers=int(config.num_decoder_layers), head_dim=int(config.head_dim),
                mlp_dim=int(config.mlp_dim), mlp_activations=tuple(config.mlp_activations),
                logits_via_embedding=bool(config.logits_via_embedding),
                dropout_rate=float(config.dropout_rate), dtype=_dtype_name(config.dtype),
                vocabulary=vocabulary, family=fam, size="custom")
