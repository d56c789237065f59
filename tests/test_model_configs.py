"""Named T5 configs: published sizes, analytic parameter counts, registration, gin files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from t5cli.errors import UnknownNameError
from t5cli.models.configs import CONFIGS, T5Config, get_config

GIN_DIR = Path(__file__).resolve().parents[1] / "t5cli" / "configs" / "models"

# Published parameter counts:
#  T5 1.0: Raffel et al. 2020, "Exploring the Limits of Transfer Learning..." (JMLR), Sec. 3.7:
#          Small 60M, Base 220M, Large 770M, 3B, 11B.
#  T5 1.1: google-research/text-to-text-transfer-transformer released_checkpoints.md and the
#          HF model cards: small 77M, base 248M, large 783M, XL 3B, XXL 11B.
#  mT5:    Xue et al. 2021, "mT5: A Massively Multilingual Pre-trained Text-to-Text
#          Transformer", Table 2: 300M, 580M, 1.2B, 3.7B, 13B.
#  ByT5:   Xue et al. 2022, "ByT5: Towards a Token-Free Future...", Table 1: 300M, 582M,
#          1.2B, 3.74B, 12.9B.
PUBLISHED = {
    "t5_1_0_small": 60e6, "t5_1_0_base": 220e6, "t5_1_0_large": 770e6,
    "t5_1_0_3B": 3e9, "t5_1_0_11B": 11e9,
    "t5_1_1_small": 77e6, "t5_1_1_base": 248e6, "t5_1_1_large": 783e6,
    "t5_1_1_xl": 3e9, "t5_1_1_xxl": 11e9,
    "mt5_small": 300e6, "mt5_base": 580e6, "mt5_large": 1.2e9, "mt5_xl": 3.7e9, "mt5_xxl": 13e9,
    "byt5_small": 300e6, "byt5_base": 582e6, "byt5_large": 1.2e9, "byt5_xl": 3.74e9,
    "byt5_xxl": 12.9e9,
}
# The papers round (T5 1.0 large is 737.7M exactly, published as "770M"), so allow 6%.
TOLERANCE = 0.06


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_sizes(name):
    count = get_config(name).param_count()
    assert abs(count - PUBLISHED[name]) / PUBLISHED[name] < TOLERANCE, (name, count)


def test_every_family_has_every_size_and_a_tiny():
    expected = {f"t5_1_0_{s}" for s in ("small", "base", "large", "3B", "11B")}
    for family in ("t5_1_1", "mt5", "byt5"):
        expected |= {f"{family}_{s}" for s in ("small", "base", "large", "xl", "xxl")}
    expected |= {f"{family}_tiny" for family in ("t5_1_0", "t5_1_1", "mt5", "byt5")}
    assert set(CONFIGS) == expected
    for name, cfg in CONFIGS.items():
        assert cfg.name == name


def test_family_conventions():
    assert get_config("t5_1_0_base").mlp_activations == ("relu",)
    assert get_config("t5_1_0_base").logits_via_embedding
    for name in ("t5_1_1_base", "mt5_base", "byt5_base"):
        cfg = get_config(name)
        assert cfg.mlp_activations == ("gelu", "linear") and not cfg.logits_via_embedding
    assert get_config("t5_1_1_small").vocab_size == 32128
    assert get_config("mt5_small").vocab_size == 250112
    byt5 = get_config("byt5_small")
    assert (byt5.vocab_size, byt5.vocabulary) == (384, "byte")
    assert (byt5.num_encoder_layers, byt5.num_decoder_layers) == (12, 4)
    tiny = get_config("byt5_tiny")
    assert tiny.vocab_size == 384 and tiny.param_count() < 2e6


@pytest.mark.parametrize("name,changes", [
    ("t5_1_0_tiny", {"vocab_size": 100}),
    ("t5_1_1_tiny", {"vocab_size": 100}),
    ("byt5_tiny", {"num_decoder_layers": 3}),
    ("t5_1_1_tiny", {"mlp_activations": ("silu", "linear", "linear"), "num_heads": 3}),
])
def test_param_count_matches_network(name, changes):
    import jax
    from jax.sharding import PartitionSpec

    from t5cli.models.model import EncoderDecoderModel

    cfg = get_config(name).replace(**changes)
    model = EncoderDecoderModel(cfg)
    shapes = model.param_shapes()
    assert sum(x.size for x in jax.tree_util.tree_leaves(shapes)) == cfg.param_count()
    # every parameter is float32 and carries one logical name per dimension
    axes = model.logical_axes()
    for shape, spec in zip(jax.tree_util.tree_leaves(shapes),
                           jax.tree_util.tree_leaves(axes, is_leaf=lambda x: isinstance(x, PartitionSpec))):
        assert str(shape.dtype) == "float32"
        assert len(spec) == len(shape.shape)
        assert set(spec) <= {"vocab", "embed", "joined_kv", "heads", "mlp", "relpos_buckets"}


def test_bfloat16_activations_keep_float32_params_and_logits():
    import jax
    import jax.numpy as jnp

    from t5cli.models.model import EncoderDecoderModel

    model = EncoderDecoderModel(get_config("t5_1_1_tiny").replace(vocab_size=50, dtype="bfloat16"))
    params = model.init_params(jax.random.PRNGKey(0))
    assert {str(x.dtype) for x in jax.tree_util.tree_leaves(params)} == {"float32"}
    tokens = jnp.array([[3, 4, 5, 1]], jnp.int32)
    batch = {"encoder_input_tokens": tokens, "decoder_input_tokens": tokens,
             "decoder_target_tokens": tokens}
    logits = model.compute_logits(params, batch)
    assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())


def test_replace_and_dict_roundtrip():
    cfg = get_config("t5_1_1_small")
    other = cfg.replace(dropout_rate=0.0)
    assert other.dropout_rate == 0.0 and cfg.dropout_rate == 0.1
    assert T5Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="dtype"):
        cfg.replace(dtype="float64")


def test_kernels_setting():
    """'auto' by default, kept through to_dict/from_dict, absent from older records, and
    checked with a message that lists the choices."""
    cfg = get_config("t5_1_1_small")
    assert cfg.kernels == "auto"
    plain = cfg.replace(kernels="plain")
    assert T5Config.from_dict(plain.to_dict()) == plain and plain.to_dict()["kernels"] == "plain"
    older = {k: v for k, v in cfg.to_dict().items() if k != "kernels"}
    assert T5Config.from_dict(older) == cfg
    with pytest.raises(ValueError, match="kernels must be one of 'auto', 'plain', 'cpu', not 'gpu'"):
        cfg.replace(kernels="gpu")


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError, match="t5_1_1_small"):
        get_config("t5_1_1_smal")


def test_plugin_registers_every_config():
    from t5cli.models import plugin

    seen = {}
    plugin.register_models(lambda name, factory, **kw: seen.setdefault(name, factory))
    assert set(seen) == set(CONFIGS)
    assert seen["mt5_base"]() == get_config("mt5_base")


def test_gin_file_per_config():
    files = {p.stem: p.read_text() for p in GIN_DIR.glob("*.gin")}
    assert set(files) == set(CONFIGS)
    for name, text in files.items():
        assert f"MODEL_NAME = '{name}'" in text


def test_listing_models_does_not_import_jax():
    code = ("import sys, t5cli.models, t5cli.models.configs, t5cli.models.plugin; "
            "t5cli.models.configs.get_config('t5_1_1_xxl').param_count(); "
            "bad = [m for m in ('jax', 'flax', 'seqio', 'tensorflow', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kernels", ["plain", "cpu"])
def test_dropout_keeps_the_expected_fraction_and_rescales(kernels):
    """Dropout on either kernel set's random bits: rate within sampling error, kept values
    scaled by 1/(1-rate), a fixed rng reproduces the mask, deterministic mode is the identity."""
    import jax
    import numpy as np

    from t5cli.models.network import Dropout

    x = np.ones((64, 1024), np.float32)
    layer = Dropout(0.1, kernels)
    rngs = {"dropout": jax.random.PRNGKey(0)}
    y = np.asarray(layer.apply({}, x, deterministic=False, rngs=rngs))
    dropped = float(np.mean(y == 0.0))
    assert abs(dropped - 0.1) < 0.005, dropped  # 65536 draws: sd ~0.0012
    np.testing.assert_allclose(y[y != 0.0], 1.0 / 0.9, rtol=1e-6)
    np.testing.assert_array_equal(y, layer.apply({}, x, deterministic=False, rngs=rngs))
    other = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
    assert not np.array_equal(y, np.asarray(other))
    np.testing.assert_array_equal(np.asarray(layer.apply({}, x, deterministic=True)), x)
    # two keys give independent masks: both keep an element ~0.9 * 0.9 of the time
    both_kept = float(np.mean((y != 0.0) & (np.asarray(other) != 0.0)))
    assert abs(both_kept - 0.81) < 0.006, both_kept
