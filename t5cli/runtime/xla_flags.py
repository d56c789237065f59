"""XLA settings t5cli applies to training on CPU before JAX starts a backend.

XLA reads ``XLA_FLAGS`` once, when the first backend is created, so ``train()`` (and so
``t5 train``) adds these to the environment before its first JAX computation; in a
process whose backend already exists they cannot apply and are left out. A flag the user
has already put in ``XLA_FLAGS`` is left as the user set it; ``T5CLI_XLA_DEFAULTS=0``
turns the defaults off altogether. All of them are about XLA's CPU backend, so they are
only added when JAX will run on the CPU (:func:`platform_is_cpu`).

- ``--xla_cpu_experimental_ynn_fusion_type=dot``: on CPU, hand only matrix products to
  YNNPACK and leave element-wise work to XLA's own fused loops. Measured on a 2-core
  AVX-512 CPU, a T5 1.1 small training step (batch 8 x 128/128, float32) takes ~12% less
  time than with XLA's default fusion types (``bench/bench_train.py``), while incremental
  decoding, made of small products, is ~10% slower with it: hence training only. With
  bfloat16 activations it is left out: XLA's default path runs bfloat16 products about
  twice as fast as float32 ones on such a CPU, and the flag loses that. The flag exists
  from jaxlib 0.10 on; older versions would reject it, so it is only added there.
- ``--xla_cpu_copy_insertion_use_region_analysis=true``: without it XLA copies every
  donated parameter at the start of a training step (one per weight matrix: 144 for T5 1.1
  small) so that the optimizer can write the new value in place; the finer analysis sees
  that every read of the old value comes first and drops the copies, whatever the
  activation dtype.
- ``--xla_disable_hlo_passes=tree_reduction_rewriter``: on CPU XLA splits every reduction
  over more than 32 elements into a reduce-window and a second reduce, and the first stage
  cannot take in what it reduces, so ``sum(g * g)`` writes ``g * g`` to memory first. In
  Adafactor that is three full-size temporaries per weight matrix: its update over T5 1.1
  small's parameters took 270 ms alone with the pass and 149 ms without it (2-core
  AVX-512 CPU), and the softmax and loss reductions lose the same extra pass. t5cli's own
  large sums (Adafactor's mean squares) are written as a sum of row sums, which keeps their
  float32 accuracy without the pass.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from importlib import metadata
from typing import Dict

#: flag -> (value, minimum jaxlib version, activation dtypes it is for; None: every dtype)
DEFAULTS: Dict[str, tuple] = {
    "--xla_cpu_experimental_ynn_fusion_type": ("dot", (0, 10), ("float32",)),
    "--xla_cpu_copy_insertion_use_region_analysis": ("true", (0, 10), None),
    "--xla_disable_hlo_passes": ("tree_reduction_rewriter", (0, 10), None),
}


def _jaxlib_version() -> tuple:
    try:
        text = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return (0,)
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


#: modules of PJRT plugins that give JAX a GPU or TPU backend (besides the ``jax_plugins``
#: namespace and entry points, which every PJRT plugin uses)
ACCELERATOR_MODULES = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                       "jax_rocm7_plugin", "libtpu")


def _requested_platforms(environ) -> str:
    requested = environ.get("JAX_PLATFORMS")
    if environ is os.environ and "jax" in sys.modules:
        # jax reads JAX_PLATFORMS at import; jax.config.update may have changed it since
        import jax

        requested = jax.config.jax_platforms
    # the older spelling, which jax 0.10 still honours
    return (requested or environ.get("JAX_PLATFORM_NAME") or "").strip().lower()


def _accelerator_plugin_installed() -> bool:
    if any(True for _ in metadata.entry_points(group="jax_plugins")):
        return True
    namespace = importlib.util.find_spec("jax_plugins")
    if namespace is not None and list(namespace.submodule_search_locations or ()):
        import pkgutil

        if any(True for _ in pkgutil.iter_modules(namespace.submodule_search_locations)):
            return True
    return any(importlib.util.find_spec(name) is not None for name in ACCELERATOR_MODULES)


def platform_is_cpu(environ=os.environ) -> bool:
    """Whether JAX's default backend will be the CPU, decided without starting one.

    ``JAX_PLATFORMS`` (or, once jax is imported, ``jax.config.jax_platforms``) names it
    when set: its first entry is the default. Otherwise JAX prefers a GPU or TPU when a
    PJRT plugin for one is installed, so any such plugin counts as "not CPU", even on a
    machine where it would find no device; set ``JAX_PLATFORMS=cpu`` there.
    """
    requested = _requested_platforms(environ)
    if requested:
        return requested.split(",")[0].strip() == "cpu"
    return not _accelerator_plugin_installed()


def _backend_started() -> bool:
    """Whether this process has already created a JAX backend (so XLA_FLAGS is read).

    Without jax imported, none has. JAX has no public "backends are initialized" call (it
    keeps one in a private module), so this reads the cache of the public
    ``jax.extend.backend.get_backend``, through which computations and device queries
    reach their backend (only a direct ``jax.extend.backend.backends()`` call bypasses
    it): a non-empty cache means one exists. Should a JAX version drop that cache, the
    answer is "not started": flags that then arrive too late change nothing in this
    process, the harmless way to be wrong.
    """
    if "jax" not in sys.modules:
        return False
    try:
        from jax.extend.backend import get_backend

        return get_backend.cache_info().currsize > 0
    except (ImportError, AttributeError):
        return False


def apply_defaults(environ=os.environ, activation_dtype: str = "float32") -> str:
    """Add t5cli's XLA defaults for training with ``activation_dtype`` to
    ``environ['XLA_FLAGS']`` when JAX will run on the CPU; returns the resulting value."""
    current = environ.get("XLA_FLAGS", "")
    if environ.get("T5CLI_XLA_DEFAULTS", "1") == "0" or not platform_is_cpu(environ):
        return current
    if environ is os.environ and _backend_started():
        return current
    version = _jaxlib_version()
    added = [f"{flag}={value}" for flag, (value, since, dtypes) in DEFAULTS.items()
             if flag not in current and version >= since
             and (dtypes is None or str(activation_dtype) in dtypes)]
    if added:
        environ["XLA_FLAGS"] = " ".join([current] + added).strip()
    return environ.get("XLA_FLAGS", "")
