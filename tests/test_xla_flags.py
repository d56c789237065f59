"""t5cli's XLA defaults: added once, never over a user's own setting, and switchable off."""

from __future__ import annotations

import os
import subprocess
import sys

from t5cli import xla_flags

FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def test_defaults_are_added_next_to_the_users_flags():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    value = xla_flags.apply_defaults(env)
    assert value == f"--xla_force_host_platform_device_count=4 {FLAG}=dot"
    assert xla_flags.apply_defaults(env) == value  # idempotent


def test_a_flag_the_user_set_wins_and_the_defaults_can_be_turned_off():
    env = {"XLA_FLAGS": f"{FLAG}=individual_dot"}
    assert xla_flags.apply_defaults(env) == f"{FLAG}=individual_dot"
    assert xla_flags.apply_defaults({"T5CLI_XLA_DEFAULTS": "0"}) == ""


def test_jax_starts_with_the_defaults_in_a_fresh_process():
    """What train() does first: the flags reach XLA, which accepts them."""
    code = ("import os; from t5cli import xla_flags; xla_flags.apply_defaults(); "
            "import jax, jax.numpy as jnp; "
            "print(float(jnp.dot(jnp.ones((4, 4)), jnp.ones(4)).sum()), os.environ['XLA_FLAGS'])")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "T5CLI_XLA_DEFAULTS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env)
    assert out.stdout.split() == ["16.0", f"{FLAG}=dot"]


def test_bfloat16_training_keeps_xla_default_dot_path():
    """The YNNPACK dot-only flag halves bfloat16 matmul speed on CPU: float32 runs only."""
    assert xla_flags.apply_defaults({}, activation_dtype="bfloat16") == ""
    assert xla_flags.apply_defaults({}, activation_dtype="float32") == f"{FLAG}=dot"
