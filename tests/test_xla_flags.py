"""t5cli's XLA defaults: added once, on CPU only, never over a user's own setting, and
switchable off."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

from t5cli.runtime import xla_flags

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
COPIES = "--xla_cpu_copy_insertion_use_region_analysis=true"
TREE = "--xla_disable_hlo_passes=tree_reduction_rewriter"
CPU = {"JAX_PLATFORMS": "cpu"}  # so these tests mean the same on a machine with a GPU


def _cpu_environ():
    """This process's environment for a CPU subprocess, without XLA settings of ours."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "T5CLI_XLA_DEFAULTS")}
    return {**env, **CPU}


def test_defaults_are_added_next_to_the_users_flags():
    env = {**CPU, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    value = xla_flags.apply_defaults(env)
    assert value == f"--xla_force_host_platform_device_count=4 {FLAG}=dot {COPIES} {TREE}"
    assert xla_flags.apply_defaults(env) == value  # idempotent


def test_a_flag_the_user_set_wins_and_the_defaults_can_be_turned_off():
    env = {**CPU, "XLA_FLAGS": f"{FLAG}=individual_dot"}
    assert xla_flags.apply_defaults(env) == f"{FLAG}=individual_dot {COPIES} {TREE}"
    assert xla_flags.apply_defaults({**CPU, "T5CLI_XLA_DEFAULTS": "0"}) == ""


def test_jax_starts_with_the_defaults_in_a_fresh_process():
    """What train() does first: the flags reach XLA, which accepts them."""
    code = ("import os; from t5cli.runtime import xla_flags; xla_flags.apply_defaults(); "
            "import jax, jax.numpy as jnp; "
            "print(float(jnp.dot(jnp.ones((4, 4)), jnp.ones(4)).sum()), os.environ['XLA_FLAGS'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=_cpu_environ())
    assert out.stdout.split() == ["16.0", f"{FLAG}=dot", COPIES, TREE]


def test_bfloat16_training_keeps_xla_default_dot_path():
    """The YNNPACK dot-only flag halves bfloat16 matmul speed on CPU: float32 runs only."""
    assert xla_flags.apply_defaults(dict(CPU), activation_dtype="bfloat16") == f"{COPIES} {TREE}"
    assert xla_flags.apply_defaults(dict(CPU), activation_dtype="float32") == f"{FLAG}=dot {COPIES} {TREE}"


@pytest.mark.parametrize("platforms", ["cuda", "tpu", "gpu,cpu", "CUDA"])
def test_nothing_is_added_when_jax_will_not_run_on_the_cpu(platforms):
    env = {"JAX_PLATFORMS": platforms, "XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    assert xla_flags.apply_defaults(env) == "--xla_dump_to=/tmp/x"
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x"
    assert not xla_flags.platform_is_cpu(env)
    assert xla_flags.platform_is_cpu({"JAX_PLATFORMS": "cpu,cuda"})
    assert not xla_flags.platform_is_cpu({"JAX_PLATFORM_NAME": "tpu"})


def test_an_installed_accelerator_plugin_means_not_cpu(tmp_path, monkeypatch):
    """Without JAX_PLATFORMS, JAX prefers a GPU or TPU whose PJRT plugin is installed."""
    for name in ("jax_cuda12_plugin", "libtpu"):
        if xla_flags._accelerator_plugin_installed():
            pytest.skip("an accelerator plugin is installed here")
        package = tmp_path / name / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("raise ImportError('never imported')\n")
        with monkeypatch.context() as patch:
            patch.syspath_prepend(str(package.parent))
            assert not xla_flags.platform_is_cpu({})
            assert xla_flags.apply_defaults({}) == ""
            assert xla_flags.platform_is_cpu(dict(CPU))  # an explicit choice wins
        assert xla_flags.platform_is_cpu({})


def test_backend_started_uses_no_private_jax_attribute():
    """It is False before jax is imported and before the first computation, True after."""
    assert "jax._src" not in inspect.getsource(xla_flags)
    code = ("import sys; from t5cli.runtime import xla_flags as x; a = x._backend_started(); "
            "import jax, jax.numpy as jnp; b = x._backend_started(); "
            "jnp.ones(2).block_until_ready(); print(a, b, x._backend_started())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=_cpu_environ())
    assert out.stdout.split() == ["False", "False", "True"]


_TINY_TRAIN_STEP = """
import re, sys
import numpy as np
from t5cli.runtime import xla_flags
if sys.argv[1] == "defaults":
    xla_flags.apply_defaults()
import jax, jax.numpy as jnp, optax
from t5cli.runtime import optim
from t5cli.models.configs import get_config
from t5cli.models.model import EncoderDecoderModel
from t5cli.runtime.steps import make_train_step
model = EncoderDecoderModel(get_config("t5_1_1_tiny").replace(dropout_rate=0.1))
tx = optax.with_extra_args_support(optim.adafactor())
params = model.init_params(jax.random.PRNGKey(0))
state = {"params": params, "opt_state": tx.init(params), "step": jnp.asarray(0, jnp.int32)}
tokens = np.arange(2, 34, dtype=np.int32).reshape(2, 16)
batch = {"encoder_input_tokens": tokens, "decoder_target_tokens": tokens,
         "decoder_input_tokens": np.pad(tokens[:, :-1], ((0, 0), (1, 0))),
         "decoder_loss_weights": np.ones((2, 16), np.float32)}
step = jax.jit(make_train_step(model, tx, optim.constant_schedule(1e-3), use_dropout=True),
               donate_argnums=(0,))
hlo = step.lower(state, batch, jax.random.PRNGKey(1)).compile().as_text()
losses = []
for _ in range(3):
    state, metrics = step(state, batch, jax.random.PRNGKey(1))
    losses.append(float(metrics["loss"]))
total = sum(float(np.abs(np.asarray(x, np.float64)).sum()) for x in jax.tree_util.tree_leaves(state))
print(len(re.findall(r"copy\\(%state", hlo)), hlo.count("reduce-window("), *losses, total)
"""


def _compile_tiny_train_step():
    """{mode: (parameter copies, reduce-windows, three losses, |state| sum)} for a t5_1_1_tiny
    train step compiled with t5cli's XLA defaults and with XLA's own."""
    env = _cpu_environ()
    result = {}
    for mode in ("defaults", "xla-alone"):
        out = subprocess.run([sys.executable, "-c", _TINY_TRAIN_STEP, mode], capture_output=True,
                             text=True, check=True, env=env)
        copies, windows, *numbers = out.stdout.split()[-6:]
        result[mode] = (int(copies), int(windows), [float(x) for x in numbers[:3]], float(numbers[3]))
    return result


@pytest.mark.slow  # compiles T5 1.1 small's train step and reads its HLO (~20-35 s)
def test_the_defaults_drop_parameter_copies_and_reduce_windows_but_not_accuracy():
    """Donated parameters are updated in place (no copy per matrix), reductions are no longer
    split through reduce-windows, and three training steps give the same numbers."""
    result = _compile_tiny_train_step()
    copies, windows, losses, total = result["defaults"]
    xla_copies, xla_windows, xla_losses, xla_total = result["xla-alone"]
    assert xla_copies > 20  # one per matrix of the tiny model
    assert copies == 0
    assert xla_windows > 20  # softmax, loss and Adafactor sums
    assert windows == 0
    np.testing.assert_allclose(losses, xla_losses, rtol=1e-5)
    np.testing.assert_allclose(total, xla_total, rtol=1e-6)
