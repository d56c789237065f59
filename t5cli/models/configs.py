"""T5-family model configurations (no JAX import: `t5 models` lists them cheaply).

Dimensions follow the published T5X gin files (t5_1_0, t5_1_1, mt5, byt5). Parameters
are always float32; ``dtype`` is the activation dtype. The named configs use float32
activations so they run well on CPU; pass ``replace(dtype='bfloat16')`` for TPU/GPU.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

from t5cli.errors import UnknownNameError

#: The short vocabulary names a config can carry, and what they stand for.
VOCABULARIES = {
    "t5": ("gs://t5-data/vocabs/cc_all.32000/sentencepiece.model", 100),
    "mt5": ("gs://t5-data/vocabs/mc4.250000.100extra/sentencepiece.model", 0),
    "byte": (None, 0),
}

#: values of ``T5Config.kernels`` (``t5cli.models.kernels.CHOICES``; no JAX import here)
KERNELS = ("auto", "plain", "cpu")


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Hyperparameters of one T5 encoder-decoder; field names follow T5X's T5Config."""

    name: str = "custom"
    vocab_size: int = 32128
    emb_dim: int = 512
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    head_dim: int = 64
    mlp_dim: int = 2048
    mlp_activations: Tuple[str, ...] = ("relu",)
    #: True for T5 1.0: logits come from the shared embedding, output scaled by emb_dim**-0.5.
    logits_via_embedding: bool = True
    dropout_rate: float = 0.1
    dtype: str = "float32"
    relpos_num_buckets: int = 32
    relpos_max_distance: int = 128
    #: 't5', 'mt5', 'byte', or a path to a SentencePiece model file.
    vocabulary: str = "t5"
    family: str = "t5_1_0"
    size: str = "small"
    layer_norm_epsilon: float = 1e-6
    #: backend kernels (t5cli.models.kernels): 'auto' (cpu ones on a CPU backend, or as the
    #: T5CLI_KERNELS environment variable says), 'plain' or 'cpu'. Not part of the model:
    #: any choice computes the same function of the same parameters.
    kernels: str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', not {self.dtype!r}")
        if self.kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {', '.join(map(repr, KERNELS))}, "
                             f"not {self.kernels!r}")

    def replace(self, **kw) -> "T5Config":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **kw)

    def with_overrides(self, overrides) -> "T5Config":
        """A copy with the user's ``overrides`` (field -> value) applied; a name that is not a
        field is a ConfigError naming it and the fields."""
        from t5cli.errors import ConfigError

        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides or {}) - known)
        if unknown:
            raise ConfigError(f"model override {unknown[0]!r} is not a field of the model config "
                              f"(fields: {', '.join(sorted(known))})")
        return self.replace(**dict(overrides)) if overrides else self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["mlp_activations"] = list(self.mlp_activations)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "T5Config":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def param_count(self) -> int:
        """Number of parameters the network creates, computed without building it."""
        d, inner = self.emb_dim, self.num_heads * self.head_dim
        attention = 4 * d * inner
        mlp = len(self.mlp_activations) * d * self.mlp_dim + self.mlp_dim * d
        relpos = self.num_heads * self.relpos_num_buckets
        encoder = self.num_encoder_layers * (2 * d + attention + mlp) + relpos + d
        decoder = self.num_decoder_layers * (3 * d + 2 * attention + mlp) + relpos + d
        logits = 0 if self.logits_via_embedding else d * self.vocab_size
        return self.vocab_size * d + encoder + decoder + logits

    def encoder_param_count(self) -> int:
        """Parameters of the encoder alone (embedding included), as the heads use it."""
        d, inner = self.emb_dim, self.num_heads * self.head_dim
        mlp = len(self.mlp_activations) * d * self.mlp_dim + self.mlp_dim * d
        return (self.vocab_size * d + self.num_encoder_layers * (2 * d + 4 * d * inner + mlp)
                + self.num_heads * self.relpos_num_buckets + d)

    def build_vocabulary(self):
        """The seqio vocabulary this config names (imports seqio)."""
        return build_vocabulary(self.vocabulary)


def build_vocabulary(name: str):
    """Build a seqio vocabulary from a short name ('t5', 'mt5', 'byte') or a .model path."""
    from t5cli.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()  # seqio imports TensorFlow, whose start-up is chatty
    import seqio

    if name == "byte":
        return seqio.ByteVocabulary()
    path, extra_ids = VOCABULARIES.get(name, (name, 0))
    return seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)


# (emb, heads, enc layers, dec layers, head_dim, mlp)
_T5_1_0 = {
    "small": (512, 8, 6, 6, 64, 2048),
    "base": (768, 12, 12, 12, 64, 3072),
    "large": (1024, 16, 24, 24, 64, 4096),
    "3B": (1024, 32, 24, 24, 128, 16384),
    "11B": (1024, 128, 24, 24, 128, 65536),
}
_T5_1_1 = {  # also mT5's shapes
    "small": (512, 6, 8, 8, 64, 1024),
    "base": (768, 12, 12, 12, 64, 2048),
    "large": (1024, 16, 24, 24, 64, 2816),
    "xl": (2048, 32, 24, 24, 64, 5120),
    "xxl": (4096, 64, 24, 24, 64, 10240),
}
_BYT5 = {
    "small": (1472, 6, 12, 4, 64, 3584),
    "base": (1536, 12, 18, 6, 64, 3968),
    "large": (1536, 16, 36, 12, 64, 3840),
    "xl": (2560, 32, 36, 12, 64, 6720),
    "xxl": (4672, 64, 36, 12, 64, 12352),
}
_TINY = (64, 4, 2, 2, 16, 128)
_BYT5_TINY = (128, 4, 2, 2, 32, 256)
_FAMILIES = {
    # family: (sizes, vocab_size, vocabulary, activations, logits_via_embedding)
    "t5_1_0": (_T5_1_0, 32128, "t5", ("relu",), True),
    "t5_1_1": (_T5_1_1, 32128, "t5", ("gelu", "linear"), False),
    "mt5": (_T5_1_1, 250112, "mt5", ("gelu", "linear"), False),
    "byt5": (_BYT5, 384, "byte", ("gelu", "linear"), False),
}


def _make(family: str, size: str, dims) -> T5Config:
    _, vocab_size, vocabulary, acts, tied = _FAMILIES[family]
    emb, heads, enc, dec, head_dim, mlp = dims
    return T5Config(
        name=f"{family}_{size}", vocab_size=vocab_size, emb_dim=emb, num_heads=heads,
        num_encoder_layers=enc, num_decoder_layers=dec, head_dim=head_dim, mlp_dim=mlp,
        mlp_activations=acts, logits_via_embedding=tied, vocabulary=vocabulary,
        family=family, size=size,
    )


def _build() -> Dict[str, T5Config]:
    configs = {}
    for family, (sizes, *_rest) in _FAMILIES.items():
        for size, dims in sizes.items():
            cfg = _make(family, size, dims)
            configs[cfg.name] = cfg
        # Tiny models for tests and demos. The byte-level one trains from scratch in
        # minutes on CPU, so it is a little wider than the rest.
        tiny = _make(family, "tiny", _BYT5_TINY if family == "byt5" else _TINY)
        configs[tiny.name] = tiny
    return configs


CONFIGS: Dict[str, T5Config] = _build()


def get_config(name: str) -> T5Config:
    """The named config; unknown names raise UnknownNameError with close matches."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise UnknownNameError("model", name, CONFIGS) from None
