"""Backend kernels: each cpu kernel equals its plain version, and the choice is made in one place."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5cli.models import kernels
from t5cli.models.kernels import cpu, plain

# (rtol, atol) per activation dtype; bfloat16 keeps 8 bits of mantissa
TOLERANCES = {"float32": (1e-5, 1e-5), "bfloat16": (2e-2, 2e-2)}
DTYPES = sorted(TOLERANCES)


def _normal(seed, shape, dtype="float32"):
    return jax.random.normal(jax.random.PRNGKey(seed), shape).astype(dtype)


def _assert_close(ours, ref, dtype):
    rtol, atol = TOLERANCES[dtype]
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(ref)):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                   rtol=rtol, atol=atol)


def _values_and_grads(fn, args, argnums, cotangent_seed=99):
    """``fn(*args)`` and the gradients of ``sum(fn(*args) * g)`` for a fixed random ``g``."""
    out = fn(*args)
    g = _normal(cotangent_seed, out.shape, out.dtype)
    grads = jax.jit(jax.grad(lambda *a: jnp.sum((fn(*a) * g).astype(jnp.float32)),
                             argnums=argnums))(*args)
    return out, grads


def _check_same(name, args, argnums, dtype, **kw):
    ours = _values_and_grads(lambda *a: getattr(cpu, name)(*a, **kw), args, argnums)
    ref = _values_and_grads(lambda *a: getattr(plain, name)(*a, **kw), args, argnums)
    _assert_close(ours, ref, dtype)


def test_every_kernel_set_provides_every_op_with_one_signature():
    for name in kernels.OPS:
        signatures = {tuple((p.name, p.default) for p in
                            inspect.signature(getattr(module, name)).parameters.values())
                      for module in (plain, cpu)}
        assert len(signatures) == 1, (name, signatures)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense(dtype):
    x, w = _normal(0, (3, 5, 16), dtype), _normal(1, (16, 8), dtype)
    _check_same("dense", (x, w), (0, 1), dtype)
    assert cpu.dense(x, w).dtype == plain.dense(x, w).dtype == jnp.dtype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("names", [("gelu", "linear"), ("relu",), ("silu", "linear", "linear")])
def test_gate(dtype, names):
    """The MLP's gated activation: the cpu kernel recomputes the activations in its
    backward pass instead of storing them; values and gradients stay the plain ones."""
    from t5cli.models.network import ACTIVATIONS

    functions = tuple(ACTIVATIONS[n] for n in names)
    hidden = tuple(_normal(i, (2, 7, 24), dtype) for i in range(len(names)))
    for module in (cpu, plain):
        out, grads = _values_and_grads(lambda *h: module.gate(h, functions), hidden,
                                       tuple(range(len(names))))
        if module is cpu:
            ours = (out, grads)
    _assert_close(ours, (out, grads), dtype)
    expected = np.prod([np.asarray(f(h), np.float32) for f, h in zip(functions, hidden)], axis=0)
    np.testing.assert_allclose(np.asarray(out, np.float32), expected, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_features(dtype):
    # as RMSNorm calls it: float32 normalised values, float32 scale
    x, scale = _normal(0, (3, 5, 16)), _normal(1, (16,))
    _check_same("scale_features", (x, scale), (0, 1), dtype)
    _check_same("scale_features", (x[0], scale), (0, 1), dtype)  # one leading axis


@pytest.mark.parametrize("bias_batch,shared", [(1, True), (4, False)])
def test_add_bias(bias_batch, shared):
    logits, bias = _normal(0, (4, 2, 3, 3)), _normal(1, (bias_batch, 2, 3, 3))
    _check_same("add_bias", (logits, bias), (0, 1), "float32", shared_by_batch=shared)


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_scores(dtype):
    query, key = _normal(0, (2, 5, 3, 4), dtype), _normal(1, (2, 7, 3, 4), dtype)
    _check_same("attention_scores", (query, key), (0, 1), dtype)
    assert cpu.attention_scores(query, key).dtype == jnp.float32


def _softmax_attention(query, key, value, mask, bias):
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    logits = logits + bias + jnp.where(mask, 0.0, -1e10)
    weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, value)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,query_length", [(4, 5), (3, 5), (4, 1), (1, 5)])
def test_attend_over_batch_parts(dtype, batch, query_length):
    """The cpu kernel runs an even batch in two halves (the shared bias goes to both), an odd
    batch or a one-query step whole; the result is the plain one's either way."""
    query = _normal(0, (batch, query_length, 2, 4), dtype)
    key, value = _normal(1, (batch, 6, 2, 4), dtype), _normal(2, (batch, 6, 2, 4), dtype)
    mask = jax.random.bernoulli(jax.random.PRNGKey(3), 0.8, (batch, 1, query_length, 6))
    bias = _normal(4, (1, 2, query_length, 6))
    calls = []

    def counted(*args):
        calls.append(args[0].shape[0])
        return _softmax_attention(*args)

    def run(module):
        return lambda q, k, v, b: module.attend(counted, q, k, v, mask, b)

    _assert_close(_values_and_grads(run(cpu), (query, key, value, bias), (0, 1, 2, 3)),
                  _values_and_grads(run(plain), (query, key, value, bias), (0, 1, 2, 3)), dtype)
    calls.clear()
    jax.eval_shape(run(cpu), query, key, value, bias)
    halves = batch % 2 == 0 and batch > 1 and query_length > 1
    assert calls == ([batch // 2] * 2 if halves else [batch])


def test_mean_over_axis_and_sum_leading_axes():
    x = _normal(0, (40, 6, 8))
    for axis in (0, 1, 2, -1):
        np.testing.assert_allclose(cpu.mean_over_axis(x, axis), plain.mean_over_axis(x, axis),
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cpu.mean_over_axis(x[:, 0, 0], 0), jnp.mean(x[:, 0, 0]), rtol=1e-5)
    np.testing.assert_allclose(cpu.sum_leading_axes(x, 2), jnp.sum(x, axis=(0, 1)), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("module", [plain, cpu], ids=["plain", "cpu"])
def test_random_bits_are_balanced_and_differ_per_key(module):
    """Each of the 32 bits is set half the time; typed and raw keys give the same bits."""
    bits = np.asarray(module.random_bits(jax.random.PRNGKey(3), (256, 256)))
    assert bits.dtype == np.uint32 and bits.shape == (256, 256)
    per_bit = ((bits[..., None] >> np.arange(32, dtype=np.uint32)) & 1).mean(axis=(0, 1))
    assert np.all(np.abs(per_bit - 0.5) < 0.01), per_bit  # 65536 draws: sd 0.002
    typed = np.asarray(module.random_bits(jax.random.key(3), (256, 256)))
    np.testing.assert_array_equal(bits, typed)
    other = np.asarray(module.random_bits(jax.random.PRNGKey(4), (256, 256)))
    assert np.mean(bits == other) < 1e-3


# ------------------------------------------------------------------------------ the choice
def test_auto_is_cpu_on_a_cpu_backend_and_follows_the_environment(monkeypatch):
    native = "cpu" if jax.default_backend() == "cpu" else "plain"
    assert kernels.resolve("auto", {}) == native
    assert kernels.resolve("auto", {"T5CLI_KERNELS": "auto"}) == native
    assert kernels.resolve("auto", {"T5CLI_KERNELS": "plain"}) == "plain"
    assert kernels.resolve("auto", {"T5CLI_KERNELS": "cpu"}) == "cpu"
    # an explicit choice is not overridden
    assert kernels.resolve("cpu", {"T5CLI_KERNELS": "plain"}) == "cpu"
    assert kernels.resolve("plain", {}) == "plain"
    monkeypatch.setenv("T5CLI_KERNELS", "plain")
    assert kernels.ops() is plain and kernels.ops("cpu") is cpu
    monkeypatch.setenv("T5CLI_KERNELS", "cpu")
    assert kernels.ops("auto") is cpu
    monkeypatch.setenv("T5CLI_KERNELS", "fast")
    with pytest.raises(ValueError, match="T5CLI_KERNELS"):
        kernels.ops()
    with pytest.raises(ValueError, match="'auto', 'plain', 'cpu'"):
        kernels.ops("gpu")


def test_the_network_is_plain_jax():
    """Backend tricks live in the kernel sets, not in the model."""
    from t5cli.models import network

    source = inspect.getsource(network)
    for trick in ("custom_vjp", "optimization_barrier", "default_backend", "concatenate"):
        assert trick not in source, trick


@pytest.mark.parametrize("dtype", [pytest.param(d, marks=pytest.mark.slow) if d == "bfloat16" else d
                                   for d in DTYPES])  # bfloat16 compiles ~25 s: slow
def test_model_gradients_agree_between_kernel_sets(dtype):
    """A whole T5 1.1 layout (even batch, so cpu attention runs in halves): logits and
    every parameter's gradient."""
    from t5cli.models.configs import get_config
    from t5cli.models.model import EncoderDecoderModel

    config = get_config("t5_1_1_tiny").replace(vocab_size=60, dtype=dtype, dropout_rate=0.0)
    params = EncoderDecoderModel(config).init_params(jax.random.PRNGKey(0))
    tokens = np.arange(2, 34, dtype=np.int32).reshape(2, 16) % 57 + 2
    tokens[1, 10:] = 0
    batch = {"encoder_input_tokens": tokens, "decoder_target_tokens": tokens,
             "decoder_input_tokens": np.pad(tokens[:, :-1], ((0, 0), (1, 0)))}

    def logits_and_grads(choice):
        model = EncoderDecoderModel(config.replace(kernels=choice))
        loss = lambda p: jnp.sum(jax.nn.log_softmax(model.compute_logits(p, batch))[..., 0])
        return jax.jit(model.compute_logits)(params, batch), jax.jit(jax.grad(loss))(params)

    (ours, ours_grads), (ref, ref_grads) = logits_and_grads("cpu"), logits_and_grads("plain")
    scale = float(np.abs(np.asarray(ref)).max())
    rtol, atol = TOLERANCES[dtype]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=atol * scale)
    for a, b in zip(jax.tree_util.tree_leaves(ours_grads), jax.tree_util.tree_leaves(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=0, atol=10 * atol * max(float(np.abs(b).max()), 1e-6))


def test_adafactor_updates_agree_between_kernel_sets():
    import optax

    from t5cli.runtime import optim

    params = {"kernel": _normal(0, (300, 200)), "scale": _normal(1, (200,)),
              "stack": _normal(2, (3, 160, 130))}
    grads = jax.tree_util.tree_map(lambda p: p * 0.1 + 0.01, params)

    def updates(choice):
        tx = optax.with_extra_args_support(optim.adafactor(kernels=choice))
        state = tx.init(params)
        for _ in range(2):
            out, state = jax.jit(tx.update)(grads, state, params)
        return out, state

    _assert_close(updates("cpu"), updates("plain"), "float32")
    with pytest.raises(ValueError, match="kernels"):
        optim.adafactor(kernels="gpu")


def test_lookup():
    """The token embedding: rows and the scatter-added gradient (repeated ids add up)."""
    table = _normal(0, (11, 6))
    ids = jnp.asarray([[3, 0, 3], [10, 3, 1]], jnp.int32)
    _check_same("lookup", (table, ids), (0,), "float32")
    grads = jax.grad(lambda t: jnp.sum(cpu.lookup(t, ids)))(table)
    np.testing.assert_allclose(np.asarray(grads)[:, 0], [1, 1, 0, 3, 0, 0, 0, 0, 0, 0, 1])
