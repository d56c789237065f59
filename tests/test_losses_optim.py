"""Unit tests of losses (z-loss, label smoothing, normalizers) and optim (masks, freezing,
gradient accumulation), against hand computations."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from t5cli.runtime import losses, optim
from t5cli.errors import ConfigError


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max()
    return x - (m + math.log(np.exp(x - m).sum()))


def test_cross_entropy_z_loss_and_smoothing_match_hand_computation():
    logits = np.array([[[2.0, 0.5, -1.0, 0.0]]], np.float32)
    targets = np.array([[1]])
    z, ls, V = 1e-4, 0.1, 4
    lp = _log_softmax(logits[0, 0])
    log_z = math.log(np.exp(logits[0, 0].astype(np.float64)).sum())
    # plain cross entropy + z-loss
    loss, zpart, correct = losses.token_losses(jnp.asarray(logits), jnp.asarray(targets), z_loss=z)
    assert float(zpart[0, 0]) == pytest.approx(z * log_z ** 2, rel=1e-5)
    assert float(loss[0, 0]) == pytest.approx(-lp[1] + z * log_z ** 2, rel=1e-5)
    assert not bool(correct[0, 0])
    # label smoothing: soft targets, minus their entropy (T5X), same as the one-hot path
    q = np.full(V, ls / (V - 1))
    q[1] = 1 - ls
    entropy = -(q * np.log(q)).sum()
    expected = -(q * lp).sum() - entropy
    loss_s, _, _ = losses.token_losses(jnp.asarray(logits), jnp.asarray(targets), label_smoothing=ls)
    assert float(loss_s[0, 0]) == pytest.approx(expected, rel=1e-5)
    soft, _ = losses.cross_entropy_with_logits(jnp.asarray(logits), jnp.asarray(q[None, None]))
    assert float(soft[0, 0]) - entropy == pytest.approx(expected, rel=1e-5)



@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_hand_written_gradient_equals_autodiff_of_the_soft_target_formula(label_smoothing):
    """token_losses' custom VJP against jax.grad of cross_entropy_with_logits (no custom rule),
    with cotangents on both outputs (the loss and the z-loss part a metric reads)."""
    rng = np.random.RandomState(3)
    logits = jnp.asarray(rng.randn(2, 3, 11).astype(np.float32) * 3)
    targets = jnp.asarray(rng.randint(0, 11, size=(2, 3)))
    w_loss, w_z = jnp.asarray(rng.rand(2, 3), jnp.float32), jnp.asarray(rng.rand(2, 3), jnp.float32)
    z = 1e-2  # large enough that a wrong z-loss gradient shows
    q = jax.nn.one_hot(targets, 11) * (1 - label_smoothing - label_smoothing / 10) + label_smoothing / 10

    def ours(x):
        loss, zpart, _ = losses.token_losses(x, targets, label_smoothing=label_smoothing, z_loss=z)
        return jnp.sum(loss * w_loss) + jnp.sum(zpart * w_z)

    def reference(x):
        loss, zpart = losses.cross_entropy_with_logits(x, q, z_loss=z)
        return jnp.sum(loss * w_loss) + jnp.sum(zpart * w_z)

    np.testing.assert_allclose(jax.grad(ours)(logits), jax.grad(reference)(logits), atol=1e-5)
    np.testing.assert_allclose(jax.jit(jax.grad(ours))(logits), jax.grad(reference)(logits), atol=1e-5)

def _batch():
    rng = np.random.RandomState(0)
    logits = rng.randn(2, 5, 7).astype(np.float32)
    targets = rng.randint(1, 7, size=(2, 5))
    weights = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    seg = np.array([[1, 1, 2, 0, 0], [1, 1, 1, 1, 1]])
    return logits, {"decoder_target_tokens": targets, "decoder_loss_weights": weights,
                    "decoder_segment_ids": seg}


@pytest.mark.parametrize("mode,expected_norm", [
    (None, 1.0), (100.0, 100.0), ("NUM_REAL_TARGET_TOKENS", 8.0),
    ("NUM_TOTAL_TARGET_TOKENS", 10.0), ("AVERAGE_PER_SEQUENCE", 3.0)])
def test_loss_normalizing_factor_modes(mode, expected_norm):
    logits, batch = _batch()
    sums = losses.loss_sums(jnp.asarray(logits), batch, loss_normalizing_factor=mode)
    assert float(losses.batch_normalizer(mode, sums)) == pytest.approx(expected_norm)
    per_token = np.asarray(losses.token_losses(jnp.asarray(logits), batch["decoder_target_tokens"])[0])
    if mode == "AVERAGE_PER_SEQUENCE":  # segments [2 tokens], [1 token], [5 tokens]
        expected = per_token[0, :2].mean() + per_token[0, 2] + per_token[1].mean()
    else:
        expected = (per_token * batch["decoder_loss_weights"]).sum()
    assert float(sums["loss"]) == pytest.approx(expected, rel=1e-5)
    assert float(sums["weight_sum"]) == 8.0


def test_bad_loss_normalizing_factor_is_a_config_error():
    with pytest.raises(ConfigError, match="LOSS_NORMALIZING_FACTOR"):
        losses.check_loss_normalizing_factor("TOKENS")
    assert losses.check_loss_normalizing_factor("num_real_target_tokens") == "NUM_REAL_TARGET_TOKENS"



@pytest.mark.parametrize("family,dtype,mode", [("t5_1_0", "float32", "AVERAGE_PER_SEQUENCE"),
                                               ("t5_1_1", "bfloat16", "NUM_REAL_TARGET_TOKENS")])
def test_chunked_loss_equals_the_loss_of_the_whole_logits(monkeypatch, family, dtype, mode):
    """``model.loss_sums`` (what training and eval call) takes the logits three chunks of
    positions at a time, with a gradient made in the forward pass; its sums and every
    parameter's gradient equal those of the whole logits, with dropout, label smoothing,
    z-loss and packed segments, for untied (T5 1.1) and tied (T5 1.0) output layers."""
    import dataclasses

    from t5cli.models.configs import get_config
    from t5cli.models.model import EncoderDecoderModel

    config = dataclasses.replace(get_config(f"{family}_tiny"), vocab_size=300, dtype=dtype, dropout_rate=0.1,
                                 num_encoder_layers=1, num_decoder_layers=1)
    model = EncoderDecoderModel(config)
    params = model.init_params(jax.random.PRNGKey(0))
    rng = np.random.RandomState(0)
    targets = rng.randint(2, 300, (4, 12))
    targets[:, -3:] = 0
    segments = np.where(np.arange(12) < 5, 1, 2)[None].repeat(4, 0) * (targets > 0)
    batch = {"encoder_input_tokens": jnp.asarray(rng.randint(2, 300, (4, 10))),
             "decoder_input_tokens": jnp.asarray(np.concatenate([np.zeros((4, 1), int), targets[:, :-1]], 1)),
             "decoder_target_tokens": jnp.asarray(targets),
             "decoder_segment_ids": jnp.asarray(segments)}
    args = dict(label_smoothing=0.1, z_loss=1e-4, loss_normalizing_factor=mode)
    dropout = jax.random.PRNGKey(1)
    monkeypatch.setattr(losses, "LOGITS_CHUNK_BYTES", 4 * 12 * 300 * 4 // 3)
    assert losses._num_chunks(12, 4 * 12 * 300 * 4, losses.LOGITS_CHUNK_BYTES) == 3

    def whole(p):
        sums = losses.loss_sums(model.compute_logits(p, batch, dropout), batch, **args)
        return sums["loss"], sums

    def chunked(p):
        sums = model.loss_sums(p, batch, dropout, **args)
        return sums["loss"], sums

    expected_grads, expected = jax.jit(jax.grad(whole, has_aux=True))(params)
    grads, sums = jax.jit(jax.grad(chunked, has_aux=True))(params)
    _, forward_only = jax.jit(chunked)(params)
    rtol = 1e-5 if dtype == "float32" else 2e-2
    assert set(sums) == set(expected)
    for key in expected:
        np.testing.assert_allclose(sums[key], expected[key], rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(forward_only[key], expected[key], rtol=1e-5, err_msg=key)
    assert float(sums["loss"]) > 0 and float(sums["weight_sum"]) == 36.0
    flat, flat_expected = jax.tree_util.tree_leaves_with_path(grads), jax.tree_util.tree_leaves(expected_grads)
    for (path, got), want in zip(flat, flat_expected):
        scale = float(jnp.max(jnp.abs(want)))
        assert scale > 0, path
        assert float(jnp.max(jnp.abs(got - want))) <= rtol * scale, jax.tree_util.keystr(path)


PARAMS = {
    "encoder": {"layers_0": {"mlp": {"wi": {"kernel": jnp.ones((4, 8))}},
                             "pre_mlp_layer_norm": {"scale": jnp.ones((4,))}},
                "relpos_bias": {"rel_embedding": jnp.ones((2, 32))}},
    "token_embedder": {"embedding": jnp.ones((16, 4))},
}


def test_adamw_decay_mask_skips_norm_scales_and_relative_bias():
    mask = optim.decay_mask(PARAMS)
    assert mask["encoder"]["layers_0"]["mlp"]["wi"]["kernel"] is True
    assert mask["encoder"]["layers_0"]["pre_mlp_layer_norm"]["scale"] is False
    assert mask["encoder"]["relpos_bias"]["rel_embedding"] is False
    assert mask["token_embedder"]["embedding"] is True
    # zero gradients: only decayed parameters move, by lr * wd * p
    tx = optim.adamw(weight_decay=0.1)
    state = tx.init(PARAMS)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zeros, state, PARAMS, learning_rate=0.5)
    assert float(updates["encoder"]["layers_0"]["mlp"]["wi"]["kernel"][0, 0]) == pytest.approx(-0.05)
    assert float(updates["encoder"]["layers_0"]["pre_mlp_layer_norm"]["scale"][0]) == 0.0


def test_freeze_by_regex_and_typo_is_an_error():
    tx = optax.with_extra_args_support(optim.freeze(optim.adafactor(), ["token_embedder"], PARAMS))
    state = tx.init(PARAMS)
    grads = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
    updates, _ = tx.update(grads, state, PARAMS, learning_rate=1e-2)
    assert float(jnp.abs(updates["token_embedder"]["embedding"]).sum()) == 0.0
    assert float(jnp.abs(updates["encoder"]["layers_0"]["mlp"]["wi"]["kernel"]).sum()) > 0.0
    with pytest.raises(ConfigError, match="matches no parameter"):
        optim.freeze(optim.adafactor(), ["token_embeder"], PARAMS)


def _optax_adafactor(momentum=None, weight_decay_rate=None):
    """optax's own Adafactor pieces, chained the way T5X orders them."""
    parts = [optax.scale_by_factored_rms(True, 0.8, 0, 128, 1e-30), optax.clip_by_block_rms(1.0),
             optim.scale_by_learning_rate_arg(), optax.scale_by_param_block_rms()]
    if momentum is not None:
        parts.append(optax.ema(momentum, debias=False))
    if weight_decay_rate is not None:
        parts.append(optax.add_decayed_weights(weight_decay_rate))
    return optax.chain(*parts, optax.scale(-1.0))


@pytest.mark.parametrize("extra", [{}, {"momentum": 0.9, "weight_decay_rate": 1e-3}])
def test_fused_adafactor_matches_optax_chain(extra):
    """Factored (2-D, 3-D), unfactored (a dim < 128) and vector parameters, five steps."""
    rng = np.random.RandomState(0)
    shapes = {"emb": (300, 160), "qkv": (160, 4, 136), "small": (160, 40), "scale": (160,)}
    params = {k: jnp.asarray(rng.randn(*s).astype(np.float32) * 0.05) for k, s in shapes.items()}
    params["scale"] = params["scale"] * 1e-4  # below the 1e-3 floor of the parameter scale
    ours = optax.with_extra_args_support(optim.adafactor(**extra))
    ref = optax.with_extra_args_support(_optax_adafactor(**extra))
    p_ours, s_ours = params, ours.init(params)
    p_ref, s_ref = params, ref.init(params)
    assert jax.tree_util.tree_structure(s_ours[0]) == jax.tree_util.tree_structure(s_ref[0])
    for step in range(5):
        grads = {k: jnp.asarray(rng.randn(*s).astype(np.float32) * 10.0 ** (step - 2))
                 for k, s in shapes.items()}
        u, s_ours = jax.jit(ours.update)(grads, s_ours, p_ours, learning_rate=1e-2)
        p_ours = optax.apply_updates(p_ours, u)
        u, s_ref = jax.jit(ref.update)(grads, s_ref, p_ref, learning_rate=1e-2)
        p_ref = optax.apply_updates(p_ref, u)
    for k in shapes:
        np.testing.assert_allclose(np.asarray(p_ours[k]), np.asarray(p_ref[k]), rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree_util.tree_leaves(s_ours[0]), jax.tree_util.tree_leaves(s_ref[0])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5)
    assert not np.allclose(np.asarray(p_ours["emb"]), np.asarray(params["emb"]))


def test_learning_rate_comes_from_update_argument():
    tx = optim.adafactor(multiply_by_parameter_scale=False, clipping_threshold=None)
    p = {"w": jnp.ones((3,))}
    st = tx.init(p)
    u1, _ = tx.update({"w": jnp.ones((3,))}, st, p, learning_rate=1.0)
    u2, _ = tx.update({"w": jnp.ones((3,))}, st, p, learning_rate=0.25)
    np.testing.assert_allclose(np.asarray(u2["w"]), np.asarray(u1["w"]) * 0.25, rtol=1e-6)


def test_gradient_accumulation_equals_full_batch():
    rng = np.random.RandomState(1)
    w = {"w": jnp.asarray(rng.randn(3, 5).astype(np.float32))}
    batch = {"x": jnp.asarray(rng.randn(8, 3).astype(np.float32)),
             "y": jnp.asarray(rng.randint(0, 5, size=(8,)))}

    def grad_fn(params, b, rng_):
        def f(p):
            logits = b["x"] @ p["w"]
            loss = jnp.sum(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, b["y"][:, None], -1)[:, 0])
            return loss, {"loss": loss, "n": jnp.asarray(b["y"].shape[0], jnp.float32)}
        g, sums = jax.grad(f, has_aux=True)(params)
        return g, sums

    full = optim.accumulate_gradients(grad_fn, w, batch, None)
    micro = optim.accumulate_gradients(grad_fn, w, batch, 4)
    np.testing.assert_allclose(np.asarray(micro.grads["w"]), np.asarray(full.grads["w"]), rtol=1e-5, atol=1e-6)
    assert float(micro.sums["loss"]) == pytest.approx(float(full.sums["loss"]), rel=1e-5)
    assert float(micro.sums["n"]) == 8.0


def test_schedules():
    assert float(optim.constant_schedule(1e-3)(12345)) == pytest.approx(1e-3)
    rs = optim.rsqrt_schedule(1.0, 10_000)
    assert float(rs(0)) == pytest.approx(0.01) and float(rs(40_000)) == pytest.approx(0.005)
    lin = optim.linear_schedule(1.0, warmup_steps=10, decay_steps=110)
    assert float(lin(4)) == pytest.approx(0.5) and float(lin(60)) == pytest.approx(0.5)
    cos = optim.cosine_schedule(1.0, 0, 100, alpha=0.1)
    assert float(cos(100)) == pytest.approx(0.1) and float(cos(0)) == pytest.approx(1.0)
